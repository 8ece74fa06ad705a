"""Runtimes that execute a compiled plan. Imports picompile.plan, never the passes.

``run_plan(plan, x, backend=...)`` validates the input, runs the backend on the steps, then the
client-side head; ``get_backend(name)`` returns a backend instance.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from picompile.errors import BackendError, PlanError
from picompile.plan import Plan
from picompile.runtime.backend import Backend, RunResult, normalize_inputs
from picompile.runtime.session import is_client_view

BACKEND_NAMES = ("plain", "ckks", "hybrid")


def get_backend(name: str, **options: Any) -> Backend:
    """Instantiate a backend by name."""
    if name == "plain":
        from picompile.runtime.plain import PlainBackend

        return PlainBackend(**options)
    if name == "ckks":
        from picompile.runtime.ckks import CkksBackend

        return CkksBackend(**options)
    if name == "hybrid":
        from picompile.runtime.hybrid import HybridBackend

        return HybridBackend(**options)
    raise BackendError(f"unknown backend {name!r}; available: {', '.join(BACKEND_NAMES)}")


def run_plan(plan: Plan, x: np.ndarray | dict[str, np.ndarray], backend: str = "plain",
             **options: Any) -> RunResult:
    """Run ``plan`` on ``x`` with the named backend and apply the client head."""
    if is_client_view(plan):
        raise PlanError("this is a client plan (no weights): only `picompile client` can use it; "
                        "the other backends need the full plan")
    inputs = normalize_inputs(plan, x)
    result = get_backend(backend, **options).execute(plan, inputs)
    server_output = result.server_outputs[plan.outputs[0].name]
    if plan.head is not None:
        from picompile.runtime.client_head import run_head

        result.outputs = run_head(plan, server_output)
    else:
        result.outputs = {plan.model_outputs[0] if plan.model_outputs else plan.outputs[0].name:
                          server_output}
    return result


__all__ = ["Backend", "RunResult", "get_backend", "run_plan", "BACKEND_NAMES"]
