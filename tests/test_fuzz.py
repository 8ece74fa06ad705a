"""A short pass of every fuzz harness (``fuzz/harnesses.py``; ``make fuzz`` runs them longer):
mutated plans, ONNX models, input/calibration files and protocol messages end in a named
picompile error or a valid result — never another exception or a hang."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "fuzz"))

from harnesses import HARNESSES  # noqa: E402
from run import fuzz  # noqa: E402

EXECUTIONS = {"plan_file": 500, "plan_json": 300, "onnx_model": 300, "numpy_input": 500,
              "frames": 500, "fhe_session": 500, "hybrid_session": 300}


@pytest.mark.parametrize("name", list(HARNESSES))
def test_fuzz_short_pass(name):
    outcome = fuzz(name, executions=EXECUTIONS[name], seed=1, timeout=30.0, save=False)
    assert outcome.executions == EXECUTIONS[name]
    assert outcome.findings == []
    assert outcome.named_errors > 0   # the mutations reach the checks


def test_a_finding_is_recorded(monkeypatch, tmp_path):
    """A harness that raises something other than a picompile error is a finding, saved with
    its traceback; one over the time limit too."""
    import harnesses
    import run

    def broken(data: bytes) -> None:
        if len(data) % 3 == 0:
            raise KeyError("unexpected")

    monkeypatch.setitem(harnesses.HARNESSES, "numpy_input", broken)
    monkeypatch.setattr(run, "HARNESSES", harnesses.HARNESSES)
    monkeypatch.setattr(run, "FINDINGS", tmp_path)
    outcome = fuzz("numpy_input", executions=200, seed=0)
    assert outcome.findings and all("KeyError" in f for f in outcome.findings)
    assert list((tmp_path / "numpy_input").glob("*.txt"))

    import time

    monkeypatch.setitem(harnesses.HARNESSES, "numpy_input", lambda data: time.sleep(5))
    slow = fuzz("numpy_input", executions=1, seed=0, timeout=0.2, save=False)
    assert slow.findings and "timed out" in slow.findings[0]
