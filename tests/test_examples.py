"""Every example model: plain-runtime output equals onnxruntime on 50 test inputs."""

from __future__ import annotations

import numpy as np
import pytest

import picompile
from conftest import EXAMPLES, model_input
from picompile.reference import reference_outputs

MODELS = ["mlp_digits", "cnn_digits", "resnet20_digits", "maxpool_digits"]


def _model(example_models: list[dict], name: str) -> dict:
    return next(m for m in example_models if m["name"] == name)


@pytest.mark.parametrize("name", MODELS)
def test_plain_runtime_matches_onnxruntime(name, example_models, digits_split):
    info = _model(example_models, name)
    path = EXAMPLES / info["file"]
    plan = picompile.compile(path)
    x = model_input(digits_split["test_images"][:50], info["input_kind"])
    outputs = picompile.run(plan, x)
    expected = reference_outputs(path, {info["input_name"]: x})
    assert set(outputs) == set(expected)
    for output_name, value in outputs.items():
        reference = expected[output_name]
        if isinstance(value, np.ndarray) and value.dtype.kind == "f":
            assert value.shape == reference.shape
            scale = np.max(np.abs(reference))
            assert np.max(np.abs(value - reference)) <= 1e-4 * scale, output_name
        elif isinstance(value, np.ndarray):
            np.testing.assert_array_equal(value, reference)
        else:  # ZipMap: a list of {label: probability}
            assert len(value) == len(reference) == 50
            for got, want in zip(value, reference, strict=True):
                assert got.keys() == want.keys()
                np.testing.assert_allclose(list(got.values()), list(want.values()), atol=1e-5)


def test_mlp_client_label_equals_sklearn_predict(example_models, digits_split):
    info = _model(example_models, "mlp_digits")
    plan = picompile.compile(EXAMPLES / info["file"])
    x = model_input(digits_split["test_images"], info["input_kind"])
    labels = picompile.run(plan, x)["output_label"]
    np.testing.assert_array_equal(labels, digits_split["mlp_sklearn_predict"])
    assert plan.head is not None and "ZipMap" in plan.head.ops


@pytest.mark.parametrize("name", ["cnn_digits", "resnet20_digits", "maxpool_digits"])
def test_plain_accuracy_matches_recorded(name, example_models, digits_split):
    info = _model(example_models, name)
    plan = picompile.compile(EXAMPLES / info["file"])
    x = model_input(digits_split["test_images"], info["input_kind"])
    logits = next(iter(picompile.run(plan, x).values()))
    accuracy = float(np.mean(np.argmax(logits, axis=1) == digits_split["test_labels"]))
    assert accuracy == pytest.approx(info["test_accuracy"], abs=1e-6)


def test_batch_norm_folded_into_conv(example_models):
    plan = picompile.compile(EXAMPLES / "cnn_digits.onnx")
    ops = [s.op for s in plan.steps]
    assert ops.count("Conv") == 2 and "ChannelAffine" not in ops
    conv = next(s for s in plan.steps if s.op == "Conv")
    assert any("BatchNormalization" in source for source in conv.source)
