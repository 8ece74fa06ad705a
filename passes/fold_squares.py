"""fold_squares — evaluate a degree-2 activation in one level by folding it into its producer.

Reads: the approximated IR of an FHE plan: ``Polynomial`` nodes of degree 2 (Chebyshev
coefficients on ``interval``, one row or one per channel) and the linear node producing their
input (Conv, Linear or ChannelAffine, with no other consumer).
Writes: a rewritten, equivalent graph. With ``p(x) = a·x² + b·x + c`` per channel and all
``a > 0``::

    p(x) = (√a·(x + β))² + γ,    β = b / 2a,    γ = c − b² / 4a

so the producer's output channels are scaled by ``√a`` and shifted by ``√a·β`` (its weights
and bias change) and the activation becomes ``s² + γ``: one ciphertext square, no scalar
product, **one level instead of two** (the power-basis product tree's ``a·x`` costs a level of
its own). The node keeps its approximation record and gets ``meta["folded_square"]`` (the
levels pass charges it one level, the runtime's power series sees the unit leading
coefficient) and its ``interval`` becomes the range of ``s``.

Not folded (left as they are): a leading coefficient ≤ 0 in some channel (the sign would cost
a plaintext product), an offset ``|γ|`` above ``MAX_OFFSET`` (``s²`` and ``γ`` would cancel
and lose CKKS precision), producers without weights (pooling) or with other consumers (a
residual branch reads the unscaled value). A folded square whose output is refreshed with range
scaling spends one level on the division (``slot_program.folds_range_scale``).
"""

from __future__ import annotations

import numpy as np

from picompile.approx.basis import chebyshev_to_power, power_to_chebyshev
from picompile.ir import Graph, Node

NAME = "fold_squares"
#: Producers whose output channels carry their own scale and shift.
FOLDABLE_PRODUCERS = frozenset({"Conv", "Linear", "ChannelAffine"})
#: Largest |γ| folded: s² and γ nearly cancel when b²/4a is large, and CKKS's absolute error
#: grows with the operands (2^16 keeps it ≈ 2^16·2^-40, far below the fit error).
MAX_OFFSET = float(2 ** 16)
#: Leading coefficients below this (relative to the largest coefficient) count as zero.
RELATIVE_ZERO = 1e-9


def foldable_producer(graph: Graph, node: Node) -> Node | None:
    """The linear node a degree-2 activation could be folded into (structure only)."""
    value = node.inputs[0]
    producer = graph.producer(value)
    if producer is None or producer.op not in FOLDABLE_PRODUCERS:
        return None
    if value in graph.outputs or len(graph.consumers(value)) != 1:
        return None
    return producer


def power_form(coefficients: np.ndarray, interval: np.ndarray) -> np.ndarray:
    """(rows, 3) power coefficients (c, b, a) of degree-2 Chebyshev series on ``interval``."""
    rows = np.atleast_2d(np.asarray(coefficients, dtype=np.float64))
    power = np.zeros((rows.shape[0], 3))
    converted = chebyshev_to_power(rows, interval)
    power[:, :converted.shape[1]] = converted
    return power


def completed_square(power: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """(√a, β, γ) per row with p = (√a·(x + β))² + γ, or None when some row cannot fold.

    A constant row (a channel whose ReLU input never changes sign: a dead channel's fit is
    p = c) folds with √a = 0: the producer writes 0 there and the square adds γ = c."""
    c, b, a = power[:, 0], power[:, 1], power[:, 2]
    tolerance = RELATIVE_ZERO * max(float(np.max(np.abs(power))), 1e-300)
    constant = (np.abs(a) <= tolerance) & (np.abs(b) <= tolerance)
    if np.any((a <= tolerance) & ~constant):
        return None
    safe = np.where(constant, 1.0, a)
    beta = np.where(constant, 0.0, b / (2.0 * safe))
    gamma = np.where(constant, c, c - b * b / (4.0 * safe))
    if np.any(np.abs(gamma) > MAX_OFFSET):
        return None
    return np.where(constant, 0.0, np.sqrt(safe)), beta, gamma


def would_fold(graph: Graph, node: Node, coefficients: np.ndarray, interval) -> bool:
    """True when a degree-2 fit (Chebyshev ``coefficients`` on ``interval``) of ``node``'s
    activation will be folded into the node's producer (the degree search and the approximate
    pass cost it at one level)."""
    if np.shape(coefficients)[-1] != 3 or foldable_producer(graph, node) is None:
        return False
    power = power_form(coefficients, np.asarray(interval, dtype=np.float64))
    return completed_square(power) is not None


def scale_producer(producer: Node, root: np.ndarray, beta: np.ndarray) -> None:
    """Scale the producer's output channels by ``root`` and shift them by ``root·beta``."""
    if producer.op == "ChannelAffine":
        scale = np.asarray(producer.meta["scale"], dtype=np.float64)
        shift = np.asarray(producer.meta["shift"], dtype=np.float64)
        producer.meta.pop("_bound", None)  # its output is rescaled: measured again by levels
        producer.meta["scale"] = scale * root
        producer.meta["shift"] = (shift + beta) * root
        return
    weight = np.asarray(producer.meta["weight"], dtype=np.float64)
    channels = weight.shape[0]
    bias = np.asarray(producer.meta.get("bias", np.zeros(channels)), dtype=np.float64)
    root = np.broadcast_to(root, (channels,))
    beta = np.broadcast_to(beta, (channels,))
    producer.meta.pop("_bound", None)
    producer.meta["weight"] = weight * root.reshape((-1,) + (1,) * (weight.ndim - 1))
    producer.meta["bias"] = (bias + beta) * root


def fold(graph: Graph, node: Node) -> bool:
    """Fold one degree-2 Polynomial into its producer; False (nothing changed) if it cannot."""
    if node.op != "Polynomial" or int(node.attrs["degree"]) != 2 or "relu_channels" in node.meta:
        return False  # (a partial ReLU keeps its exact channels: nothing to fold)
    producer = foldable_producer(graph, node)
    if producer is None:
        return False
    interval = np.asarray(node.meta["interval"], dtype=np.float64)
    square = completed_square(power_form(node.meta["coefficients"], interval))
    if square is None:
        return False
    root, beta, gamma = square
    channels = graph.shape(node.inputs[0])[1] if len(graph.shape(node.inputs[0])) > 1 else 1
    if root.size > 1 and root.size != channels:
        return False
    scale_producer(producer, root, beta)
    # the range of s = √a·(x + β) over every channel's x in the old interval
    ends = root[:, None] * (interval[None, :] + beta[:, None])
    low, high = float(ends.min()), float(ends.max())
    if high - low < 1e-12:
        low, high = low - 1.0, high + 1.0
    squares = np.column_stack([gamma, np.zeros(gamma.size), np.ones(gamma.size)])  # s² + γ
    rows = power_to_chebyshev(squares, (low, high))
    if np.allclose(gamma, gamma[0], rtol=0, atol=0):
        rows = rows[:1]
    node.meta["coefficients"] = rows
    node.meta["interval"] = np.array([low, high])
    node.meta["folded_square"] = True
    node.meta["approximation"] = {**node.meta.get("approximation", {}), "folded_square": True}
    return True


def run(graph: Graph, context) -> list[str]:
    folded = [node.name for node in graph.nodes() if fold(graph, node)]
    if not folded:
        return ["no degree-2 activation folded"]
    return [f"{len(folded)} degree-2 activations folded into their producers (one level each "
            "instead of two)"]
