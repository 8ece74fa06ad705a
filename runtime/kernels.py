"""kernels — one plan step on numpy tensors, and a linear step as a sparse matrix.

Reads: a :class:`~picompile.plan.Plan`'s steps and parameter arrays.
Writes: output tensors (:func:`execute_step`, float64 or float32) and (rows, cols, values, bias)
of a linear step's matrix from flat input to flat output (:func:`op_matrix`; Conv straight from
its weights, :func:`conv_matrix`).

The plain backend (``runtime/plain.py``) runs plans with these kernels; the compiler simulates
with them (``runtime/interface``); the CKKS slot program builds the diagonals of linear steps
over several ciphertexts from :func:`op_matrix` (``runtime/blocks``). This module imports no
other backend.
"""

from __future__ import annotations

import numpy as np

from picompile.plan import ACTIVATION_OPS, Plan, Step
from picompile.runtime import tensor_ops

BASIS_CHUNK = 512


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
