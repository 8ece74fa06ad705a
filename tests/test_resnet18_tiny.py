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
