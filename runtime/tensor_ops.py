"""Vectorized numpy kernels for the canonical ops, on tensors with a leading batch axis.

Reads: numpy arrays and the attributes a plan step carries.
Writes: numpy arrays. No Python loops over elements: a convolution is ``sliding_window_view``
windows laid out as GEMM columns, pooling an elementwise reduction over the kernel's taps.
"""

from __future__ import annotations

import math

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from picompile.plan import activations


def _windows(x: np.ndarray, kernel: list[int], strides: list[int], dilations: list[int]
             ) -> np.ndarray:
    """(N, C, *out, *kernel) windows of a padded (N, C, *spatial) tensor."""
    rank = len(kernel)
    extents = [(k - 1) * d + 1 for k, d in zip(kernel, dilations, strict=True)]
    axes = tuple(range(2, 2 + rank))
    view = sliding_window_view(x, extents, axis=axes)
    out_slices = tuple(slice(None, None, s) for s in strides)
    kernel_slices = tuple(slice(None, None, d) for d in dilations)
    return view[(slice(None), slice(None)) + out_slices + kernel_slices]


def _pad_spatial(x: np.ndarray, pads: list[int], value: float = 0.0) -> np.ndarray:
    rank = len(pads) // 2
    width = [(0, 0), (0, 0)] + [(pads[i], pads[rank + i]) for i in range(rank)]
    if not any(pads):
        return x
    return np.pad(x, width, mode="constant", constant_values=value)


