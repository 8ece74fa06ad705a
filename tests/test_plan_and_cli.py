"""Plan file round trip, canonicalization facts, report contents, and the CLI end to end."""

from __future__ import annotations

import json
import subprocess
import sys
import zipfile

import numpy as np
import onnxruntime
import pytest

import picompile
from conftest import EXAMPLES, model_input
from onnx_models import conv_model
from picompile.plan import Plan
from picompile.report import render_text


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "picompile.cli", *args],
                          capture_output=True, text=True, timeout=300)


def test_round_trip_preserves_plan_and_outputs(tmp_path):
    plan = picompile.compile(conv_model())
    path = plan.save(tmp_path / "conv.piplan")
    loaded = picompile.load_plan(path)
    assert loaded.to_json() == plan.to_json()
    x = np.random.default_rng(1).normal(size=(1, 2, 6, 6))
    np.testing.assert_array_equal(picompile.run(loaded, x)["y"], picompile.run(plan, x)["y"])
    with zipfile.ZipFile(path) as archive:  # plan.json stays human-readable
        assert b'"schema_version": 2' in archive.read("plan.json")


def test_canonicalize_folds_and_fuses():
    plan = picompile.compile(conv_model())
    assert [s.op for s in plan.steps] == ["Conv", "Relu", "GlobalAveragePool", "Reshape",
                                          "Linear"]
    conv = plan.steps[0]
    assert conv.source == ["conv", "bn"]  # batch norm folded into the conv
    assert [r["name"] for r in plan.passes] == ["frontend", "canonicalize"]
    assert all(r["seconds"] >= 0 for r in plan.passes)
    x = np.random.default_rng(2).normal(size=(4, 2, 6, 6)).astype(np.float32)
    session = onnxruntime.InferenceSession(conv_model().SerializeToString(),
                                           providers=["CPUExecutionProvider"])
    expected = session.run(None, {"x": x})[0]
    np.testing.assert_allclose(picompile.run(plan, x)["y"], expected, rtol=1e-4, atol=1e-5)


def test_report_lists_every_step_with_sources_and_parameters():
    plan = picompile.compile(EXAMPLES / "resnet20_digits.onnx")
    text = render_text(plan, width=400)
    for step in plan.steps:
        assert step.name in text
    assert "weight:16x3x3x3" in text and "/bn1/BatchNormalization" in text
    assert "folded 21 batch normalizations" in text


def test_cli_compile_report_run_with_reference(tmp_path, digits_split):
    plan_path = tmp_path / "mlp.piplan"
    result = run_cli("compile", str(EXAMPLES / "mlp_digits.onnx"), "-o", str(plan_path))
    assert result.returncode == 0, result.stderr
    assert plan_path.exists()
    report = run_cli("report", str(plan_path))
    assert report.returncode == 0 and "ZipMap" in report.stdout and "Linear" in report.stdout
    x = tmp_path / "x.npy"
    np.save(x, model_input(digits_split["test_images"][:3], "flat64"))
    run = run_cli("run", str(plan_path), "--input", str(x), "--reference",
                  str(EXAMPLES / "mlp_digits.onnx"), "--output", str(tmp_path / "out.npy"))
    assert run.returncode == 0, run.stderr
    assert f"output_label: {digits_split['mlp_sklearn_predict'][:3]}" in run.stdout
    lines = [s for s in run.stdout.splitlines() if "to onnxruntime on" in s]
    assert len(lines) == 2  # output_label and output_probability
    assert all(float(line.rsplit(" ", 1)[1]) < 1e-5 for line in lines)
    assert np.load(tmp_path / "out.npy").shape == (3, 10)


def test_cli_help_for_every_command():
    for command in ([], ["compile"], ["report"], ["run"]):
        result = run_cli(*command, "--help")
        assert result.returncode == 0 and "usage: picompile" in result.stdout


def test_python_api_plan_run_on_single_sample_without_batch_axis(digits_split):
    plan = picompile.compile(EXAMPLES / "cnn_digits.onnx")
    image = digits_split["test_images"][0]  # (1, 8, 8): no batch axis
    logits = picompile.run(plan, image)["logits"]
    assert logits.shape == (1, 10)
    batched = picompile.run(plan, image[None])["logits"]  # the same sample with its batch axis
    np.testing.assert_array_equal(logits, batched)


def test_run_profile_and_report_predicted_vs_measured(tmp_path, digits_split):
    calib = tmp_path / "calib.npz"
    np.savez(calib, input=model_input(digits_split["calib_images"], "img8"),
             labels=digits_split["calib_labels"])
    plan_path = tmp_path / "cnn.piplan"
    assert run_cli("compile", str(EXAMPLES / "cnn_digits.onnx"), "--calib", str(calib),
                   "--degree", "3", "--insecure-test-params", "-o", str(plan_path)).returncode == 0
    x = tmp_path / "x.npy"
    np.save(x, model_input(digits_split["test_images"][:2], "img8"))
    profile = tmp_path / "run.json"
    run = run_cli("run", str(plan_path), "--input", str(x), "--backend", "ckks", "--profile",
                  str(profile))
    assert run.returncode == 0, run.stderr
    report = run_cli("report", str(plan_path), "--profile", str(profile), "--width", "300")
    assert report.returncode == 0, report.stderr
    assert "predicted vs measured" in report.stdout
    plan = Plan.load(plan_path)
    for step in plan.steps:
        assert step.name in report.stdout
    other = tmp_path / "mlp.piplan"
    picompile.compile(EXAMPLES / "mlp_digits.onnx", output=other)
    mismatch = run_cli("report", str(other), "--profile", str(profile))
    assert mismatch.returncode != 0 and "different plan" in mismatch.stderr


@pytest.mark.parametrize("options", [
    {},
    {"degree": 3},
    {"degree": 2, "method": "hermite"},
    {"degree": 2, "method": "quad"},
    {"protocol": "hybrid"},
    {"protocol": "hybrid", "degree": 2, "method": "quad", "quadratic_protocol": "flash"},
], ids=["exact", "fhe-uniform", "fhe-per-channel", "fhe-folded", "hybrid", "hybrid-flash"])
def test_every_kind_of_plan_round_trips(options, digits_split, tmp_path):
    """The typed contract of every plan kind survives save/load and runs the same."""
    calib = {"input": model_input(digits_split["calib_images"][:64], "img8")}
    plan = picompile.compile(EXAMPLES / "cnn_digits.onnx", insecure_test_params=True,
                             **({"calib": calib} if options else {}), **options)
    loaded = Plan.load(plan.save(tmp_path / "plan.piplan"))
    assert loaded.to_json() == json.loads(json.dumps(plan.to_json()))
    x = model_input(digits_split["test_images"][:3], "img8")
    np.testing.assert_array_equal(picompile.run(loaded, x)["logits"],
                                  picompile.run(plan, x)["logits"])

