"""plain backend: executes a plan's steps on numpy tensors (float64, or float32 on request).

Reads: a :class:`~picompile.plan.Plan` and the client's inputs.
Writes: a :class:`~picompile.runtime.backend.RunResult`.

This is the exact-arithmetic model of what the protected backends compute: the same steps, the
same parameters, the same (exact or polynomial) activations. A batch of inputs runs in one
vectorized pass when every step keeps axis 0 as the batch axis; otherwise sample by sample.
``precision="float32"`` computes in onnxruntime's precision (about twice as fast on large
convolutional models); float64, the default, is the reference the protected backends and the
accuracy figures are measured against.
"""

from __future__ import annotations

import time

import numpy as np

from picompile.errors import BackendError
from picompile.plan import Plan
from picompile.runtime.backend import Backend, RunResult, Stopwatch
from picompile.runtime.kernels import conv_matrix, execute_step, op_matrix

__all__ = ["PRECISIONS", "PlainBackend", "batch_preserving", "conv_matrix", "execute_step",
           "op_matrix"]
PRECISIONS = {"float64": np.float64, "float32": np.float32}


def batch_preserving(plan: Plan) -> bool:
    """True when axis 0 of every tensor is a batch axis of size 1 that no step mixes."""
    if any(not v.shape or v.shape[0] != 1 for v in plan.values.values()):
        return False
    for step in plan.steps:
        if step.op == "Transpose" and step.attrs["perm"][0] != 0:
            return False
        if step.op == "Concat" and step.attrs["axis"] == 0:
            return False
        if step.op in ("ReduceMean", "ReduceSum") and 0 in step.attrs["axes"]:
            return False
        if step.op == "Pad":
            rank = len(step.attrs["pads"]) // 2
            if step.attrs["pads"][0] or step.attrs["pads"][rank]:
                return False
    return all(
        np.ndim(plan.arrays[key]) < len(plan.values[step.inputs[0]].shape)
        or np.shape(plan.arrays[key])[0] == 1
        for step in plan.steps
        if step.op in ("Add", "Mul")
        for key in step.params.values()
    )


class PlainBackend(Backend):
    """Exact numpy execution of the plan (see module docstring).

    ``slot_level`` (default: when the plan has CKKS layouts) runs the FHE program itself —
    diagonals, rotations as np.roll, Chebyshev series — sample by sample. ``precision`` is the
    tensor-level arithmetic: "float64" (default) or "float32".
    """

    name = "plain"

    def __init__(self, slot_level: bool | None = None, precision: str = "float64") -> None:
        if precision not in PRECISIONS:
            raise BackendError(f"unknown precision {precision!r}: choose "
                               f"{' or '.join(PRECISIONS)}")
        if precision != "float64" and slot_level:
            raise BackendError("the slot-level simulation runs in float64 only")
        self.slot_level = slot_level
        self.precision = precision

    def execute(self, plan: Plan, inputs: dict[str, np.ndarray]) -> RunResult:
        from picompile.runtime.slot_program import has_layouts

        slot_level = self.slot_level
        if slot_level is None:  # hybrid plans run activations on shares, not in slots
            slot_level = has_layouts(plan) and plan.protocol == "fhe"
        if slot_level and self.precision == "float64":
            return self.execute_slots(plan, inputs)
        return self.execute_tensors(plan, inputs)

    def execute_slots(self, plan: Plan, inputs: dict[str, np.ndarray]) -> RunResult:
        from picompile.runtime.blocks import split_blocks
        from picompile.runtime.slot_program import (
            NumpySlots,
            SlotProgram,
            is_blocked,
            pack,
            unpack,
        )

        slots = plan.ckks.slots
        program = SlotProgram(plan, NumpySlots(slots))
        batch = next(iter(inputs.values())).shape[0]
        watch = Stopwatch()
        rows: dict[str, list[np.ndarray]] = {t.name: [] for t in plan.outputs}
        blocked = is_blocked(plan)
        for index in range(batch):
            packed = {k: pack(plan, k, v[index], slots) for k, v in inputs.items()}
            if blocked:
                packed = {k: split_blocks(v, slots) for k, v in packed.items()}
            outputs, timings = program.run(packed)
            watch.timings = timings
            for spec in plan.outputs:
                vector = outputs[spec.name]
                rows[spec.name].append(unpack(plan, spec.name, np.concatenate(vector)
                                              if blocked else vector))
        merged = {k: np.stack(v) for k, v in rows.items()}
        return RunResult(merged, timings=watch.timings, seconds=watch.elapsed,
                         backend=self.name + " (slot level)")

    def execute_tensors(self, plan: Plan, inputs: dict[str, np.ndarray]) -> RunResult:
        batch = next(iter(inputs.values())).shape[0] if inputs else 1
        expected_batch = plan.inputs[0].shape[0] if plan.inputs and plan.inputs[0].shape else 1
        if batch != expected_batch and not batch_preserving(plan):
            results = [self.execute_tensors(plan, {k: v[i:i + 1] for k, v in inputs.items()})
                       for i in range(batch)]
            merged = {k: np.concatenate([r.server_outputs[k] for r in results])
                      for k in results[0].server_outputs}
            return RunResult(merged, timings=results[0].timings,
                             seconds=sum(r.seconds for r in results), backend=self.name)
        watch = Stopwatch()
        dtype = PRECISIONS[self.precision]
        env: dict[str, np.ndarray] = {
            k: v.astype(dtype, copy=False) if v.dtype.kind == "f" else v
            for k, v in inputs.items()}
        for step in plan.steps:
            since = time.perf_counter()
            env[step.outputs[0]] = execute_step(plan, step, [env[v] for v in step.inputs], dtype)
            watch.record(step.name, step.op, since)
        outputs = {t.name: env[t.name] for t in plan.outputs}
        return RunResult(outputs, timings=watch.timings, seconds=watch.elapsed, backend=self.name)
