"""Slot-level execution of an FHE plan, shared by the numpy model and the CKKS backend.

Reads: a plan whose steps carry layouts (``layout`` pass): generalized diagonals, baby-step
giant-step splits, bias/constant slot vectors, Chebyshev coefficients.
Writes: the output slot vector (numpy) or ciphertext (CKKS), and per-step timings (a step's
time includes the bootstrap of its output when the levels pass placed one there,
``meta["bootstrap_after"]``).

One interpreter, two arithmetic engines: :class:`NumpySlots` (exact float64 model: np.roll is
the rotation) and the OpenFHE engine in :mod:`picompile.runtime.ckks`. Because both run the
same sequence of rotations, plaintext multiplications and Chebyshev series, the numpy engine is
the exact model of what the encrypted run computes.

Linear step (baby-step giant-step, ``B`` = baby step, offsets ``k = g + b`` with ``g`` a
multiple of ``B``)::

    y = Σ_g rot_g( Σ_b diag'_k ⊙ rot_b(x) ) + bias,   diag'_k = roll(diag_k, g)

with all baby rotations of ``x`` hoisted (one decomposition, many rotations).
"""

from __future__ import annotations

import time
from typing import Any, Protocol

import numpy as np

from picompile.plan import SLOT_MATRIX_OPS, Plan, Step
from picompile.runtime.backend import StepTiming


class SlotEngine(Protocol):
    slots: int

    def prepare(self, ciphertext: Any) -> Any: ...
    def rotations(self, ciphertext: Any, amounts: list[int]) -> dict[int, Any]: ...
    def rotate(self, ciphertext: Any, amount: int) -> Any: ...
    def multiply_plain(self, ciphertext: Any, vector: np.ndarray, key: tuple) -> Any: ...
    def add(self, a: Any, b: Any) -> Any: ...
    def add_plain(self, ciphertext: Any, vector: np.ndarray, key: tuple) -> Any: ...
    def chebyshev(self, ciphertext: Any, coefficients: np.ndarray, a: float, b: float) -> Any: ...
    def bootstrap(self, ciphertext: Any, scale: float) -> Any: ...


class NumpySlots:
    """The exact float64 model of the slot arithmetic."""

    def __init__(self, slots: int) -> None:
        self.slots = slots

    def prepare(self, ciphertext: np.ndarray) -> np.ndarray:
        return ciphertext

    def rotations(self, ciphertext: np.ndarray, amounts: list[int]) -> dict[int, np.ndarray]:
        return {k: np.roll(ciphertext, -k) for k in amounts}

    def rotate(self, ciphertext: np.ndarray, amount: int) -> np.ndarray:
        return np.roll(ciphertext, -amount)

    def multiply_plain(self, ciphertext: np.ndarray, vector: np.ndarray, key: tuple
                       ) -> np.ndarray:
        return ciphertext * vector

    def add(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return a + b

    def add_plain(self, ciphertext: np.ndarray, vector: np.ndarray, key: tuple) -> np.ndarray:
        return ciphertext + vector

    def chebyshev(self, ciphertext: np.ndarray, coefficients: np.ndarray, a: float, b: float
                  ) -> np.ndarray:
        t = (2.0 * ciphertext - (a + b)) / (b - a)
        return np.polynomial.chebyshev.chebval(t, coefficients)

    def bootstrap(self, ciphertext: np.ndarray, scale: float) -> np.ndarray:
        return ciphertext  # a refresh changes levels, not values


def pad_to_slots(vector: np.ndarray, slots: int) -> np.ndarray:
    full = np.zeros(slots)
    full[:vector.size] = vector.reshape(-1)
    return full


def rotated_diagonals(plan: Plan, step: Step, slots: int) -> list[tuple[int, int, np.ndarray]]:
    """(giant, baby, pre-rotated diagonal) per diagonal of a linear step."""
    layout = step.meta["layout"]
    baby = int(layout["baby_step"])
    diagonals = plan.param(step, "diagonals")
    result = []
    for offset, row in zip(layout["offsets"], diagonals, strict=True):
        giant = (int(offset) // baby) * baby
        result.append((giant, int(offset) - giant, np.roll(pad_to_slots(row, slots), giant)))
    return result


class SlotProgram:
    """Runs a laid-out plan on one engine; keeps pre-rotated diagonals across runs."""

    def __init__(self, plan: Plan, engine: SlotEngine) -> None:
        self.plan = plan
        self.engine = engine
        self._diagonals: dict[str, list[tuple[int, int, np.ndarray]]] = {}

    def diagonals(self, step: Step) -> list[tuple[int, int, np.ndarray]]:
        if step.name not in self._diagonals:
            self._diagonals[step.name] = rotated_diagonals(self.plan, step, self.engine.slots)
        return self._diagonals[step.name]

    def linear(self, step: Step, ciphertext: Any) -> Any:
        engine = self.engine
        ciphertext = engine.prepare(ciphertext)
        entries = self.diagonals(step)
        babies = sorted({b for _, b, _ in entries if b})
        rotated = engine.rotations(ciphertext, babies) if babies else {}
        rotated[0] = ciphertext
        result = None
        for giant in sorted({g for g, _, _ in entries}):
            inner = None
            for index, (g, b, diagonal) in enumerate(entries):
                if g != giant:
                    continue
                term = engine.multiply_plain(rotated[b], diagonal, (step.name, index))
                inner = term if inner is None else engine.add(inner, term)
            if giant:
                inner = engine.rotate(inner, giant)
            result = inner if result is None else engine.add(result, inner)
        bias = self.plan.param(step, "bias_slots")
        if np.any(bias):
            result = engine.add_plain(result, pad_to_slots(bias, engine.slots),
                                      (step.name, "bias"))
        return result

    def execute_step(self, step: Step, args: list[Any]) -> Any:
        engine = self.engine
        if step.op in SLOT_MATRIX_OPS:
            return self.linear(step, args[0])
        if step.op == "Reshape":
            return args[0]
        if step.op == "Add":
            if len(args) == 2:
                return engine.add(args[0], args[1])
            constant = pad_to_slots(self.plan.param(step, "constant_slots"), engine.slots)
            return engine.add_plain(args[0], constant, (step.name, "constant"))
        if step.op == "Polynomial":
            coefficients = self.plan.param(step, "coefficients")
            if coefficients.shape[0] != 1:
                raise NotImplementedError("per-channel polynomials are not supported in FHE yet")
            a, b = (float(v) for v in self.plan.param(step, "interval"))
            return engine.chebyshev(args[0], coefficients[0], a, b)
        raise NotImplementedError(f"no slot-level kernel for {step.op}")

    def run(self, inputs: dict[str, Any]) -> tuple[dict[str, Any], list[StepTiming]]:
        env = dict(inputs)
        timings = []
        for step in self.plan.steps:
            start = time.perf_counter()
            result = self.execute_step(step, [env[v] for v in step.inputs])
            refresh = step.meta.get("bootstrap_after")
            if refresh is not None:
                result = self.engine.bootstrap(result, float(refresh.get("scale", 1.0)))
            env[step.outputs[0]] = result
            timings.append(StepTiming(step.name, step.op, time.perf_counter() - start))
        return {t.name: env[t.name] for t in self.plan.outputs}, timings


def has_layouts(plan: Plan) -> bool:
    return any("layout" in step.meta for step in plan.steps)
