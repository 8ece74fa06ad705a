"""mpc.sharing — the ring Z_2^64, fixed-point encoding and the two kinds of shares.

Reads: reals or ring-encoded (uint64) arrays, a generator to split them.
Writes: :class:`FixedPoint` encodings (uint64 arrays), :class:`Shared` (additive,
x = p0 + p1 mod 2^64) and :class:`BoolShared` (XOR, x = p0 ^ p1, bit-sliced) pairs of uint64
arrays, one array per party. Sharing records nothing: inputs are assumed to arrive pre-shared.

Fixed point. A real x is encoded as round(x * 2^f) mod 2^64 (two's complement), f =
``fractional_bits``; encoding needs |x| < 2^(63 - f). A product of two encodings carries scale
2^(2f) and is brought back by :func:`picompile.runtime.mpc.arithmetic.truncate`.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

RING_BITS = 64
MASK64 = (1 << 64) - 1


def u64(x: object) -> np.ndarray:
    """``x`` as a uint64 array (ring elements)."""
    return np.asarray(x, dtype=np.uint64)


@dataclass(frozen=True)
class FixedPoint:
    """Fixed-point encoding in Z_2^64: x -> round(x * 2^f) mod 2^64, two's complement.

    ``encode`` needs |x| < 2^(63 - f). ``decode`` reads the ring element as a signed 64-bit
    integer and divides by 2^f (exact while |round(x * 2^f)| <= 2^53, i.e. within float64's
    mantissa). A product of two encodings must stay below 2^62 in magnitude at scale 2^(2f)
    before truncation, and smaller still for a small truncation failure probability.
    """

    fractional_bits: int = 16

    def __post_init__(self) -> None:
        if not 0 <= self.fractional_bits < 62:
            raise ValueError("fractional_bits must be in [0, 62)")

    @property
    def max_abs(self) -> float:
        """Encodable values satisfy |x| < max_abs = 2^(63 - f)."""
        return 2.0 ** (RING_BITS - 1 - self.fractional_bits)

    def encode(self, x: object) -> np.ndarray:
        x = np.asarray(x, dtype=np.float64)
        if not np.all(np.isfinite(x)) or np.any(np.abs(x) >= self.max_abs):
            raise ValueError(f"fixed-point encode needs finite |x| < 2^{63 - self.fractional_bits}")
        return np.rint(np.ldexp(x, self.fractional_bits)).astype(np.int64).view(np.uint64)

    def decode(self, v: object) -> np.ndarray:
        return np.ldexp(u64(v).view(np.int64).astype(np.float64), -self.fractional_bits)


@dataclass
class Shared:
    """Additive shares: the secret is p0 + p1 mod 2^64; party i holds only ``p<i>``."""

    p0: np.ndarray
    p1: np.ndarray

    def __post_init__(self) -> None:
        self.p0 = u64(self.p0)
        self.p1 = u64(self.p1)
        if self.p0.shape != self.p1.shape:
            raise ValueError(f"share shapes differ: {self.p0.shape} vs {self.p1.shape}")

    @property
    def shape(self) -> tuple[int, ...]:
        return self.p0.shape

    @property
    def size(self) -> int:
        return int(self.p0.size)

    def share_of(self, party: int) -> np.ndarray:
        return self.p0 if party == 0 else self.p1

    def __iter__(self) -> Iterator[np.ndarray]:
        return iter((self.p0, self.p1))


@dataclass
class BoolShared(Shared):
    """XOR shares of bit-sliced words: the secret is p0 ^ p1 (64 boolean values per uint64).

    A shared single bit (MSB, DReLU) is a BoolShared whose words are 0 or 1.
    """

    def __xor__(self, other: BoolShared) -> BoolShared:
        return BoolShared(self.p0 ^ other.p0, self.p1 ^ other.p1)

    def shl(self, bits: int) -> BoolShared:
        return BoolShared(self.p0 << np.uint64(bits), self.p1 << np.uint64(bits))

    def shr(self, bits: int) -> BoolShared:
        return BoolShared(self.p0 >> np.uint64(bits), self.p1 >> np.uint64(bits))


def share(x_ring: object, rng: np.random.Generator) -> Shared:
    """Split ring elements into two uniformly random additive shares (records nothing)."""
    x = u64(x_ring)
    s0 = rng.integers(0, MASK64, size=x.shape, dtype=np.uint64, endpoint=True)
    with np.errstate(over="ignore"):
        return Shared(s0, x - s0)


def reconstruct(s0: Shared | np.ndarray, s1: np.ndarray | None = None) -> np.ndarray:
    """p0 + p1 mod 2^64 (or p0 ^ p1 for a BoolShared). A test oracle, not a protocol step."""
    if isinstance(s0, BoolShared):
        return s0.p0 ^ s0.p1
    if isinstance(s0, Shared):
        s0, s1 = s0.p0, s0.p1
    with np.errstate(over="ignore"):
        return u64(s0) + u64(s1)
