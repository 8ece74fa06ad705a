"""The classic model zoo (the onnx wheel's ``backend/test/data/light`` models) through picompile.

Reads: ``light_*.onnx`` (opset 9; weights made by ConstantOfShape nodes, initializers listed as
graph inputs). Writes: nothing.
Every model must compile (plain backend, no ``--calib``) and ``picompile.run`` must equal
onnxruntime on a seeded random input — on the model's output and on the encrypted part's output
(the logits before the client's Softmax) — or, for a model listed in ``REFUSED``, fail with a
one-line picompile error naming the op. At least 7 of the 9 must compile and match.
Private protocols refuse the ops with no private-inference lowering (LRN; MaxPool under FHE).
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import helper

import picompile
from picompile.errors import BackendError, PicompileError, UnsupportedOpError
from picompile.frontend import convert_opset
from picompile.reference import reference_outputs
from picompile.runtime import run_plan

LIGHT = Path(onnx.__file__).parent / "backend" / "test" / "data" / "light"
MODELS = sorted(p.name for p in LIGHT.glob("light_*.onnx"))
#: Models picompile cannot compile yet → the op its one-line error must name.
REFUSED: dict[str, str] = {}
MIN_MATCHING = 7


def _reference(path: Path, feed: str, x: np.ndarray, server_output: str) -> dict:
    """onnxruntime's outputs, plus ``server_output`` (an intermediate tensor) as an output."""
    model = convert_opset(onnx.load(str(path)), path.name)
    if server_output not in {o.name for o in model.graph.output}:
        model.graph.output.append(helper.make_empty_tensor_value_info(server_output))
    return reference_outputs(model.SerializeToString(), {feed: x})


def _zoo_result(name: str) -> dict:
    """Compile and run one model; times in seconds; an error's class and message if any."""
    path = LIGHT / name
    since = time.perf_counter()
    try:
        plan = picompile.compile(path)
    except PicompileError as exc:
        return {"error": exc, "message": str(exc)}
    compile_s = time.perf_counter() - since
    spec = plan.inputs[0]
    x = np.random.default_rng(0).standard_normal(spec.shape).astype(np.float32)
    since = time.perf_counter()
    result = run_plan(plan, x, backend="plain")
    run_s = time.perf_counter() - since
    server_output = plan.outputs[0].name
    single = run_plan(plan, x, backend="plain", precision="float32").server_outputs[server_output]
    since = time.perf_counter()
    reference = _reference(path, spec.name, x, server_output)
    onnxruntime_s = time.perf_counter() - since
    return {"outputs": result.outputs, "server": result.server_outputs[server_output],
            "server_output": server_output, "server_float32": single, "reference": reference,
            "compile_s": compile_s,
            "run_s": run_s, "onnxruntime_s": onnxruntime_s}


@pytest.fixture(scope="module")
def zoo() -> dict[str, dict]:
    return {name: _zoo_result(name) for name in MODELS}


def _close(ours: np.ndarray, ref: np.ndarray) -> None:
    ours, ref = np.asarray(ours, dtype=np.float64), np.asarray(ref, dtype=np.float64)
    assert ours.shape == ref.shape
    np.testing.assert_allclose(ours, ref, rtol=1e-3, atol=1e-3 * float(np.max(np.abs(ref))))


def test_the_zoo_is_present():
    assert len(MODELS) == 9, MODELS


@pytest.mark.parametrize("name", MODELS)
def test_model_compiles_and_matches_onnxruntime(zoo, name):
    result = zoo[name]
    if name in REFUSED:
        assert isinstance(result.get("error"), UnsupportedOpError), result
        assert REFUSED[name] in result["message"] and "\n" not in result["message"]
        return
    assert "error" not in result, result.get("message")
    reference = result["reference"]
    for output, ours in result["outputs"].items():
        _close(ours, reference[output])
    _close(result["server"], reference[result["server_output"]])
    assert result["server_float32"].dtype == np.float32
    _close(result["server_float32"], reference[result["server_output"]])


