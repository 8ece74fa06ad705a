"""mpc.boolean — bit-sliced boolean circuits on shares: AND rounds, MSB, DReLU, A2B and B2A.

Reads: :class:`~.sharing.Shared` operands (or a :class:`~.sharing.BoolShared` bit for B2A), the
session's dealer (AND triples, random bits) and ``open_``.
Writes: :class:`~.sharing.BoolShared` results (bit-sliced XOR shares: 64 gates per uint64 word)
or, for B2A, a :class:`~.sharing.Shared` 0/1 integer. MSB and DReLU take 7 rounds (a log-depth
carry tree of 183 AND gates per element), A2B 7 rounds (631 gates), B2A one round.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from picompile.runtime.mpc.session import Session, open_
from picompile.runtime.mpc.sharing import MASK64, RING_BITS, BoolShared, Shared

# AND gates per element in each of the 7 rounds of the MSB carry tree and of the full A2B.
MSB_AND_GATES = (63, 63, 31, 15, 7, 3, 1)
A2B_AND_GATES = (63, 123, 120, 114, 102, 78, 31)


def _and_round(sess: Session, label: str,
               gates: Sequence[tuple[BoolShared, BoolShared, int]]) -> list[BoolShared]:
    """One round of bit-sliced AND gates. Each gate is (X, Y, mask): the bits of X & Y under mask
    (bits outside are 0 in the result). Each party sends its shares of E = X ^ A and F = Y ^ B on
    the masked bits only: 2 bits per gate, packed."""
    triples = sess.dealer.and_triples([(x.shape, mask) for x, _, mask in gates], label)
    msgs: tuple[list, list] = ([], [])
    for i in (0, 1):                                  # party-local: own shares and triples only
        for (x, y, mask), t in zip(gates, triples, strict=True):
            a_i, b_i, _ = t[i]
            m = np.uint64(mask)
            msgs[i].extend(((x.share_of(i) ^ a_i) & m, (y.share_of(i) ^ b_i) & m))
    nbits = sum(2 * mask.bit_count() * x.size for x, _, mask in gates)
    masks = [mask for _, _, mask in gates for _ in (0, 1)]
    opened = open_(sess, label, msgs[0], msgs[1], op="xor", nbits=nbits, masks=masks)
    out = []
    for j, t in enumerate(triples):
        e, f = opened[2 * j], opened[2 * j + 1]
        parts = []
        for i in (0, 1):
            a_i, b_i, c_i = t[i]
            z = c_i ^ (e & b_i) ^ (f & a_i)
            parts.append(z ^ (e & f) if i == 0 else z)
        out.append(BoolShared(*parts))
    return out


def _tops(width: int) -> int:
    """Mask of the top bit of every aligned group of ``width`` bits in a 64-bit word."""
    return sum(1 << (j * width + width - 1) for j in range(RING_BITS // width))


def _bits_mask(lo: int, hi: int) -> int:
    """Mask of bits lo..hi inclusive (0 when lo > hi)."""
    return 0 if lo > hi else ((1 << (hi + 1)) - 1) ^ ((1 << lo) - 1)


def _input_bits(x: Shared, shift: int) -> tuple[BoolShared, BoolShared, BoolShared]:
    """Party 0's share as the boolean sharing [s0, 0], party 1's as [0, s1], and p = s0 ^ s1."""
    a = x.p0 << np.uint64(shift)
    b = x.p1 << np.uint64(shift)
    zero = np.zeros_like(a)
    return BoolShared(a, zero), BoolShared(zero, b), BoolShared(a, b)


def _prefix_rounds(sess: Session, label: str, g: BoolShared, p: BoolShared,
                   masks: Callable[[int], tuple[int, int]]) -> BoolShared:
    """Six parallel-prefix rounds over generate/propagate bits (spans 1, 2, 4, ..., 32).

    Round k: G ^= P & (G << s) on the bits ``masks(s)[0]`` selects, and P &= P << s on
    ``masks(s)[1]`` (skipped when empty); one AND round each. Returns the final G.
    """
    for k in range(6):
        span = 1 << k
        mask_g, mask_p = masks(span)
        gates = [(p, g.shl(span), mask_g)]
        if mask_p:
            gates.append((p, p.shl(span), mask_p))
        res = _and_round(sess, f"{label}{k}", gates)
        g = g ^ res[0]
        if mask_p:
            p = res[1]
    return g


def msb(sess: Session, x: Shared) -> BoolShared:
    """XOR-shared most significant bit of x (1 for negative x), exact for every x and split.

    MSB = s0_63 ^ s1_63 ^ c_63, where c_63 is the carry into bit 63 of s0 + s1. With both shares
    shifted left by one, c_63 is the carry out of a 64-bit addition: the group generate G[0..63]
    of a binary carry tree. Round 1: g = s0 & s1 (63 gates); rounds 2-7: level k merges groups of
    2^k bits, (G, P) = (G_hi ^ P_hi & G_lo, P_hi & P_lo), at the groups' top bits, all groups of
    all elements in one word operation; the lowest group's P is never needed. 183 AND gates,
    7 rounds per element.
    """
    a, b, p = _input_bits(x, 1)
    (g,) = _and_round(sess, "msb.g", [(a, b, MASK64 ^ 1)])

    def masks(span: int) -> tuple[int, int]:
        mask_g = _tops(2 * span)
        return mask_g, mask_g & ~((1 << (2 * span)) - 1)

    g = _prefix_rounds(sess, "msb.tree", g, p, masks)
    carry = g.shr(RING_BITS - 1)
    return BoolShared((x.p0 >> np.uint64(63)) ^ carry.p0, (x.p1 >> np.uint64(63)) ^ carry.p1)


def drelu(sess: Session, x: Shared) -> BoolShared:
    """XOR-shared [x >= 0] = 1 - MSB(x): party 0 flips its bit. Same cost as :func:`msb`."""
    m = msb(sess, x)
    return BoolShared(m.p0 ^ np.uint64(1), m.p1)


def a2b(sess: Session, x: Shared) -> BoolShared:
    """Arithmetic to boolean: XOR shares of all 64 bits of x (bit-sliced, one word per element).

    Kogge-Stone parallel-prefix adder of [s0, 0] and [0, s1]: round 1 g = s0 & s1 (bits 0..62),
    rounds 2-7 level k (span s = 2^k): G[i] ^= P[i] & G[i-s] for i in [s, 62] and
    P[i] &= P[i-s] for i in [2s, 62]; then x = s0 ^ s1 ^ (G << 1). 631 AND gates, 7 rounds.
    """
    a, b, p0 = _input_bits(x, 0)
    (g,) = _and_round(sess, "a2b.g", [(a, b, _bits_mask(0, 62))])
    g = _prefix_rounds(sess, "a2b.prefix", g, p0,
                       lambda span: (_bits_mask(span, 62), _bits_mask(2 * span, 62)))
    return p0 ^ g.shl(1)


def b2a(sess: Session, bit: BoolShared) -> Shared:
    """Bit to arithmetic with a dealer bit r shared both ways: open c = b ^ r (1 bit per element
    per party, one round), then [b] = c + [r] - 2c[r] locally (c added by party 0 only)."""
    rnd = sess.dealer.random_bits(bit.shape, "b2a")
    one = np.uint64(1)
    msgs = [[(bit.share_of(i) ^ rnd[i][0]) & one] for i in (0, 1)]
    (c,) = open_(sess, "b2a.c", msgs[0], msgs[1], op="xor", nbits=bit.size, masks=[1])
    parts = []
    with np.errstate(over="ignore"):
        for i in (0, 1):
            r_i = rnd[i][1]
            z = r_i - np.uint64(2) * c * r_i
            parts.append(z + c if i == 0 else z)
    return Shared(*parts)
