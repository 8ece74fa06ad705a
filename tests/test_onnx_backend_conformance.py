"""Conformance: the ONNX wheel's own backend test cases through frontend + plain runtime.

The onnx wheel ships ``onnx/backend/test/data/pytorch-converted`` and ``pytorch-operator``
(model, inputs, expected outputs); the ``node/`` folder is not in the wheel. Cases for ops we
support must match the expected outputs; cases for ops we do not support must fail with a clear
picompile error, never a crash.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

import picompile
from picompile.errors import ModelError, UnsupportedOpError

DATA = Path(onnx.__file__).parent / "backend" / "test" / "data"
CASES = sorted(p for folder in ("pytorch-converted", "pytorch-operator")
               for p in (DATA / folder).glob("test_*") if (p / "model.onnx").exists())

#: Cases whose ops picompile does not compile (each must raise a clear error).
UNSUPPORTED = {
    "test_ConvTranspose2d", "test_ConvTranspose2d_no_bias", "test_operator_convtranspose",
    "test_ELU", "test_SELU", "test_operator_selu", "test_Softplus", "test_Softsign",
    "test_Softmin", "test_GLU", "test_GLU_dim", "test_Embedding", "test_Embedding_sparse",
    "test_PoissonNLLLLoss_no_reduce", "test_operator_addmm", "test_operator_mm",
    "test_operator_basic", "test_operator_params", "test_operator_chunk", "test_operator_exp",
    "test_operator_index", "test_operator_max", "test_operator_min", "test_operator_pow",
    "test_operator_sqrt", "test_operator_repeat", "test_operator_repeat_dim_overflow",
    "test_operator_non_float_params", "test_operator_symbolic_override",
    "test_operator_symbolic_override_nested",
}


def _tensors(folder: Path, prefix: str) -> list[np.ndarray]:
    return [numpy_helper.to_array(onnx.load_tensor(str(f)))
            for f in sorted(folder.glob(f"{prefix}_*.pb"))]


def test_the_suite_is_present_and_large_enough():
    supported = [c for c in CASES if c.name not in UNSUPPORTED]
    assert len(supported) >= 25, len(supported)


@pytest.mark.parametrize("case", [c for c in CASES if c.name not in UNSUPPORTED],
                         ids=lambda c: c.name)
def test_supported_case_matches_expected_outputs(case):
    plan = picompile.compile(case / "model.onnx")
    data_sets = sorted(case.glob("test_data_set_*"))
    assert data_sets
    for data_set in data_sets:
        inputs = _tensors(data_set, "input")
        expected = _tensors(data_set, "output")
        feeds = {spec.name: array for spec, array in zip(plan.inputs, inputs, strict=True)}
        outputs = list(picompile.run(plan, feeds).values())
        assert len(outputs) == len(expected)
        for got, want in zip(outputs, expected, strict=True):
            assert got.shape == want.shape
            np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("case", [c for c in CASES if c.name in UNSUPPORTED],
                         ids=lambda c: c.name)
def test_unsupported_case_fails_clearly(case):
    with pytest.raises((UnsupportedOpError, ModelError)) as info:
        picompile.compile(case / "model.onnx")
    assert str(info.value) and "\n" not in str(info.value)
