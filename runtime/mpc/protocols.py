"""mpc.protocols — the nonlinear layers on shares: ReLU, max, and low-degree polynomials.

Reads: :class:`~.sharing.Shared` activations, public (possibly per-channel) coefficients, and a
:class:`~.session.Session`.
Writes: :class:`~.sharing.Shared` results, built from the boolean circuits (:mod:`.boolean`) and
the Beaver products (:mod:`.arithmetic`). ReLU and each level of a max tree take 9 rounds;
polynomials 0, 0, 1, 2 rounds for degree 0..3.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from picompile.runtime.mpc.arithmetic import (
    add,
    add_public_ring,
    mul,
    mul_public_int,
    same_shape,
    square,
    sub,
    truncate,
)
from picompile.runtime.mpc.boolean import b2a, drelu
from picompile.runtime.mpc.session import Session
from picompile.runtime.mpc.sharing import Shared


def relu(sess: Session, x: Shared) -> Shared:
    """ReLU(x) = x * DReLU(x): DReLU (7 rounds), B2A (1), Beaver product (1) = 9 rounds.

    The bit is the integer 0 or 1 (scale 1, not 2^f), so the product is not truncated: the result
    is exactly x or 0, in the ring and in fixed point (no truncation error, no failure)."""
    bit = b2a(sess, drelu(sess, x))
    return mul(sess, x, bit, rescale=False)


def max_pool_pairwise(sess: Session, a: Shared, b: Shared) -> Shared:
    """Elementwise max(a, b) = b + ReLU(a - b); exact when |a - b| < 2^63 (signed)."""
    a, b = same_shape(a, b)
    return add(b, relu(sess, sub(a, b)))


def maximum_reduce(sess: Session, x: Shared, axis: int = -1) -> Shared:
    """Max over ``axis`` by a tree of pairwise maxima: ceil(log2 k) levels of 9 rounds each for an
    axis of length k (an odd element out waits for the next level)."""
    p0, p1 = np.moveaxis(x.p0, axis, 0), np.moveaxis(x.p1, axis, 0)
    if p0.shape[0] == 0:
        raise ValueError("maximum_reduce over an empty axis")
    cur = Shared(p0, p1)
    while cur.shape[0] > 1:
        k = cur.shape[0]
        h = k // 2
        m = max_pool_pairwise(sess, Shared(cur.p0[0:2 * h:2], cur.p1[0:2 * h:2]),
                              Shared(cur.p0[1:2 * h:2], cur.p1[1:2 * h:2]))
        if k % 2:
            m = Shared(np.concatenate([m.p0, cur.p0[-1:]]), np.concatenate([m.p1, cur.p1[-1:]]))
        cur = m
    return Shared(cur.p0[0], cur.p1[0])


def polynomial(sess: Session, x: Shared, power_coeffs: Sequence[object]) -> Shared:
    """sum_k c_k x^k for degree <= 3 with public real coefficients c_k (scalars or arrays that
    broadcast to x's shape, e.g. per channel).

    x^2 = square (1 round), x^3 = mul(x^2, x) (a 2nd round), each truncated by f; then
    sum_{k>=1} encode(c_k) * x^k at scale 2^(2f), one truncation, plus encode(c_0). Rounds: 0, 0,
    1, 2 for degree 0..3. Largest intermediate: |c_k x^k| * 2^(2f), which must stay well below
    2^63 (truncation failure probability |value| / 2^64).
    """
    coeffs = list(power_coeffs)
    if not 1 <= len(coeffs) <= 4:
        raise ValueError("polynomial supports degree 0 to 3")
    fp, deg = sess.fp, len(coeffs) - 1
    powers = {1: x}
    if deg >= 2:
        powers[2] = square(sess, x)
    if deg >= 3:
        powers[3] = mul(sess, powers[2], x)
    zeros = np.zeros(x.shape, dtype=np.uint64)
    acc = Shared(zeros, zeros.copy())
    for k in range(1, deg + 1):
        ck = np.broadcast_to(fp.encode(coeffs[k]), x.shape)
        acc = add(acc, mul_public_int(powers[k], ck.view(np.int64)))
    if deg >= 1:
        acc = truncate(acc, fp.fractional_bits)
    return add_public_ring(acc, np.broadcast_to(fp.encode(coeffs[0]), x.shape))


def quadratic(sess: Session, x: Shared, a: object, b: object, c: object) -> Shared:
    """a*x^2 + b*x + c with per-element (e.g. per-channel) coefficient arrays: one square."""
    return polynomial(sess, x, [c, b, a])
