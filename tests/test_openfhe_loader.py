"""OpenFHE loads on the supported Python, and a wrong Python gets a clear BackendError."""

from __future__ import annotations

import sys

import pytest

from picompile.errors import BackendError
from picompile.runtime import openfhe_loader


def test_openfhe_loads_here():
    openfhe = openfhe_loader.load_openfhe()
    parameters = openfhe.CCParamsCKKSRNS()
    parameters.SetMultiplicativeDepth(1)
    assert parameters.GetMultiplicativeDepth() == 1


def test_wrong_python_is_a_clear_backend_error(monkeypatch):
    monkeypatch.setattr(sys, "version_info", (3, 11, 7, "final", 0))
    with pytest.raises(BackendError, match=r"CPython 3\.10.*this is \w+ 3\.11"):
        openfhe_loader.load_openfhe()
