"""Shared fixtures: example models, the digits test split, small synthetic ONNX models."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from picompile.listening import wait_for_port

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"
sys.path.insert(0, str(EXAMPLES))

import digits  # noqa: E402  (examples/digits.py: the fixed digits split)

#: The CLI as a subprocess (serve, dealer and client processes of the protocol tests).
PICOMPILE = [sys.executable, "-m", "picompile.cli"]


def start_service(args: list[str], tmp_path: Path, name: str, env: dict | None = None,
                  timeout: float = 60.0) -> tuple[subprocess.Popen, int]:
    """Start ``picompile ARGS`` (serve or dealer with ``--port 0``) logging to
    ``tmp_path/NAME.log``, with ``env`` added to the environment; the process and the port it
    listens on (an AssertionError with the log if it exits or is not listening in time)."""
    log = tmp_path / f"{name}.log"
    process = subprocess.Popen(PICOMPILE + args, stdout=log.open("w"), stderr=subprocess.STDOUT,
                               cwd=ROOT, env={**os.environ, "PYTHONUNBUFFERED": "1",
                                              **(env or {})})
    return process, wait_for_port(process, log, timeout, name, AssertionError)


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


@pytest.fixture(scope="module")
def cnn_plan(digits_split):
    """The digits CNN as an FHE plan at degree 3 on the small insecure ring."""
    import picompile

    calib = {"input": model_input(digits_split["calib_images"], "img8")}
    return picompile.compile(EXAMPLES / "cnn_digits.onnx", calib=calib, degree=3,
                             insecure_test_params=True)


@pytest.fixture(scope="session")
def digits_split() -> dict[str, np.ndarray]:
    return digits.load_split()


@pytest.fixture(scope="session")
def example_models() -> list[dict]:
    return json.loads((EXAMPLES / "models.json").read_text())


def model_input(images: np.ndarray, kind: str) -> np.ndarray:
    return digits.to_model_input(images, kind)
