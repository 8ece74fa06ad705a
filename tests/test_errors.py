"""Bad input: each case raises its named error, and the CLI prints one line and exits non-zero."""

from __future__ import annotations

import json
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import onnx
import pytest

import picompile
from conftest import EXAMPLES, model_input
from onnx_models import conv_model, lstm_model
from picompile.errors import InputError, ModelError, PlanError, UnsupportedOpError
from picompile.plan import SCHEMA_VERSION, Plan


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "picompile.cli", *args],
                          capture_output=True, text=True, timeout=120)


def assert_one_line_error(result: subprocess.CompletedProcess, fragment: str) -> None:
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ") and fragment in lines[0], lines[0]


@pytest.fixture
def saved_plan(tmp_path) -> Path:
    path = tmp_path / "conv.piplan"
    picompile.compile(conv_model(), output=path)
    return path


def test_truncated_onnx(tmp_path):
    raw = (EXAMPLES / "cnn_digits.onnx").read_bytes()
    for cut in (7, len(raw) // 3, len(raw) - 5):
        path = tmp_path / f"truncated{cut}.onnx"
        path.write_bytes(raw[:cut])
        with pytest.raises(ModelError):
            picompile.compile(path)
    assert_one_line_error(run_cli("compile", str(path), "-o", str(tmp_path / "x.piplan")),
                          "truncated")
    assert not (tmp_path / "x.piplan").exists()


def test_not_an_onnx_file(tmp_path):
    path = tmp_path / "notes.onnx"
    path.write_text("this is not a model")
    with pytest.raises(ModelError):
        picompile.compile(path)
    assert_one_line_error(run_cli("compile", str(tmp_path / "missing.onnx")), "cannot read")


def test_unsupported_op_lstm(tmp_path):
    with pytest.raises(UnsupportedOpError, match="LSTM") as info:
        picompile.compile(lstm_model())
    assert "lstm" in str(info.value) and "Conv" in str(info.value)  # node, op, supported set
    path = tmp_path / "lstm.onnx"
    onnx.save(lstm_model(), path)
    assert_one_line_error(run_cli("compile", str(path)), "unsupported op LSTM")


def test_dynamic_non_batch_dimension(tmp_path):
    model = conv_model(batch="N", height="H")
    with pytest.raises(ModelError, match="dynamic dimension 'H' at axis 2"):
        picompile.compile(model)
    path = tmp_path / "dynamic.onnx"
    onnx.save(model, path)
    assert_one_line_error(run_cli("compile", str(path)), "only the batch dimension")


def test_dynamic_batch_is_fixed_to_one():
    plan = picompile.compile(conv_model(batch="N"))
    assert plan.inputs[0].shape == [1, 2, 6, 6]


def test_wrong_shaped_input(tmp_path, saved_plan):
    plan = Plan.load(saved_plan)
    with pytest.raises(InputError, match=r"expects \(1, 2, 6, 6\)"):
        picompile.run(plan, np.zeros((1, 2, 5, 6)))
    with pytest.raises(InputError):
        picompile.run(plan, {"nope": np.zeros((1, 2, 6, 6))})
    with pytest.raises(InputError, match="NaN"):
        picompile.run(plan, np.full((1, 2, 6, 6), np.nan))
    bad = tmp_path / "bad.npy"
    np.save(bad, np.zeros((3, 3)))
    assert_one_line_error(run_cli("run", str(saved_plan), "--input", str(bad)), "expects")


def test_plan_with_any_flipped_byte_is_rejected(tmp_path, saved_plan):
    raw = saved_plan.read_bytes()
    rng = np.random.default_rng(0)
    positions = sorted(set(rng.integers(0, len(raw), 40).tolist()) | {0, 30, len(raw) - 1,
                                                                       len(raw) - 70})
    for position in positions:
        corrupted = bytearray(raw)
        corrupted[position] ^= 0x01
        with pytest.raises(PlanError):
            Plan.from_bytes(bytes(corrupted))
    corrupted = bytearray(raw)
    corrupted[len(raw) // 2] ^= 0xFF
    path = tmp_path / "flipped.piplan"
    path.write_bytes(bytes(corrupted))
    assert_one_line_error(run_cli("report", str(path)), "corrupt")
    x = tmp_path / "x.npy"
    np.save(x, np.zeros((1, 2, 6, 6)))
    assert_one_line_error(run_cli("run", str(path), "--input", str(x)), "corrupt")


def test_truncated_plan(tmp_path, saved_plan):
    path = tmp_path / "short.piplan"
    path.write_bytes(saved_plan.read_bytes()[:100])
    with pytest.raises(PlanError):
        Plan.load(path)


def test_plan_from_future_schema_version(tmp_path):
    plan = picompile.compile(conv_model())
    plan.schema_version = SCHEMA_VERSION + 1
    path = plan.save(tmp_path / "future.piplan")
    with pytest.raises(PlanError, match="newer than this picompile"):
        Plan.load(path)
    assert_one_line_error(run_cli("report", str(path)), "schema version")


def test_plan_compiled_before_the_typed_contract_is_refused(tmp_path):
    """Schema 1 plans (untyped CKKS/BFV dicts) get the clear version error, not a KeyError."""
    plan = picompile.compile(conv_model())
    plan.schema_version = 1
    path = plan.save(tmp_path / "old.piplan")
    with pytest.raises(PlanError, match="old plan schema version 1: recompile the model"):
        Plan.load(path)
    assert_one_line_error(run_cli("report", str(path)), "schema version 1")


def test_typed_plan_contract_is_checked_on_load(digits_split):
    calib = {"input": model_input(digits_split["calib_images"][:32], "img8")}
    plan = picompile.compile(EXAMPLES / "cnn_digits.onnx", calib=calib, degree=3,
                             insecure_test_params=True)
    doc = plan.to_json()
    Plan.from_json(json.loads(json.dumps(doc)), plan.arrays)  # sound as compiled

    def broken(edit, match):
        bad = json.loads(json.dumps(doc))
        edit(bad)
        with pytest.raises(PlanError, match=match):
            Plan.from_json(bad, plan.arrays)

    broken(lambda d: d["ckks"].update(ring_dimension="big"), r"ckks\.ring_dimension")
    broken(lambda d: d["ckks"].update(surprise=1), "unknown field 'surprise'")
    broken(lambda d: d["ckks"].pop("runnable"), "missing field 'runnable'")
    linear = next(i for i, s in enumerate(doc["steps"]) if s["fhe"]["linear"])
    broken(lambda d: d["steps"][linear]["fhe"]["linear"]["offsets"].append(12345),
           "one diagonal per offset")
    polynomial = next(i for i, s in enumerate(doc["steps"]) if s["fhe"]["basis"] == "power")
    broken(lambda d: d["steps"][polynomial]["params"].pop("power_coefficients"),
           "lacks its power coefficients")
    broken(lambda d: d["steps"][polynomial]["fhe"].update(basis="fourier"),
           "unknown polynomial basis")
    broken(lambda d: d["layout"]["slot_maps"].update(input=[0, 1]), "slot map of 'input'")


def test_plan_with_inconsistent_content_is_rejected(tmp_path):
    plan = picompile.compile(conv_model())
    plan.steps[0].inputs = ["not_a_tensor"]
    path = plan.save(tmp_path / "inconsistent.piplan")
    with pytest.raises(PlanError, match="reads 'not_a_tensor'"):
        Plan.load(path)
    plan = picompile.compile(conv_model())
    path = plan.save(tmp_path / "ok.piplan")
    with zipfile.ZipFile(path) as archive:
        doc = json.loads(archive.read("plan.json"))
    doc["array_shapes"][plan.steps[0].params["weight"]] = [1, 2, 3]
    with pytest.raises(PlanError, match="declared shape"):
        Plan.from_json(doc, plan.arrays)


def test_missing_plan_file(tmp_path):
    assert_one_line_error(run_cli("report", str(tmp_path / "nothing.piplan")), "cannot read")


# --------------------------------------------------------------------------- found by fuzzing


def test_initializer_whose_data_does_not_fit_its_dims():
    model = conv_model()
    weight = next(t for t in model.graph.initializer if len(t.dims) == 4)
    weight.dims[0] = 1   # the raw data holds more values than the dims say
    with pytest.raises(ModelError, match="initializer .* is malformed"):
        picompile.compile(model.SerializeToString())


def test_convolution_weight_that_does_not_fit_its_input():
    model = conv_model()
    weight = next(t for t in model.graph.initializer if len(t.dims) == 4)
    array = onnx.numpy_helper.to_array(weight)
    widened = np.concatenate([array, array], axis=1)   # twice the input channels
    weight.CopyFrom(onnx.numpy_helper.from_array(widened, weight.name))
    with pytest.raises(ModelError, match="does not fit the input"):
        picompile.compile(model.SerializeToString())


def test_input_file_that_is_a_broken_zip(tmp_path):
    from picompile.cli import main

    broken = tmp_path / "x.npz"
    broken.write_bytes(b"PK\x03\x04" + b"\x00" * 40)
    header = tmp_path / "bad.npy"
    header.write_bytes(b"\x93NUMPY\x01\x00\x10\x00{'descr': '<f8', (\n")
    plan = picompile.compile(conv_model())
    plan.save(tmp_path / "p.piplan")
    for path in (broken, header):
        assert main(["run", str(tmp_path / "p.piplan"), "--input", str(path)]) != 0
    from picompile.numpy_files import read_numpy_file

    with pytest.raises(InputError, match="cannot read"):
        read_numpy_file(broken, InputError, "input file")


def test_plan_json_of_the_wrong_shape_is_a_plan_error():
    from picompile.plan.document import pack_plan_file

    plan = picompile.compile(conv_model())
    with zipfile.ZipFile(__import__("io").BytesIO(plan.to_bytes())) as archive:
        doc = json.loads(archive.read("plan.json"))
        arrays = archive.read("arrays.npz")
    for field, value in (("array_shapes", True), ("steps", 3.5), ("values", ["x"])):
        broken = pack_plan_file(json.dumps({**doc, field: value}).encode(), arrays)
        with pytest.raises(PlanError):
            Plan.from_bytes(broken)