def test_plain_precision_is_checked():
    plan = picompile.compile(LIGHT / "light_squeezenet.onnx")
    x = np.zeros(plan.inputs[0].shape, dtype=np.float32)
    with pytest.raises(BackendError, match="unknown precision 'float16'"):
        run_plan(plan, x, backend="plain", precision="float16")
    with pytest.raises(BackendError, match="float64 only"):
        run_plan(plan, x, backend="plain", precision="float32", slot_level=True)


def test_enough_of_the_zoo_matches(zoo):
    matching = [name for name in MODELS if "error" not in zoo[name]]
    for name in matching:
        timing = zoo[name]
        print(f"{name}: compile {timing['compile_s']:.2f} s, plain run {timing['run_s']:.2f} s, "
              f"onnxruntime {timing['onnxruntime_s']:.2f} s")
    assert len(matching) >= MIN_MATCHING, {n: zoo[n].get("message") for n in MODELS}


@pytest.mark.parametrize(("name", "protocol", "op"), [
    ("light_bvlc_alexnet.onnx", "fhe", "LRN"),
    ("light_bvlc_alexnet.onnx", "hybrid", "LRN"),
    ("light_squeezenet.onnx", "fhe", "MaxPool"),
])
def test_private_protocols_name_the_blocking_op(name, protocol, op):
    x = np.random.default_rng(1).standard_normal((4, 3, 224, 224)).astype(np.float32)
    with pytest.raises(UnsupportedOpError) as info:
        picompile.compile(LIGHT / name, protocol=protocol, calib=x, degree=2,
                          insecure_test_params=True)
    message = str(info.value)
    assert f"({op})" in message and "\n" not in message


def _single_node_model(node: onnx.NodeProto, shape: list[int], extra: list | None = None
                       ) -> onnx.ModelProto:
    graph = helper.make_graph(
        [node], "one", [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, shape)],
        [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, shape)],
        initializer=extra or [])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 9)])
    model.ir_version = 7  # what onnxruntime reads
    return model


@pytest.mark.parametrize("size", [1, 2, 3, 5])
def test_lrn_matches_onnxruntime(size):
    node = helper.make_node("LRN", ["x"], ["y"], size=size, alpha=0.3, beta=0.6, bias=1.5)
    model = _single_node_model(node, [1, 7, 4, 5])
    x = np.random.default_rng(size).standard_normal((1, 7, 4, 5)).astype(np.float32)
    ours = picompile.run(picompile.compile(model), x)["y"]
    if size % 2:  # onnxruntime refuses even sizes
        _close(ours, reference_outputs(model.SerializeToString(), {"x": x})["y"])
    # The ONNX spec's formula, channel by channel (onnx.reference's LRN loops over the batch).
    square_sum = np.zeros_like(x, dtype=np.float64)
    for c in range(x.shape[1]):
        low, high = max(0, c - (size - 1) // 2), min(x.shape[1], c + size // 2 + 1)
        square_sum[:, c] = np.sum(np.square(x[:, low:high].astype(np.float64)), axis=1)
    _close(ours, x / (1.5 + 0.3 / size * square_sum) ** 0.6)


def test_sum_of_tensors_and_a_constant_matches_onnxruntime():
    addend = helper.make_tensor("c", onnx.TensorProto.FLOAT, [1, 3, 1, 1], [0.5, -1.0, 2.0])
    nodes = [helper.make_node("Relu", ["x"], ["r"]),
             helper.make_node("Sum", ["x", "r", "c", "x"], ["y"])]
    graph = helper.make_graph(
        nodes, "sum", [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1, 3, 2, 2])],
        [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1, 3, 2, 2])],
        initializer=[addend])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 9)])
    model.ir_version = 7
    x = np.random.default_rng(2).standard_normal((1, 3, 2, 2)).astype(np.float32)
    ours = picompile.run(picompile.compile(model), x)["y"]
    _close(ours, reference_outputs(model.SerializeToString(), {"x": x})["y"])
