"""The backend interface every runtime implements, and the record a run returns.

Reads: a :class:`~picompile.plan.Plan` and the client's input tensors.
Writes: a :class:`RunResult` — the server part's output tensors plus per-step timings.

A backend executes the plan's steps (the part that runs on protected data). The client-side
plaintext head is applied afterwards by :func:`picompile.runtime.run_plan`, the same for every
backend.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from picompile.errors import InputError
from picompile.plan import Plan


@dataclass
class StepTiming:
    step: str
    op: str
    seconds: float
    bytes_sent: int = 0
    bytes_received: int = 0


@dataclass
class RunResult:
    """What a run produced: server outputs by name, model outputs after the head, timings."""

    server_outputs: dict[str, np.ndarray]
    outputs: dict[str, Any] = field(default_factory=dict)
    timings: list[StepTiming] = field(default_factory=list)
    seconds: float = 0.0
    backend: str = ""
    communication: dict[str, Any] = field(default_factory=dict)  # hybrid: bytes, flights, times

    def profile(self) -> dict[str, Any]:
        return {
            "backend": self.backend,
            "seconds": self.seconds,
            **({"communication": self.communication} if self.communication else {}),
            "steps": [vars(t) for t in self.timings],
        }


class Backend(ABC):
    """Executes a plan's steps. Subclasses: plain (numpy), ckks, hybrid."""

    name = "abstract"

    @abstractmethod
    def execute(self, plan: Plan, inputs: dict[str, np.ndarray]) -> RunResult:
        """Run every step on ``inputs`` (validated, float64, leading batch axis)."""


def normalize_inputs(plan: Plan, x: np.ndarray | dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Match user inputs to the plan's input specs; raises InputError on a mismatch.

    An input may have the plan's exact shape, or lack the batch axis, or (when the plan's
    batch axis is 1) carry a batch of any size.
    """
    if not isinstance(x, dict):
        if len(plan.inputs) != 1:
            names = ", ".join(t.name for t in plan.inputs)
            raise InputError(f"this plan takes {len(plan.inputs)} inputs ({names}): pass a dict")
        x = {plan.inputs[0].name: x}
    unknown = set(x) - {t.name for t in plan.inputs}
    if unknown:
        raise InputError(f"unknown input(s) {sorted(unknown)}; the plan's inputs are "
                         f"{[t.name for t in plan.inputs]}")
    result = {}
    for spec in plan.inputs:
        if spec.name not in x:
            raise InputError(f"missing input {spec.name!r}")
        array = np.asarray(x[spec.name])
        if not np.issubdtype(array.dtype, np.number):
            raise InputError(f"input {spec.name!r} must be numeric, got {array.dtype}")
        shape = tuple(spec.shape)
        if array.shape == shape:
            pass
        elif shape and array.shape == shape[1:] and shape[0] == 1:
            array = array[None]
        elif shape and shape[0] == 1 and array.shape[1:] == shape[1:] and array.ndim == len(shape):
            pass  # a batch of inputs
        else:
            raise InputError(
                f"input {spec.name!r} has shape {array.shape}, but the plan expects "
                f"{shape} (batch axis first)"
            )
        if not np.all(np.isfinite(array)):
            raise InputError(f"input {spec.name!r} contains NaN or infinity")
        result[spec.name] = array.astype(np.float64)
    return result


class Stopwatch:
    """Times each step of a run into a list of StepTiming."""

    def __init__(self) -> None:
        self.timings: list[StepTiming] = []
        self.start = time.perf_counter()

    def record(self, step_name: str, op: str, since: float, **counters: int) -> None:
        self.timings.append(StepTiming(step_name, op, time.perf_counter() - since, **counters))

    @property
    def elapsed(self) -> float:
        return time.perf_counter() - self.start