def conv(x: np.ndarray, weight: np.ndarray, bias: np.ndarray, strides: list[int],
         pads: list[int], dilations: list[int], group: int, **_: object) -> np.ndarray:
    """N-d grouped convolution (ONNX Conv semantics): one GEMM per group over the whole batch.

    The columns are laid out (input channel × tap, sample × output position), so that one
    product ``weight (m/g, c/g·k) @ columns`` covers every sample (BLAS-sized, 3–5× faster than a
    GEMM per sample on a calibration batch); a pointwise stride-1 convolution uses the input
    itself as its columns (no copy).
    """
    rank = weight.ndim - 2
    n, c = x.shape[:2]
    m = weight.shape[0]
    kernel = list(weight.shape[2:])
    dtype = np.result_type(x.dtype, weight.dtype)
    kernel_rows = weight.reshape(group, m // group, -1).astype(dtype, copy=False)
    if all(k == 1 for k in kernel) and all(s == 1 for s in strides) and not any(pads):
        out_spatial = tuple(x.shape[2:])
        columns = x.reshape(n, group, c // group, -1)
        y = np.matmul(kernel_rows, columns.astype(dtype, copy=False))  # (n, g, m/g, positions)
        y = y.reshape((n, m) + out_spatial)
    else:
        windows = _windows(_pad_spatial(x, pads), kernel, strides, dilations)
        out_spatial = tuple(windows.shape[2:2 + rank])
        positions = int(np.prod(out_spatial))
        # (n, c, *out, *k) -> (c, *k, n, *out) -> (g, c/g · k, n · positions)
        order = (1,) + tuple(range(2 + rank, 2 + 2 * rank)) + (0,) + tuple(range(2, 2 + rank))
        columns = windows.transpose(order).reshape(group, -1, n * positions)
        y = np.matmul(kernel_rows, columns.astype(dtype, copy=False))  # (g, m/g, n · positions)
        y = np.ascontiguousarray(y.reshape((m, n) + out_spatial).swapaxes(0, 1))
    y += bias.reshape((1, m) + (1,) * rank).astype(y.dtype, copy=False)
    return y


def linear(x: np.ndarray, weight: np.ndarray, bias: np.ndarray) -> np.ndarray:
    return x @ weight.T + bias


def channel_affine(x: np.ndarray, scale: np.ndarray, shift: np.ndarray) -> np.ndarray:
    shape = (1, -1) + (1,) * (x.ndim - 2)
    return x * scale.reshape(shape) + shift.reshape(shape)


def _pool_output_padding(x: np.ndarray, kernel: list[int], strides: list[int], pads: list[int],
                         dilations: list[int], ceil_mode: int) -> list[int]:
    """Extra end padding so that ceil_mode windows exist (windows must start inside)."""
    rank = len(kernel)
    extra = []
    for axis in range(rank):
        size = x.shape[2 + axis] + pads[axis] + pads[rank + axis]
        extent = (kernel[axis] - 1) * dilations[axis] + 1
        if ceil_mode:
            out = math.ceil((size - extent) / strides[axis]) + 1
            if (out - 1) * strides[axis] >= x.shape[2 + axis] + pads[axis]:
                out -= 1
        else:
            out = (size - extent) // strides[axis] + 1
        extra.append(max((out - 1) * strides[axis] + extent - size, 0))
    return extra


def _tap_views(x: np.ndarray, kernel: list[int], strides: list[int], dilations: list[int]):
    """For each kernel tap, the strided view of a padded (N, C, *spatial) tensor that the tap
    reads at every output position (pooling reduces these elementwise: no window copies)."""
    rank = len(kernel)
    out = [(x.shape[2 + a] - (kernel[a] - 1) * dilations[a] - 1) // strides[a] + 1
           for a in range(rank)]
    for tap in np.ndindex(*kernel):
        index = tuple(slice(t * d, t * d + (o - 1) * s + 1, s)
                      for t, d, o, s in zip(tap, dilations, out, strides, strict=True))
        yield x[(slice(None), slice(None)) + index]


def _reduce_taps(x: np.ndarray, kernel: list[int], strides: list[int], dilations: list[int],
                 combine) -> np.ndarray:
    views = _tap_views(x, kernel, strides, dilations)
    result = next(views).copy()
    for view in views:
        combine(result, view, out=result)
    return result


def max_pool(x: np.ndarray, kernel_shape: list[int], strides: list[int], pads: list[int],
             dilations: list[int], ceil_mode: int = 0, **_: object) -> np.ndarray:
    rank = len(kernel_shape)
    extra = _pool_output_padding(x, kernel_shape, strides, pads, dilations, ceil_mode)
    full = pads[:rank] + [p + e for p, e in zip(pads[rank:], extra, strict=True)]
    return _reduce_taps(_pad_spatial(x, full, -np.inf), kernel_shape, strides, dilations,
                        np.maximum)


def average_pool(x: np.ndarray, kernel_shape: list[int], strides: list[int], pads: list[int],
                 dilations: list[int], ceil_mode: int = 0, count_include_pad: int = 0,
                 **_: object) -> np.ndarray:
    rank = len(kernel_shape)
    extra = _pool_output_padding(x, kernel_shape, strides, pads, dilations, ceil_mode)
    full = pads[:rank] + [p + e for p, e in zip(pads[rank:], extra, strict=True)]
    sums = _reduce_taps(_pad_spatial(x, full), kernel_shape, strides, dilations, np.add)
    # Divisor: window cells inside the input (and inside the declared pads when counted).
    inside = np.ones((1, 1) + x.shape[2:], dtype=x.dtype)
    if count_include_pad:
        inside = _pad_spatial(inside, pads, 1.0)
        inside = _pad_spatial(inside, [0] * rank + extra, 0.0)
    else:
        inside = _pad_spatial(inside, full, 0.0)
    counts = _reduce_taps(inside, kernel_shape, strides, dilations, np.add)
    return sums / counts


def lrn(x: np.ndarray, size: int, alpha: float, beta: float, bias: float) -> np.ndarray:
    """Local response normalization across channels (axis 1, ONNX LRN): x divided by
    (bias + alpha/size · sum of x² over the ``size`` neighbouring channels)^beta."""
    before, after = (size - 1) // 2, size - 1 - (size - 1) // 2
    squares = np.pad(np.square(x), [(0, 0), (before, after)] + [(0, 0)] * (x.ndim - 2))
    running = np.cumsum(squares, axis=1)
    running = np.concatenate([np.zeros_like(running[:, :1]), running], axis=1)
    window = running[:, size:] - running[:, :-size]  # (N, C, ...): channels c-before..c+after
    return x / np.power(bias + (alpha / size) * window, beta)


def global_average_pool(x: np.ndarray) -> np.ndarray:
    return x.mean(axis=tuple(range(2, x.ndim)), keepdims=True)


def pad(x: np.ndarray, pads: list[int], mode: str, value: float) -> np.ndarray:
    rank = x.ndim
    width = [(pads[i], pads[rank + i]) for i in range(rank)]
    if mode == "constant":
        return np.pad(x, width, mode="constant", constant_values=value)
    return np.pad(x, width, mode="reflect" if mode == "reflect" else "edge")


def activation(op: str, x: np.ndarray, attrs: dict, slope: np.ndarray | None = None
               ) -> np.ndarray:
    """Exact nonlinearities: the plan's one table (``picompile.plan.activations``)."""
    return activations.evaluate(op, x, attrs, slope)


def chebyshev_series(x: np.ndarray, coefficients: np.ndarray, interval: np.ndarray
                     ) -> np.ndarray:
    """Evaluate Chebyshev series on [a, b]: one row of coefficients, or one per channel (axis 1).

    ``coefficients`` is (rows, degree+1); ``interval`` is (a, b).
    """
    a, b = float(interval[0]), float(interval[1])
    t = (2.0 * x - (a + b)) / (b - a)
    if coefficients.shape[0] == 1:
        return np.polynomial.chebyshev.chebval(t, coefficients[0])
    shape = (coefficients.shape[1], 1, coefficients.shape[0]) + (1,) * (x.ndim - 2)
    return np.polynomial.chebyshev.chebval(t, coefficients.T.reshape(shape), tensor=False)


def partial_relu(x: np.ndarray, polynomial: np.ndarray, relu_channels: np.ndarray
                 ) -> np.ndarray:
    """A partial ReLU layer: ``relu(x)`` on the channels (axis 1) where ``relu_channels`` is 1,
    the polynomial's values elsewhere."""
    exact = np.asarray(relu_channels).reshape((1, -1) + (1,) * (x.ndim - 2)) > 0.5
    return np.where(exact, np.maximum(x, 0), polynomial).astype(polynomial.dtype, copy=False)
