"""Simulation of a graph during compilation: the plain backend's kernels over the IR.

Reads: an IR :class:`~picompile.ir.Graph` (lowered once to an in-memory plan) and inputs.
Writes: output logits, or every intermediate tensor (a trace).

Passes that must *measure* (sensitivity by noise injection, closed-loop accuracy of a candidate
plan, ReLU selection) use this: any step can be substituted by a function of its input, and a
run can restart from a cached trace at a given step so that perturbing a late layer does not
recompute the early ones.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import numpy as np

from picompile.ir import Graph
from picompile.lowering import lower_to_plan
from picompile.runtime.interface import execute_step, normalize_inputs

Substitution = Callable[[np.ndarray], np.ndarray]


class GraphSimulator:
    """Runs a graph on float64 numpy tensors with optional per-step substitutions."""

    def __init__(self, graph: Graph) -> None:
        self.plan = lower_to_plan(graph)
        self.position = {step.name: i for i, step in enumerate(self.plan.steps)}
        self.output = self.plan.outputs[0].name

    def inputs(self, x: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return normalize_inputs(self.plan, x)

    def trace(self, x: dict[str, np.ndarray],
              substitutions: Mapping[str, Substitution] | None = None) -> dict[str, np.ndarray]:
        """Every tensor of a run, by name."""
        return self._run(dict(self.inputs(x)), 0, substitutions or {})

    def run(self, x: dict[str, np.ndarray],
            substitutions: Mapping[str, Substitution] | None = None) -> np.ndarray:
        return self.trace(x, substitutions)[self.output]

    def run_from(self, trace: dict[str, np.ndarray], step: str,
                 substitutions: Mapping[str, Substitution]) -> np.ndarray:
        """Re-run from ``step`` (inclusive), reading earlier tensors from ``trace``."""
        return self._run(dict(trace), self.position[step], substitutions)[self.output]

    def _run(self, env: dict[str, np.ndarray], start: int,
             substitutions: Mapping[str, Substitution]) -> dict[str, np.ndarray]:
        for step in self.plan.steps[start:]:
            args = [env[v] for v in step.inputs]
            if step.name in substitutions:
                env[step.outputs[0]] = substitutions[step.name](args[0])
            else:
                env[step.outputs[0]] = execute_step(self.plan, step, args)
        return env
