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
from picompile.plan import ACTIVATION_OPS, Plan, Step
from picompile.runtime import tensor_ops
from picompile.runtime.backend import Backend, RunResult, Stopwatch

BASIS_CHUNK = 512
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


def execute_step(plan: Plan, step: Step, args: list[np.ndarray],
                 dtype: type = np.float64) -> np.ndarray:
    """Apply one step to its input tensors (leading batch axis); weights are used in ``dtype``."""
    op, attrs = step.op, step.attrs
    x = args[0]

    def param(key: str) -> np.ndarray:
        value = plan.param(step, key)
        return value.astype(dtype, copy=False) if value.dtype.kind == "f" else value

    if op == "Conv":
        return tensor_ops.conv(x, param("weight"), param("bias"), **attrs)
    if op == "Linear":
        return tensor_ops.linear(x, param("weight"), param("bias"))
    if op == "ChannelAffine":
        return tensor_ops.channel_affine(x, param("scale"), param("shift"))
    if op == "Add":
        return x + (args[1] if len(args) > 1 else param("constant"))
    if op == "Mul":
        return x * (args[1] if len(args) > 1 else param("constant"))
    if op == "Product":
        return x * args[1]
    if op == "Polynomial":
        y = tensor_ops.chebyshev_series(x, param("coefficients"), param("interval"))
        if "relu_channels" in step.params:
            y = tensor_ops.partial_relu(x, y, param("relu_channels"))
        return y
    if op in ACTIVATION_OPS:
        slope = param("slope") if op == "PRelu" else None
        return tensor_ops.activation(op, x, attrs, slope)
    if op == "MaxPool":
        return tensor_ops.max_pool(x, **attrs)
    if op == "AveragePool":
        return tensor_ops.average_pool(x, **attrs)
    if op == "GlobalAveragePool":
        return tensor_ops.global_average_pool(x)
    if op == "LRN":
        return tensor_ops.lrn(x, **attrs)
    if op == "ReduceMean":
        return x.mean(axis=tuple(attrs["axes"]), keepdims=bool(attrs["keepdims"]))
    if op == "ReduceSum":
        return x.sum(axis=tuple(attrs["axes"]), keepdims=bool(attrs["keepdims"]))
    if op == "Pad":
        return tensor_ops.pad(x, attrs["pads"], attrs["mode"], attrs["value"])
    if op == "Concat":
        return np.concatenate(args, axis=attrs["axis"])
    if op == "Reshape":
        target = tuple(attrs["shape"])
        if x.size != int(np.prod(target)):  # a batch of inputs: axis 0 is the batch axis
            target = (x.shape[0],) + target[1:]
        return x.reshape(target)
    if op == "Transpose":
        return x.transpose(attrs["perm"])
    raise NotImplementedError(f"plain backend has no kernel for {op}")


def op_matrix(plan: Plan, step: Step) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(rows, cols, values) of a linear step's sparse matrix from flat input to flat output, and
    its constant term: the plain kernel applied to basis vectors in chunks (so every linear op
    the plain runtime executes has a matrix without op-specific code)."""
    in_shape = tuple(plan.values[step.inputs[0]].shape)
    in_size = int(np.prod(in_shape))
    bias = execute_step(plan, step, [np.zeros((1,) + in_shape[1:])]).reshape(-1)
    if step.op == "Conv" and in_shape[0] == 1:
        return conv_matrix(plan, step) + (bias,)
    rows, cols, values = [], [], []
    for start in range(0, in_size, BASIS_CHUNK):
        count = min(BASIS_CHUNK, in_size - start)
        basis = np.zeros((count, in_size))
        basis[np.arange(count), start + np.arange(count)] = 1.0
        response = execute_step(plan, step, [basis.reshape((count,) + in_shape[1:])])
        response = response.reshape(count, -1) - bias
        column, row = np.nonzero(response)
        rows.append(row)
        cols.append(column + start)
        values.append(response[column, row])
    return np.concatenate(rows), np.concatenate(cols), np.concatenate(values), bias



def conv_matrix(plan: Plan, step: Step) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(rows, cols, values) of a Conv step directly from its weights: the im2col windows of a
    tensor of flat input indices (padding marked −1) say which input each weight touches."""
    attrs = step.attrs
    weight = plan.param(step, "weight")
    in_shape = tuple(plan.values[step.inputs[0]].shape)
    index = np.arange(int(np.prod(in_shape)), dtype=np.float64).reshape(in_shape)
    padded = tensor_ops._pad_spatial(index, attrs["pads"], value=-1.0)
    windows = tensor_ops._windows(padded, list(weight.shape[2:]), attrs["strides"],
                                  attrs["dilations"])[0]           # (C, *out, *kernel)
    channels, group = in_shape[1], int(attrs["group"])
    rank = weight.ndim - 2
    positions = int(np.prod(windows.shape[1:1 + rank]))
    taps = int(np.prod(weight.shape[2:]))
    windows = windows.reshape(group, channels // group, positions, taps).astype(np.int64)
    out_channels = weight.shape[0]
    per_group = out_channels // group
    # (out channel, position, input channel in group, tap)
    cols = np.repeat(windows.transpose(0, 2, 1, 3), per_group, axis=0)
    values = np.broadcast_to(weight.reshape(out_channels, 1, channels // group, taps),
                             cols.shape)
    rows = np.broadcast_to((np.arange(out_channels)[:, None] * positions
                            + np.arange(positions)[None, :])[:, :, None, None], cols.shape)
    keep = (cols >= 0) & (values != 0)
    return rows[keep], cols[keep], values[keep].astype(np.float64)


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
