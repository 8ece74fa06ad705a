"""mpc.arithmetic — linear operations on additive shares, truncation and Beaver products.

Reads: :class:`~.sharing.Shared` operands, public constants, and (for the products) the
session's dealer and ``open_``.
Writes: new :class:`~.sharing.Shared` results. The local ops (add, sub, neg, public constants,
truncate) send nothing; ``mul`` and ``square`` take one online round and one dealer flight each.

Truncation (SecureML, Mohassel-Zhang 2017) is local: P0 computes s0 >> f (arithmetic), P1 computes
-((-s1) >> f). If |x| < 2^l (x read as a signed ring element) the result is floor(x / 2^f) or
floor(x / 2^f) + 1 (an error below one ulp), except when s0 - x wraps around as a signed 64-bit
integer, which happens with probability exactly |x| / 2^64 < 2^(l - 64) for a uniform s0 (SecureML
states the looser 2^(l + 1 - 64)). On failure the result is off by about 2^(64 - f): a
catastrophic, not a small, error. With f = 16 and fixed-point products kept below 2^40 in ring
terms (|x * y| < 2^8 in reals) the failure probability is below 2^-24 per element.
"""

from __future__ import annotations

import numpy as np

from picompile.runtime.mpc.session import Session, open_
from picompile.runtime.mpc.sharing import RING_BITS, Shared, u64

# --------------------------------------------------------------------------- local ops


def _ring_int(k: object) -> np.ndarray:
    """Python/numpy signed integers -> their ring elements (two's complement)."""
    return np.asarray(k, dtype=np.int64).view(np.uint64)


def add(x: Shared, y: Shared) -> Shared:
    with np.errstate(over="ignore"):
        return Shared(x.p0 + y.p0, x.p1 + y.p1)


def sub(x: Shared, y: Shared) -> Shared:
    with np.errstate(over="ignore"):
        return Shared(x.p0 - y.p0, x.p1 - y.p1)


def neg(x: Shared) -> Shared:
    with np.errstate(over="ignore"):
        return Shared(np.negative(x.p0), np.negative(x.p1))


def add_public_ring(x: Shared, c_ring: object) -> Shared:
    """x + c for a public ring constant: only party 0 adds it."""
    c = np.broadcast_to(u64(c_ring), x.shape)
    with np.errstate(over="ignore"):
        return Shared(x.p0 + c, x.p1.copy())


def add_public(sess: Session, x: Shared, c: object) -> Shared:
    """x + c for public reals c (fixed-point encoded; broadcast to x's shape)."""
    return add_public_ring(x, sess.fp.encode(c))


def mul_public_int(x: Shared, k: object) -> Shared:
    """k * x for public (possibly negative) integers k: exact in the ring, no truncation."""
    kr = np.broadcast_to(_ring_int(k), x.shape)
    with np.errstate(over="ignore"):
        return Shared(x.p0 * kr, x.p1 * kr)


def mul_public(sess: Session, x: Shared, c: object) -> Shared:
    """c * x for public reals c: multiply by encode(c), then truncate by f (local)."""
    return truncate(mul_public_int(x, sess.fp.encode(c).view(np.int64)),
                    sess.fp.fractional_bits)


def truncate(x: Shared, bits: int) -> Shared:
    """SecureML local truncation by ``bits``: P0 takes s0 >> bits (arithmetic shift), P1 takes
    -((-s1) >> bits). Result floor(x / 2^bits) + {0, 1} except with probability |x| / 2^64."""
    if not 0 <= bits < RING_BITS:
        raise ValueError("bits must be in [0, 64)")
    if bits == 0:
        return Shared(x.p0.copy(), x.p1.copy())
    with np.errstate(over="ignore"):
        t0 = (x.p0.view(np.int64) >> bits).view(np.uint64)                    # party 0 only
        t1 = np.negative((np.negative(x.p1).view(np.int64) >> bits).view(np.uint64))  # party 1
    return Shared(t0, t1)


def same_shape(x: Shared, y: Shared) -> tuple[Shared, Shared]:
    """``x`` and ``y`` broadcast to their common shape (copies only when the shapes differ)."""
    if x.shape == y.shape:
        return x, y
    shape = np.broadcast_shapes(x.shape, y.shape)
    bx = Shared(*(np.broadcast_to(s, shape).copy() for s in x))
    by = Shared(*(np.broadcast_to(s, shape).copy() for s in y))
    return bx, by


# --------------------------------------------------------------------------- Beaver products


def _beaver_masks(x_i: np.ndarray, y_i: np.ndarray, a_i: np.ndarray,
                  b_i: np.ndarray) -> list[np.ndarray]:
    """Party i's message: its shares of e = x - a and f = y - b."""
    return [x_i - a_i, y_i - b_i]


def _beaver_combine(party: int, e: np.ndarray, f: np.ndarray, a_i: np.ndarray, b_i: np.ndarray,
                    c_i: np.ndarray) -> np.ndarray:
    """Party i's share of x*y = c + e*b + f*a + e*f (the public e*f added by party 0 only)."""
    z = c_i + e * b_i + f * a_i
    return z + e * f if party == 0 else z


def mul(sess: Session, x: Shared, y: Shared, *, rescale: bool = True) -> Shared:
    """Elementwise Beaver product. Online: one round, each party sends e_i, f_i (16 bytes per
    element). Offline: a triple, 24 bytes per element to each party. ``rescale`` truncates by f
    (fixed point); with rescale=False the result is x*y mod 2^64 exactly."""
    x, y = same_shape(x, y)
    triple = sess.dealer.beaver_triples(x.shape, "mul")
    with np.errstate(over="ignore"):
        msgs = [_beaver_masks(x.share_of(i), y.share_of(i), *triple[i][:2]) for i in (0, 1)]
        e, f = open_(sess, "mul.ef", msgs[0], msgs[1])
        z = Shared(*(_beaver_combine(i, e, f, *triple[i]) for i in (0, 1)))
    return truncate(z, sess.fp.fractional_bits) if rescale else z


def square(sess: Session, x: Shared, *, rescale: bool = True) -> Shared:
    """Elementwise x^2 from a square pair (a, a^2): open e = x - a (one round, 8 bytes per element
    per party), then x^2 = a^2 + 2*e*a + e^2 locally. Offline: 16 bytes per element per party."""
    pair = sess.dealer.square_pairs(x.shape, "square")
    with np.errstate(over="ignore"):
        msgs = [[x.share_of(i) - pair[i][0]] for i in (0, 1)]
        (e,) = open_(sess, "square.e", msgs[0], msgs[1])
        parts = []
        for i in (0, 1):
            a_i, q_i = pair[i]
            z = q_i + np.uint64(2) * e * a_i
            parts.append(z + e * e if i == 0 else z)
    z = Shared(*parts)
    return truncate(z, sess.fp.fractional_bits) if rescale else z
