"""examples/resnet18_tiny.py: the Tiny-ImageNet-shaped ResNet-18 (random weights) passes the
ONNX checker and runs in onnxruntime at both widths, and a stage cut out by ``stage_model``
computes the same tensor as that stage inside the full model."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def _load_module():
    spec = importlib.util.spec_from_file_location("resnet18_tiny", EXAMPLES / "resnet18_tiny.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


resnet = _load_module()


def _run(model: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, feeds)


def _image(seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((1, 3, 64, 64)).astype(np.float32)


@pytest.mark.parametrize("width", [64, 8])
def test_full_model_checks_and_runs(width: int) -> None:
    model = resnet.resnet18_tiny(width=width)
    onnx.checker.check_model(model, full_check=True)
    assert [o.name for o in model.graph.output] == ["logits"]
    assert not any(n.op_type in ("BatchNormalization", "MaxPool") for n in model.graph.node)
    (logits,) = _run(model, {"input": _image()})
    assert logits.shape == (1, 200) and logits.dtype == np.float32
    assert np.all(np.isfinite(logits))
    if width == 64:
        assert resnet.parameter_count(model) == 11_266_632


def test_seed_determines_the_weights() -> None:
    a, b = resnet.resnet18_tiny(width=8), resnet.resnet18_tiny(width=8)
    c = resnet.resnet18_tiny(width=8, seed=1)
    assert a.SerializeToString() == b.SerializeToString() != c.SerializeToString()


def test_stage_model_matches_the_full_model() -> None:
    full = resnet.resnet18_tiny(width=8)
    entering, leaving = resnet.stage_tensors(4)
    assert (entering, leaving) == ("stage3.output", "stage4.output")
    stage = resnet.stage_model(full, 4)
    assert [i.name for i in stage.graph.input] == [entering]
    assert [o.name for o in stage.graph.output] == [leaving]
    dims = [d.dim_value for d in stage.graph.input[0].type.tensor_type.shape.dim]
    assert dims == [1, 32, 8, 8]

    probed = onnx.ModelProto()
    probed.CopyFrom(full)
    for name in (entering, leaving):
        probed.graph.output.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, None))
    _, stage_in, stage_out = _run(probed, {"input": _image()})
    (got,) = _run(stage, {entering: stage_in})
    assert got.shape == stage_out.shape == (1, 64, 4, 4)
    np.testing.assert_allclose(got, stage_out, rtol=0, atol=1e-5)


def test_stage_names_and_cli(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        resnet.stage_tensors(5)
    out = tmp_path / "r18.onnx"
    assert resnet.main(["-o", str(out), "--width", "8", "--classes", "10", "--seed", "3"]) == 0
    model = onnx.load(out)
    assert [d.dim_value for d in model.graph.output[0].type.tensor_type.shape.dim] == [1, 10]
    assert model.SerializeToString() == resnet.resnet18_tiny(
        seed=3, width=8, classes=10).SerializeToString()


def stage_inputs(module, full: onnx.ModelProto, stage: int, count: int, seed: int) -> np.ndarray:
    """What enters ``stage`` in the full network on random images."""
    entering, _ = module.stage_tensors(stage)
    probe = onnx.ModelProto()
    probe.CopyFrom(full)
    probe.graph.output.append(helper.make_tensor_value_info(entering, TensorProto.FLOAT, None))
    session = ort.InferenceSession(probe.SerializeToString())
    images = np.random.default_rng(seed).normal(size=(count, 3, 64, 64)).astype(np.float32)
    return np.concatenate([session.run([entering], {"input": images[i:i + 1]})[0]
                           for i in range(count)])


def test_a_stage_encrypted_over_several_ciphertexts():
    """Stage 4 of a narrow ResNet-18 (32×8×8 in, a strided block with a 1×1 shortcut, then a
    plain block) over 256-slot ciphertexts at the insecure test ring: 8 ciphertexts in,
    decrypted equal to the slot-level model (the full-width stage: bench/multi_ciphertext.py)."""
    import picompile
    from picompile.runtime.ckks import CkksBackend
    from picompile.runtime.plain import PlainBackend

    full = resnet.resnet18_tiny(width=8)
    model = resnet.stage_model(full, 4)
    calib = stage_inputs(resnet, full, 4, 8, seed=0)
    plan = picompile.compile(model, calib=calib, degree=3, insecure_test_params=True, slots=256)
    assert plan.layout.ciphertexts == 8
    x = stage_inputs(resnet, full, 4, 1, seed=1)
    name = plan.inputs[0].name
    output = plan.outputs[0].name
    encrypted = CkksBackend().execute(plan, {name: x}).server_outputs[output]
    modelled = PlainBackend(slot_level=True).execute(plan, {name: x}).server_outputs[output]
    np.testing.assert_allclose(encrypted, modelled, atol=1e-6)


@pytest.mark.slow
def test_full_network_compiles_at_128_bit():
    """The 3×64×64 network compiles to a runnable 128-bit plan whose first stage spans 4
    ciphertexts, with a predicted latency, rotation-key count and server memory (about 35 s,
    3 GB)."""
    import picompile

    images = np.random.default_rng(0).normal(size=(8, 3, 64, 64)).astype(np.float32)
    plan = picompile.compile(resnet.resnet18_tiny(), calib=images, degree=3)
    assert plan.ckks.runnable and plan.ckks.ring_dimension == 1 << 16
    assert plan.layout.ciphertexts == 4
    cost = plan.analysis["cost"]
    assert cost["predicted_seconds"] > 0 and cost["rotation_keys"] > 0
    assert cost["predicted_server_memory_bytes"]["total"] > 1 << 30
