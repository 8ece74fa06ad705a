"""Shared fixtures: example models, the digits test split, small synthetic ONNX models."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"
sys.path.insert(0, str(EXAMPLES))

import digits  # noqa: E402  (examples/digits.py: the fixed digits split)


@pytest.fixture(autouse=True, scope="module")
def _release_openfhe_state():
    """After each test module: drop OpenFHE's process-wide state (every context ever made,
    the static evaluation-key maps). OpenFHE never frees them on its own, so a test worker that
    runs many encrypted modules would otherwise grow to tens of gigabytes."""
    yield
    openfhe = sys.modules.get("openfhe")
    if openfhe is None:
        return
    import gc

    gc.collect()
    openfhe.ClearEvalMultKeys()
    openfhe.ClearEvalSumKeys()
    openfhe.CryptoContext.ClearEvalAutomorphismKeys()
    openfhe.ReleaseAllContexts()


@pytest.fixture(scope="session")
def digits_split() -> dict[str, np.ndarray]:
    return digits.load_split()


@pytest.fixture(scope="session")
def example_models() -> list[dict]:
    return json.loads((EXAMPLES / "models.json").read_text())


def model_input(images: np.ndarray, kind: str) -> np.ndarray:
    return digits.to_model_input(images, kind)
