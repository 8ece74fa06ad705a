"""``picompile finetune``: the jax forward, the trainable polynomial forms, training, the ONNX
export and its exact recognition by ``picompile compile``, and bad training data."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

import picompile
from picompile.errors import CalibrationError, FinetuneError
from picompile.frontend import FINETUNE_METADATA_KEY

jax = pytest.importorskip("jax")
pytest.importorskip("optax")

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
CNN = EXAMPLES / "cnn_digits.onnx"


def _x64():
    from jax.experimental import enable_x64

    return enable_x64()


def _onnxruntime(model: onnx.ModelProto | str | Path, x: np.ndarray) -> np.ndarray:
    source = model.SerializeToString() if isinstance(model, onnx.ModelProto) else str(model)
    session = ort.InferenceSession(source, providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: x.astype(np.float32)})[0]


def _accuracy(plan: picompile.Plan, images: np.ndarray, labels: np.ndarray) -> float:
    logits = next(iter(picompile.run(plan, images, slot_level=False).values()))
    return 100.0 * float(np.mean(np.argmax(logits, axis=1) == labels))


@pytest.fixture(scope="module")
def digits_data(digits_split) -> dict[str, np.ndarray]:
    return {"input": digits_split["calib_images"], "labels": digits_split["calib_labels"]}


@pytest.mark.parametrize("name", sorted(p.name for p in EXAMPLES.glob("*.onnx")))
def test_jax_forward_equals_plain_backend(name: str) -> None:
    from picompile.finetuning.forward import Forward, relu
    from picompile.runtime import run_plan

    plan = picompile.compile(EXAMPLES / name)
    forward = Forward(plan)
    x = np.random.default_rng(0).random((3,) + tuple(plan.inputs[0].shape[1:]))
    expected = run_plan(plan, x).server_outputs[plan.outputs[0].name]
    with _x64():
        got = np.asarray(forward.apply(forward.parameters(np.float64), x, relu))
    np.testing.assert_allclose(got, expected, atol=1e-4, rtol=0)


@pytest.fixture(scope="module")
def calibrated_cnn(digits_data):
    from picompile.passes.calibrate import activation_nodes
    from picompile.pipeline import calibrated_graph

    frontend, _ = calibrated_graph(CNN, {"input": digits_data["input"]})
    return activation_nodes(frontend.graph)


@pytest.mark.parametrize("method,degree", [("hermite", 2), ("quad", 2), ("wls", 4),
                                           ("hermite", 3)])
def test_polynomial_gradients_match_finite_differences(calibrated_cnn, method, degree) -> None:
    from picompile.finetuning.polynomials import initial_activation

    form = initial_activation(calibrated_cnn[0], method, degree)
    rng = np.random.default_rng(1)
    x = rng.normal(size=(2, form.channels, 3, 3)) * 2.0
    weights = rng.normal(size=x.shape)
    with _x64():
        def objective(coefficients, inputs):
            return jax.numpy.sum(weights * form.evaluate(inputs, coefficients))

        coefficients = np.array(form.coefficients)
        grad_c, grad_x = jax.grad(objective, argnums=(0, 1))(coefficients, x)
        step = 1e-6
        for index in [(0, 0), (1, degree), (form.channels - 1, 1)]:
            shift = np.zeros_like(coefficients)
            shift[index] = step
            numeric = (objective(coefficients + shift, x)
                       - objective(coefficients - shift, x)) / (2 * step)
            assert float(grad_c[index]) == pytest.approx(float(numeric), rel=1e-6, abs=1e-8)
        for index in [(0, 0, 0, 0), (1, form.channels - 1, 2, 1)]:
            shift = np.zeros_like(x)
            shift[index] = step
            numeric = (objective(coefficients, x + shift)
                       - objective(coefficients, x - shift)) / (2 * step)
            assert float(grad_x[index]) == pytest.approx(float(numeric), rel=1e-6, abs=1e-8)


def test_finetune_quad_raises_accuracy_and_exports_exactly(tmp_path, digits_split,
                                                           digits_data) -> None:
    """Fast test: one epoch of Flash-form quadratics on the digits CNN raises the accuracy of
    the post-training quadratic plan; the export equals the jax model under onnxruntime, and
    ``compile`` keeps its quadratics exactly (plain and FHE plans)."""
    images, labels = digits_split["test_images"], digits_split["test_labels"]
    calib = {"input": digits_data["input"]}
    picompile.finetune(CNN, digits_data, tmp_path / "before.onnx", method="quad",
                       degree=2, epochs=0)
    after = picompile.finetune(CNN, digits_data, tmp_path / "after.onnx", method="quad",
                               degree=2, epochs=1, lr=3e-3)
    proto = onnx.load(tmp_path / "after.onnx")
    onnx.checker.check_model(proto, full_check=True)
    assert {n.op_type for n in proto.graph.node} <= {"Conv", "Mul", "Add", "Reshape", "Gemm"}
    summary = json.loads({p.key: p.value for p in proto.metadata_props}[FINETUNE_METADATA_KEY])
    assert summary["method"] == "quad" and summary["epochs"] == 1 and summary["seconds"] > 0
    np.testing.assert_allclose(_onnxruntime(proto, images), after.trained.logits(images),
                               atol=1e-4, rtol=0)
    plans = {name: picompile.compile(tmp_path / f"{name}.onnx", calib=calib,
                                     insecure_test_params=True)
             for name in ("before", "after")}
    for plan in plans.values():
        assert [s.op for s in plan.steps].count("Polynomial") == 2
        assert all(s.attrs["method"] == "onnx" for s in plan.steps if s.op == "Polynomial")
    assert plans["after"].ckks is not None
    np.testing.assert_allclose(
        next(iter(picompile.run(plans["after"], images, slot_level=False).values())),
        _onnxruntime(proto, images), atol=1e-4, rtol=0)
    accuracy = {k: _accuracy(p, images, labels) for k, p in plans.items()}
    assert accuracy["after"] > accuracy["before"] + 1.0, accuracy
    assert after.summary["accuracy_after"] > after.summary["accuracy_before"]
    assert "fine-tuned model" in __import__("picompile.report.text", fromlist=["x"]
                                            ).render_text(plans["after"])
    assert not list(tmp_path.glob("*.tmp"))
    assert (tmp_path / "after.onnx.checkpoint.npz").exists()


def test_finetune_is_repeatable_with_a_seed(digits_data) -> None:
    runs = [picompile.finetune(CNN, digits_data, method="hermite", degree=2, epochs=1, seed=3)
            for _ in range(2)]
    x = digits_data["input"][:16]
    np.testing.assert_array_equal(runs[0].trained.logits(x), runs[1].trained.logits(x))


def test_diverging_loss_backs_off_then_stops(digits_data) -> None:
    with pytest.raises(FinetuneError, match="not finite after 2 learning-rate back-offs"):
        picompile.finetune(CNN, digits_data, method="quad", degree=2, epochs=2, lr=1e12,
                           max_backoffs=2, clip_norm=1e12)


@pytest.mark.parametrize("budget", [0.1, 40])
def test_relu_budget_selection_never_exceeds_the_budget(digits_data, digits_split, budget
                                                        ) -> None:
    """AutoReP while fine-tuning: the kept ReLUs (scalar count) never exceed the budget, the
    export keeps exactly the selected channels as ReLU and equals the jax model."""
    result = picompile.finetune(CNN, digits_data, method="quad", degree=2, epochs=2,
                                relu_budget=budget, lr=3e-3)
    summary = result.summary
    total = summary["relus_total"]
    allowed = int(budget) if budget >= 1 else int(np.floor(budget * total))
    assert summary["relu_budget_count"] == allowed
    assert 0 < summary["relus_kept"] <= allowed
    assert 0 < summary["relu_channels_kept"] < summary["relu_channels"]
    masks = result.trained.masks
    assert all(set(np.unique(m)) <= {0.0, 1.0} for m in masks.values())
    images = digits_split["test_images"][:64]
    np.testing.assert_allclose(_onnxruntime(result.model, images), result.trained.logits(images),
                               atol=1e-4, rtol=0)
    assert "Relu" in {n.op_type for n in result.model.graph.node}
    if budget >= 1:
        return
    # compile: each partial layer is one Polynomial step with its exact channels; the hybrid
    # protocol runs them (secure ReLU on those elements only), FHE says it cannot
    calib = {"input": digits_data["input"]}
    plan = picompile.compile(result.model, calib=calib, protocol="hybrid")
    partial = [s for s in plan.steps if "relu_channels" in s.params]
    assert partial and "Relu" not in [s.op for s in plan.steps]
    kept = sum(int(s.hybrid.exact_relus) for s in partial)
    assert kept == summary["relus_kept"]
    reference = _onnxruntime(result.model, images)
    np.testing.assert_allclose(next(iter(picompile.run(plan, images, slot_level=False).values())),
                               reference, atol=1e-4, rtol=0)
    encrypted = next(iter(picompile.run(plan, images[:1], backend="hybrid").values()))
    np.testing.assert_allclose(encrypted, reference[:1], atol=5e-3, rtol=0)
    fhe = picompile.compile(result.model, calib=calib, insecure_test_params=True)
    assert not fhe.ckks.runnable and "--protocol hybrid" in fhe.ckks.reason


def test_relu_selection_follows_the_gradient_and_hysteresis() -> None:
    from picompile.finetuning.selection import HYSTERESIS, ReluSelection

    selection = ReluSelection({"a": 4, "b": 1}, {"a": 3, "b": 2}, budget=5, selection_steps=40)
    assert selection.total == 14 and selection.exact_relus() == 14
    for _ in range(200):  # channel a0 and b1: the polynomial hurts; the others do not
        selection.update({"a": np.array([5.0, 0.1, 0.1]), "b": np.array([0.1, 5.0])})
    assert selection.exact["a"].tolist() == [True, False, False]
    assert selection.exact["b"].tolist() == [False, True]
    final = selection.final()
    assert selection.exact_relus() == 5 <= selection.budget
    assert final["a"].tolist() == [0.0, 1.0, 1.0] and final["b"].tolist() == [1.0, 0.0]
    # hysteresis: a score inside (−h, h) keeps the previous state
    selection.scores["a"][:] = 0.0
    selection.exact["a"][:] = [True, False, True]
    selection.pressure = 0.0
    selection.update({"a": np.zeros(3), "b": np.ones(2)})
    assert selection.exact["a"].tolist() == [True, False, True]
    assert HYSTERESIS > 0
    tight = ReluSelection({"a": 4}, {"a": 2}, budget=3, selection_steps=1)
    assert tight.final()["a"].tolist() == [1.0, 1.0]  # a channel of 4 ReLUs does not fit in 3


def test_resume_continues_from_the_checkpoint(tmp_path, digits_data) -> None:
    output = tmp_path / "cnn.onnx"
    first = picompile.finetune(CNN, digits_data, output, method="quad", degree=2, epochs=1)
    x = digits_data["input"][:16]
    again = picompile.finetune(CNN, digits_data, output, method="quad", degree=2, epochs=1,
                               resume=True)  # nothing left to train: the checkpoint's model
    np.testing.assert_allclose(again.trained.logits(x), first.trained.logits(x), atol=1e-6)
    assert again.summary["steps"] == first.summary["steps"] and not \
        again.summary["epoch_losses"]
    longer = picompile.finetune(CNN, digits_data, output, method="quad", degree=2, epochs=2,
                                resume=True)
    assert longer.summary["steps"] == 2 * first.summary["steps"]
    assert len(longer.summary["epoch_accuracy"]) == 1
    with pytest.raises(FinetuneError, match="resume: .* coefficients of shape"):
        picompile.finetune(CNN, digits_data, output, method="hermite", degree=3, epochs=1,
                           resume=True)
    with pytest.raises(FinetuneError, match="no checkpoint"):
        picompile.finetune(CNN, digits_data, tmp_path / "other.onnx", epochs=1, resume=True)


def _quadratic_model(shuffled: bool) -> onnx.ModelProto:
    """Conv → per-channel a·x² + b·x + c → Conv → x² + x (torch-style) → Flatten → Gemm."""
    rng = np.random.default_rng(5)
    inits = [numpy_helper.from_array(rng.normal(size=(3, 1, 3, 3)).astype(np.float32), "w1"),
             numpy_helper.from_array(rng.normal(size=3).astype(np.float32), "b1"),
             numpy_helper.from_array(rng.normal(size=(2, 3, 3, 3)).astype(np.float32) * 0.3,
                                     "w2"),
             numpy_helper.from_array(rng.normal(size=(10, 32)).astype(np.float32), "w3"),
             numpy_helper.from_array(np.array([0.2, 0.1, 0.3], np.float32).reshape(3, 1, 1),
                                     "a"),
             numpy_helper.from_array(np.array([0.5, 0.4, 0.6], np.float32).reshape(3, 1, 1),
                                     "b"),
             numpy_helper.from_array(np.array([0.1, 0.0, -0.1], np.float32).reshape(3, 1, 1),
                                     "c"),
             numpy_helper.from_array(np.array(2.0, np.float32), "two")]
    first = [helper.make_node("Conv", ["x", "w1", "b1"], ["h"], pads=[1, 1, 1, 1])]
    if shuffled:  # c + (h·b + a·h²), the square written as Pow
        first += [helper.make_node("Pow", ["h", "two"], ["h2"]),
                  helper.make_node("Mul", ["h", "b"], ["hb"]),
                  helper.make_node("Mul", ["a", "h2"], ["ah2"]),
                  helper.make_node("Add", ["hb", "ah2"], ["s"]),
                  helper.make_node("Add", ["c", "s"], ["p"])]
    else:  # (a·h + b)·h + c
        first += [helper.make_node("Mul", ["h", "a"], ["ah"]),
                  helper.make_node("Add", ["ah", "b"], ["ahb"]),
                  helper.make_node("Mul", ["ahb", "h"], ["ahbh"]),
                  helper.make_node("Add", ["ahbh", "c"], ["p"])]
    rest = [helper.make_node("Conv", ["p", "w2"], ["g"], strides=[2, 2], pads=[1, 1, 1, 1]),
            helper.make_node("Mul", ["g", "g"], ["g2"]),
            helper.make_node("Add", ["g2", "g"], ["q"]),
            helper.make_node("Flatten", ["q"], ["f"]),
            helper.make_node("Gemm", ["f", "w3"], ["logits"], transB=1)]
    graph = helper.make_graph(
        first + rest, "quadratics",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 1, 8, 8])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [None, 10])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


@pytest.mark.parametrize("shuffled", [False, True])
def test_compile_recognizes_quadratics_written_with_standard_ops(shuffled, digits_data) -> None:
    model = _quadratic_model(shuffled)
    x = digits_data["input"][:20]
    expected = _onnxruntime(model, x)
    plan = picompile.compile(model)
    polynomials = [s for s in plan.steps if s.op == "Polynomial"]
    assert [s.op for s in plan.steps] == ["Conv", "Polynomial", "Conv", "Polynomial", "Reshape",
                                          "Linear"]
    exact = np.array([[0.1, 0.5, 0.2], [0.0, 0.4, 0.1], [-0.1, 0.6, 0.3]], np.float32)
    np.testing.assert_array_equal(polynomials[0].meta["recognized"]["power_coefficients"],
                                  exact.astype(np.float64))  # the ONNX constants, exactly
    assert polynomials[1].meta["recognized"]["power_coefficients"] == [[0.0, 1.0, 1.0]]
    np.testing.assert_allclose(next(iter(picompile.run(plan, x).values())), expected,
                               atol=1e-4, rtol=0)
    fhe = picompile.compile(model, calib={"input": digits_data["input"]}, protocol="fhe",
                            insecure_test_params=True)
    assert fhe.ckks is not None
    assert all("approximation" not in s.meta or s.meta["approximation"].get("folded_square")
               for s in fhe.steps if s.op == "Polynomial")
    np.testing.assert_allclose(next(iter(picompile.run(fhe, x[:2]).values())), expected[:2],
                               atol=1e-3, rtol=0)  # slot level: the CKKS program itself
    np.testing.assert_allclose(next(iter(picompile.run(fhe, x, slot_level=False).values())),
                               expected, atol=1e-4, rtol=0)


@pytest.mark.parametrize("arrays,match", [
    ({"input": np.zeros((8, 1, 7, 7), np.float32), "labels": np.zeros(8, np.int64)},
     r"has shape \(8, 1, 7, 7\); expected \(samples, 1, 8, 8\)"),
    ({"input": np.zeros((8, 1, 8, 8), np.float32)}, "training data has no labels"),
    ({"input": np.zeros((0, 1, 8, 8), np.float32), "labels": np.zeros(0, np.int64)},
     "is empty"),
    ({"input": np.zeros((8, 1, 8, 8), np.float32), "labels": np.full(8, 12)},
     r"class indices in 0\.\.9"),
])
def test_bad_training_data_is_one_line_error(tmp_path, arrays, match) -> None:
    path = tmp_path / "train.npz"
    np.savez(path, **arrays)
    with pytest.raises(CalibrationError, match=match) as info:
        picompile.finetune(CNN, path, tmp_path / "out.onnx")
    assert "\n" not in str(info.value)
    assert not (tmp_path / "out.onnx").exists()


def test_empty_data_file_is_one_line_error(tmp_path, capsys) -> None:
    from picompile.cli import main

    path = tmp_path / "empty.npz"
    path.write_bytes(b"")
    assert main(["finetune", str(CNN), "--data", str(path), "-o",
                 str(tmp_path / "out.onnx")]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: cannot read calibration data") and "\n" not in err
