"""hybrid.kernels — the plan's steps in the integer forms the hybrid parties compute with.

Reads: a hybrid plan's weights and layouts (server side), activation polynomials, pooling
windows and public matrices (both sides).
Writes: :class:`LinearKernel` (a weight matrix as integers mod each BFV prime, and its blocked
diagonals), :class:`PublicLinear` (a weightless linear map on shares), Flash coefficients,
polynomial and max-pool evaluation on shares.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse

from picompile.errors import PlanError
from picompile.plan import Plan, Step
from picompile.runtime import mpc
from picompile.runtime.bfv import BlockPair, horner_mod, row_rotation
from picompile.runtime.hybrid.views import hybrid_meta, layout_meta, value_size
from picompile.runtime.plain import op_matrix
from picompile.runtime.tensor_ops import _pad_spatial, _windows

LIMB_BITS = 13  # w mod t (< 2^50) in 4 limbs: |W_int| < 2^24, so products stay below 2^63
LIMBS = 4


@dataclass
class LinearKernel:
    """Server-side integer form of one linear step (from the plan's weights)."""

    weight_bits: int
    matrix: scipy.sparse.csr_matrix   # (n_out, n_in) int64: round(W · 2^weight_bits)
    bias: np.ndarray                   # (n_out,) int64 at scale 2^(f + weight_bits)
    pairs: list[BlockPair]             # the blocked map for BFV (pre-rotated diagonals)
    slots: int
    input_blocks: int
    output_blocks: int

    @classmethod
    def from_plan(cls, plan: Plan, step: Step, fractional_bits: int) -> LinearKernel:
        layout = layout_meta(step)
        slots = layout.slots
        weight_bits = int(hybrid_meta(step).weight_bits)
        rows, cols, values, bias = op_matrix(plan, step)
        integer = np.rint(values * 2.0 ** weight_bits).astype(np.int64)
        n_in, n_out = value_size(plan, step.inputs[0]), value_size(plan, step.outputs[0])
        matrix = scipy.sparse.csr_matrix((integer, (rows, cols)), shape=(n_out, n_in),
                                         dtype=np.int64)
        bias_int = np.rint(bias * 2.0 ** (fractional_bits + weight_bits)).astype(np.int64)
        input_blocks = layout.input_blocks
        pair_of = (rows // slots) * input_blocks + cols // slots
        order = np.argsort(pair_of, kind="stable")
        pairs = []
        for pair in layout.pairs:
            key = pair.output_block * input_blocks + pair.input_block
            lo, hi = np.searchsorted(pair_of[order], [key, key + 1])
            chosen = order[lo:hi]
            local_rows = rows[chosen] % slots
            local = cols[chosen] % slots - local_rows
            offsets = np.asarray(pair.offsets, dtype=np.int64)
            position = np.searchsorted(offsets, local)
            if np.any(position >= len(offsets)) or np.any(offsets[np.minimum(
                    position, len(offsets) - 1)] != local):
                raise PlanError(f"{step.name}: the plan's layout does not match its weights")
            diagonals = np.zeros((len(offsets), slots), dtype=np.int32)
            diagonals[position, local_rows] = integer[chosen]
            baby = pair.baby_step
            entries = []
            for offset, row in zip(offsets.tolist(), diagonals, strict=True):
                giant = (offset // baby) * baby
                entries.append((row_rotation(giant, slots), row_rotation(offset - giant, slots),
                                np.roll(row, giant)))
            pairs.append(BlockPair(pair.output_block, pair.input_block, entries))
        return cls(weight_bits, matrix, bias_int, pairs, slots, input_blocks,
                   layout.output_blocks)

    def apply_mod(self, w: np.ndarray, t: int) -> np.ndarray:
        """W_int · w mod t exactly, for int64 w (limbs keep every partial sum below 2^63)."""
        residues = np.mod(w, t)
        partials = [np.mod(self.matrix @ ((residues >> (LIMB_BITS * limb))
                                          & ((1 << LIMB_BITS) - 1)), t) for limb in range(LIMBS)]
        return horner_mod(partials, LIMB_BITS, t)


@dataclass
class PublicLinear:
    """A linear step without weights (pooling, padding, subsampling): each party applies the
    public matrix to its own share. Integer matrices are exact on Z_2^64 shares; others are
    scaled by 2^f and truncated locally (SecureML)."""

    matrix: scipy.sparse.csr_matrix
    bias: np.ndarray
    rescale: bool

    @classmethod
    def from_plan(cls, plan: Plan, step: Step, fractional_bits: int) -> PublicLinear:
        rows, cols, values, bias = op_matrix(plan, step)
        integral = bool(np.all(values == np.rint(values)))
        scaled = values if integral else values * 2.0 ** fractional_bits
        n_in, n_out = value_size(plan, step.inputs[0]), value_size(plan, step.outputs[0])
        matrix = scipy.sparse.csr_matrix((np.rint(scaled).astype(np.int64), (rows, cols)),
                                         shape=(n_out, n_in), dtype=np.int64)
        return cls(matrix, bias, not integral)


@dataclass
class FlashPending:
    """A Flash quadratic not evaluated yet: the share of its input, applied under HE inside the
    next linear step (fused)."""

    step: Step
    share: np.ndarray

    def reshape(self, shape: tuple[int, ...]) -> FlashPending:
        return self


# --------------------------------------------------------------------------- activations


def _power_coefficients(plan: Plan, step: Step) -> np.ndarray:
    """An activation's polynomial in the power basis on its input (stored by the compiler):
    one row per channel (or a single row), columns by ascending degree."""
    if "power_coefficients" not in step.params:
        raise PlanError(f"step {step.name!r} lacks its power-basis coefficients: recompile")
    return np.atleast_2d(plan.param(step, "power_coefficients"))


def _channel_groups(plan: Plan, step: Step) -> np.ndarray:
    """Per element of a step's input: its channel (axis 1), for per-channel coefficients."""
    shape = tuple(plan.values[step.inputs[0]].shape)
    if len(shape) < 2:
        return np.zeros(shape, dtype=np.int64)
    index = np.arange(shape[1]).reshape((1, shape[1]) + (1,) * (len(shape) - 2))
    return np.broadcast_to(index, shape)


def flash_coefficients(plan: Plan, step: Step) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per element of the activation's input: round(2^c · (a, b, k)) of a·y² + b·y + k."""
    bits = int(hybrid_meta(step).coefficient_bits)
    power = _power_coefficients(plan, step)
    groups = _channel_groups(plan, step).reshape(-1)
    rows = power[groups] if power.shape[0] > 1 else np.broadcast_to(power[0], (groups.size, 3))
    scaled = np.rint(rows * 2.0 ** bits).astype(np.int64)
    return scaled[:, 2], scaled[:, 1], scaled[:, 0]


def polynomial_on_shares(session: mpc.Session, plan: Plan, step: Step, x: mpc.Shared,
                         elements: np.ndarray | None = None) -> mpc.Shared:
    """A Polynomial step on shares (Beaver multiplications), per-channel coefficients if any.

    ``elements``: a boolean mask over the step's flattened input when ``x`` holds only those
    elements (the polynomial channels of a partial ReLU)."""
    power = _power_coefficients(plan, step)
    if power.shape[0] == 1:
        coefficients = [float(c) for c in power[0]]
    else:
        groups = _channel_groups(plan, step)
        if elements is not None:
            groups = groups.reshape(-1)[elements]
        coefficients = [power[:, k][groups] for k in range(power.shape[1])]
    return mpc.polynomial(session, x, coefficients)


def activation_on_shares(session: mpc.Session, plan: Plan, step: Step, x: mpc.Shared
                         ) -> mpc.Shared:
    """A Polynomial step on shares; a partial ReLU runs the secure ReLU on its exact channels'
    elements only and the polynomial on the others."""
    exact = plan.exact_relu_elements(step)
    if exact is None:
        return polynomial_on_shares(session, plan, step, x)
    p0, p1 = x.p0.reshape(-1), x.p1.reshape(-1)
    out = [np.empty_like(p0), np.empty_like(p1)]
    if np.any(exact):
        relu = mpc.relu(session, mpc.Shared(p0[exact], p1[exact]))
        out[0][exact], out[1][exact] = relu.p0, relu.p1
    if not np.all(exact):
        rest = ~exact
        poly = polynomial_on_shares(session, plan, step, mpc.Shared(p0[rest], p1[rest]), rest)
        out[0][rest], out[1][rest] = poly.p0, poly.p1
    return mpc.Shared(out[0].reshape(x.shape), out[1].reshape(x.shape))


def max_pool_windows(plan: Plan, step: Step) -> tuple[np.ndarray, np.ndarray]:
    """Index array (out_size, window) into the flat input, and a mask of padded positions."""
    shape = tuple(plan.values[step.inputs[0]].shape)
    attrs = step.attrs
    index = np.arange(int(np.prod(shape)), dtype=np.float64).reshape(shape)
    padded = _pad_spatial(index, attrs.get("pads", [0] * 4), value=-1.0)
    windows = _windows(padded, attrs["kernel_shape"], attrs.get("strides", [1, 1]),
                       attrs.get("dilations", [1, 1]))
    windows = np.asarray(windows)
    out_shape = tuple(plan.values[step.outputs[0]].shape)
    flat = windows.reshape(int(np.prod(out_shape)), -1).astype(np.int64)
    return np.where(flat < 0, 0, flat), flat < 0
