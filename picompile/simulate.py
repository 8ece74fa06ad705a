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
    """Runs a graph on numpy tensors (float64, or ``dtype``: the compile-time measurements use
    float32, twice as fast and far more precise than any approximation they compare) with
    optional per-step substitutions."""

    def __init__(self, graph: Graph, dtype: type = np.float64) -> None:
        self.dtype = dtype
        self.plan = lower_to_plan(graph)
        self.position = {step.name: i for i, step in enumerate(self.plan.steps)}
        self.output = self.plan.outputs[0].name

    def inputs(self, x: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return {name: value.astype(self.dtype, copy=False)
                for name, value in normalize_inputs(self.plan, x).items()}

    def trace(self, x: dict[str, np.ndarray],
              substitutions: Mapping[str, Substitution] | None = None) -> dict[str, np.ndarray]:
        """Every tensor of a run, by name."""
        return self._run(dict(self.inputs(x)), 0, substitutions or {})

    def run(self, x: dict[str, np.ndarray],
            substitutions: Mapping[str, Substitution] | None = None,
            bounds: dict[str, float] | None = None,
            perturbations: Mapping[str, Substitution] | None = None) -> np.ndarray:
        """The output; each tensor is freed after its last use. With ``bounds``, the largest
        |value| of every tensor (inf when not finite) is folded into it by name;
        ``perturbations`` (by step name) are applied to a step's output (a bootstrap's error)."""
        return self._run(dict(self.inputs(x)), 0, substitutions or {}, keep=False,
                         bounds=bounds, perturbations=perturbations)[self.output]

    def run_from(self, trace: dict[str, np.ndarray], step: str,
                 substitutions: Mapping[str, Substitution]) -> np.ndarray:
        """Re-run from ``step`` (inclusive), reading earlier tensors from ``trace``."""
        return self._run(dict(trace), self.position[step], substitutions)[self.output]

    def _last_uses(self) -> dict[int, list[str]]:
        last: dict[str, int] = {}
        for index, step in enumerate(self.plan.steps):
            for value in step.inputs:
                last[value] = index
        uses: dict[int, list[str]] = {}
        for value, index in last.items():
            if value != self.output:
                uses.setdefault(index, []).append(value)
        return uses

    def _run(self, env: dict[str, np.ndarray], start: int,
             substitutions: Mapping[str, Substitution], keep: bool = True,
             bounds: dict[str, float] | None = None,
             perturbations: Mapping[str, Substitution] | None = None
             ) -> dict[str, np.ndarray]:
        dead = {} if keep else self._last_uses()
        for index, step in enumerate(self.plan.steps[start:], start):
            args = [env[v] for v in step.inputs]
            if step.name in substitutions:
                result = substitutions[step.name](args[0]).astype(self.dtype, copy=False)
            else:
                result = execute_step(self.plan, step, args, self.dtype)
            if perturbations and step.name in perturbations:
                result = perturbations[step.name](result).astype(self.dtype, copy=False)
            env[step.outputs[0]] = result
            if bounds is not None:
                with np.errstate(invalid="ignore"):
                    largest = float(np.max(np.abs(result))) if result.size else 0.0
                name = step.outputs[0]
                bounds[name] = max(bounds.get(name, 0.0),
                                   largest if np.isfinite(largest) else np.inf)
            for value in dead.get(index, ()):
                env.pop(value, None)
        return env
