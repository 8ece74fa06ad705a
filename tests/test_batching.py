"""Several client inputs in one CKKS ciphertext (``--batch``): equal to one input per
ciphertext, slot-level and encrypted; clear errors where batching does not apply."""

from __future__ import annotations

import numpy as np
import pytest

import picompile
from conftest import EXAMPLES, model_input
from picompile.errors import OptionError, UnsupportedOpError
from picompile.runtime import run_plan
from picompile.runtime.slot_program import inputs_per_ciphertext


def _compile(digits_split, **options):
    calib = {"input": model_input(digits_split["calib_images"], "img8"),
             "labels": digits_split["calib_labels"]}
    return picompile.compile(EXAMPLES / "cnn_digits.onnx", calib=calib, degree=3,
                             insecure_test_params=True, **options)


def test_batched_ckks_run_equals_separate_runs(digits_split):
    single = _compile(digits_split)
    batched = _compile(digits_split, batch=0)
    layout = batched.layout
    assert inputs_per_ciphertext(single) == 1 and layout.batch == layout.slots // layout.block
    assert layout.batch >= 2 and layout.block >= 64  # 8x8 digits, multiplexed
    x = model_input(digits_split["test_images"][:layout.batch + 1], "img8")  # two ciphertexts
    expected = run_plan(single, x, backend="ckks").server_outputs["logits"]
    got = run_plan(batched, x, backend="ckks").server_outputs["logits"]
    assert got.shape == expected.shape
    np.testing.assert_allclose(got, expected, atol=1e-6)
    plain = run_plan(batched, x, backend="plain").server_outputs["logits"]  # slot level
    np.testing.assert_allclose(plain, run_plan(single, x, backend="plain")
                               .server_outputs["logits"], atol=1e-9)


def test_batch_that_does_not_fit_or_applies_to_hybrid_is_refused(digits_split):
    with pytest.raises(UnsupportedOpError, match="at most"):
        _compile(digits_split, batch=10_000)
    with pytest.raises(OptionError, match="--batch"):
        _compile(digits_split, batch=2, protocol="hybrid")
