"""Run profiles: the measured per-step time of a run, saved with the identity of its plan.

Reads: a :class:`~picompile.runtime.backend.RunResult` (to write) or a profile JSON file.
Writes: ``picompile run ... --profile RUN.json`` files, and loads them back (checked against
the plan) for ``picompile report X.piplan --profile RUN.json``; the predicted vs measured rows
are :func:`picompile.report.facts.profile_facts`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from picompile.errors import InputError
from picompile.plan import Plan

PROFILE_VERSION = 1


def plan_identity(plan: Plan) -> dict[str, Any]:
    return {"model_sha256": plan.model.get("sha256"), "steps": [s.name for s in plan.steps]}


def write_profile(plan: Plan, result: Any, samples: int, path: str | Path) -> Path:
    """Save a run's per-step timings (those of its last sample) with the plan's identity."""
    doc = {
        "profile_version": PROFILE_VERSION,
        "plan": plan_identity(plan),
        "backend": result.backend,
        "samples": samples,
        "total_seconds": result.seconds,
        "steps": [{"step": t.step, "op": t.op, "seconds": t.seconds} for t in result.timings],
    }
    path = Path(path)
    path.write_text(json.dumps(doc, indent=1))
    return path


def load_profile(path: str | Path, plan: Plan) -> dict[str, Any]:
    try:
        doc = json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        raise InputError(f"cannot read profile {path}: {exc}") from None
    if not isinstance(doc, dict) or doc.get("profile_version") != PROFILE_VERSION:
        raise InputError(f"{path} is not a picompile run profile")
    if doc.get("plan") != plan_identity(plan):
        raise InputError(f"profile {path} was recorded with a different plan")
    return doc
