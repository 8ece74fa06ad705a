"""End to end: the fine-tuned degree-2 Fashion-MNIST ResNet-20 (``picompile finetune --method
quad --degree 2``, committed as ``examples/resnet20_fashion_quad2.onnx``) compiles for both
protocols, its polynomials kept exactly, and runs encrypted with the top-1 of onnxruntime.

All three are slow tests (``make test-all``): the compiles take minutes; the encrypted runs are
the hybrid protocol with Flash quadratics on 5 test images (9 fused into the next convolution,
the 10 after residual additions standalone: no dealer) and CKKS at 128-bit on
``PICOMPILE_RESNET_IMAGES`` images (default 1).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

import picompile
from picompile.runtime import run_plan

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
MODEL = EXAMPLES / "resnet20_fashion_quad2.onnx"


@pytest.fixture(scope="module")
def fashion_data() -> dict[str, np.ndarray]:
    sys.path.insert(0, str(EXAMPLES))
    import fashion

    subset = fashion.load_subset()
    return {"calib": fashion.to_model_input(subset["calib_images"], "img32x3"),
            "test": fashion.to_model_input(subset["test_images"][:5], "img32x3")}


def _onnxruntime(x: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(str(MODEL), providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: x.astype(np.float32)})[0]


@pytest.mark.slow  # two ResNet-20 compiles with calibration: ~3 minutes
def test_finetuned_resnet_compiles_for_both_protocols(fashion_data) -> None:
    """Every activation is the exported quadratic (no second fit); the plain run equals
    onnxruntime; the FHE plan is runnable at 128-bit and the hybrid plan fuses Flash quadratics."""
    calib = {"input": fashion_data["calib"]}
    fhe = picompile.compile(MODEL, calib=calib)
    polynomials = [s for s in fhe.steps if s.op == "Polynomial"]
    assert not [s for s in fhe.steps if s.op == "Relu"]
    assert all(s.attrs["method"] == "onnx" for s in polynomials)
    assert fhe.ckks.runnable and not fhe.ckks.insecure
    hybrid = picompile.compile(MODEL, calib=calib, protocol="hybrid", quadratic_protocol="flash")
    polynomials = [s for s in hybrid.steps if s.op == "Polynomial"]
    assert {s.hybrid.protocol for s in polynomials} == {"flash_quadratic"}
    assert sum(1 for s in polynomials if s.hybrid.fused_into) == 9
    assert hybrid.dealer_steps() == []
    x = fashion_data["test"]
    np.testing.assert_allclose(next(iter(picompile.run(hybrid, x, slot_level=False).values())),
                               _onnxruntime(x), atol=1e-3, rtol=0)


@pytest.mark.slow
def test_finetuned_resnet_hybrid_flash_on_5_images(fashion_data) -> None:
    calib = {"input": fashion_data["calib"]}
    plan = picompile.compile(MODEL, calib=calib, protocol="hybrid", quadratic_protocol="flash")
    assert plan.dealer_steps() == []   # two parties only
    x = fashion_data["test"]
    result = run_plan(plan, x, backend="hybrid")   # one session (keys once), 5 inferences
    assert result.communication["dealer_bytes"] == 0
    np.testing.assert_array_equal(np.argmax(result.server_outputs[plan.outputs[0].name], 1),
                                  np.argmax(_onnxruntime(x), 1))


@pytest.mark.slow
def test_finetuned_resnet_fhe_128_bit(fashion_data) -> None:
    count = int(os.environ.get("PICOMPILE_RESNET_IMAGES", "1"))
    plan = picompile.compile(MODEL, calib={"input": fashion_data["calib"]})
    x = fashion_data["test"][:count]
    encrypted = run_plan(plan, x, backend="ckks")
    np.testing.assert_array_equal(np.argmax(encrypted.outputs[plan.outputs[0].name], 1),
                                  np.argmax(_onnxruntime(x), 1))
