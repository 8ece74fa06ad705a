"""Run the fuzz harnesses (``fuzz/harnesses.py``) for a set time or number of executions.

Reads: the seed corpus; ``--harness`` names (default all), ``--seconds`` per harness or
``--executions``, ``--seed``, ``--timeout`` per execution.
Writes: per harness the executions, how many ended in a named picompile error or a valid
result, and each finding — an exception that is not a ``PicompileError``, or an execution over
the timeout — saved as ``fuzz/findings/<harness>/<sha256>.bin`` with ``.txt`` (the traceback).
Exit status 1 when anything was found.

    .venv/bin/python fuzz/run.py --seconds 60            # make fuzz
    .venv/bin/python fuzz/run.py --harness onnx_model --executions 500 --seed 3

Each harness runs in this process (``make fuzz`` starts one process per harness, so that a
crash of a native library ends only that harness and shows as its exit status).
"""

from __future__ import annotations

import argparse
import hashlib
import signal
import sys
import time
import traceback
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from harnesses import HARNESSES, MUTATORS, SEED_FOLDERS, seeds  # noqa: E402

from picompile.errors import PicompileError  # noqa: E402

FINDINGS = HERE / "findings"


class ExecutionTimeout(Exception):
    """One execution ran past ``--timeout``."""


@dataclass
class Outcome:
    executions: int = 0
    named_errors: int = 0
    valid: int = 0
    findings: list[str] = field(default_factory=list)


def _alarm(signum: int, frame: object) -> None:
    raise ExecutionTimeout("execution timed out")


def fuzz(name: str, *, seconds: float | None = None, executions: int | None = None,
         seed: int = 0, timeout: float = 10.0, save: bool = True) -> Outcome:
    """Mutate seeds and run harness ``name`` until the time or the count is reached."""
    harness, mutate = HARNESSES[name], MUTATORS[name]
    corpus = seeds(SEED_FOLDERS[name])
    rng = np.random.default_rng(seed)
    outcome = Outcome()
    deadline = time.monotonic() + seconds if seconds is not None else None
    previous = signal.signal(signal.SIGALRM, _alarm)
    try:
        while (executions is None or outcome.executions < executions) and (
                deadline is None or time.monotonic() < deadline):
            data = mutate(corpus[int(rng.integers(len(corpus)))], rng)
            outcome.executions += 1
            signal.setitimer(signal.ITIMER_REAL, timeout)
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    harness(data)
                outcome.valid += 1
            except PicompileError:
                outcome.named_errors += 1
            except Exception as exc:  # noqa: BLE001 - every other exception is a finding
                outcome.findings.append(f"{type(exc).__name__}: {exc}"[:300])
                if save:
                    _save(name, data, traceback.format_exc())
            finally:
                signal.setitimer(signal.ITIMER_REAL, 0)
    finally:
        signal.signal(signal.SIGALRM, previous)
    return outcome


def _save(name: str, data: bytes, text: str) -> None:
    folder = FINDINGS / name
    folder.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256(data).hexdigest()[:16]
    (folder / f"{digest}.bin").write_bytes(data)
    (folder / f"{digest}.txt").write_text(text)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--harness", nargs="+", choices=list(HARNESSES), default=list(HARNESSES))
    parser.add_argument("--seconds", type=float, help="time per harness")
    parser.add_argument("--executions", type=int, help="executions per harness")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--timeout", type=float, default=10.0, help="seconds per execution")
    args = parser.parse_args(argv)
    if args.seconds is None and args.executions is None:
        args.seconds = 30.0
    found = False
    for name in args.harness:
        start = time.monotonic()
        outcome = fuzz(name, seconds=args.seconds, executions=args.executions, seed=args.seed,
                       timeout=args.timeout)
        elapsed = time.monotonic() - start
        print(f"{name:15} {outcome.executions:7,} executions in {elapsed:6.1f} s "
              f"({outcome.executions / elapsed:7.1f}/s): {outcome.named_errors:,} named errors, "
              f"{outcome.valid:,} valid, {len(outcome.findings)} findings", flush=True)
        for finding in sorted(set(outcome.findings))[:10]:
            print(f"    {finding}")
        found |= bool(outcome.findings)
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
