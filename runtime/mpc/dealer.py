"""mpc.dealer — the trusted dealer: input-independent correlated randomness (OFFLINE phase).

Reads: shapes and bit masks only (never an input), a seed for its generator.
Writes: to each party its share of Beaver triples, square pairs, bit-sliced AND triples and
random bits shared both ways; one offline flight (dealer -> P0 and dealer -> P1) per call in the
:class:`~.transcript.Transcript`. ``_uniform`` is the one source of randomness (the hybrid
runtime's ``SecureDealer`` overrides it with the OS CSPRNG).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from picompile.runtime.mpc.sharing import MASK64
from picompile.runtime.mpc.transcript import PARTIES, Transcript, packed_bytes


class Dealer:
    """Trusted dealer (OFFLINE phase): input-independent correlated randomness.

    Every method returns a pair indexed by party: element ``i`` is exactly what party i receives,
    and each call records one offline flight (dealer -> P0 and dealer -> P1) in the transcript.
    """

    def __init__(self, seed: int | None, transcript: Transcript) -> None:
        self.rng = np.random.default_rng(seed)
        self.transcript = transcript

    def _uniform(self, shape: tuple[int, ...]) -> np.ndarray:
        return self.rng.integers(0, MASK64, size=shape, dtype=np.uint64, endpoint=True)

    def _split(self, v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        v0 = self._uniform(v.shape)
        return v0, v - v0

    def _xsplit(self, v: np.ndarray, mask: int) -> tuple[np.ndarray, np.ndarray]:
        v0 = self._uniform(v.shape) & np.uint64(mask)
        return v0, v ^ v0

    def _send(self, label: str, nbytes_each: int, parts: tuple[tuple, tuple]) -> None:
        rnd = self.transcript.new_round("offline")
        for i in (0, 1):
            payload = [a for item in parts[i] for a in (item if isinstance(item, tuple)
                                                        else (item,))]
            self.transcript.record("offline", rnd, "dealer", PARTIES[i], nbytes_each, label,
                                   payload)

    def beaver_triples(self, shape: tuple[int, ...], label: str = "mul") -> tuple[tuple, tuple]:
        """Shares of (a, b, c = a*b) for uniform a, b: 24 bytes per element to each party."""
        with np.errstate(over="ignore"):
            a, b = self._uniform(shape), self._uniform(shape)
            (a0, a1), (b0, b1), (c0, c1) = self._split(a), self._split(b), self._split(a * b)
        parts = ((a0, b0, c0), (a1, b1, c1))
        self._send(label, 24 * int(np.prod(shape)), parts)
        return parts

    def square_pairs(self, shape: tuple[int, ...], label: str = "square") -> tuple[tuple, tuple]:
        """Shares of (a, a^2) for uniform a: 16 bytes per element to each party."""
        with np.errstate(over="ignore"):
            a = self._uniform(shape)
            (a0, a1), (q0, q1) = self._split(a), self._split(a * a)
        parts = ((a0, q0), (a1, q1))
        self._send(label, 16 * int(np.prod(shape)), parts)
        return parts

    def and_triples(self, specs: Sequence[tuple[tuple[int, ...], int]],
                    label: str = "and") -> list[tuple[tuple, tuple]]:
        """Bit-sliced AND triples, one per (shape, mask) spec: XOR shares of words A, B, C = A & B
        that are uniform on the mask's bits and 0 elsewhere. Each party receives 3 bits per gate,
        all the flight's bits packed together: ceil(3 * gates / 8) bytes."""
        out, gates = [], 0
        for shape, mask in specs:
            m = np.uint64(mask)
            a, b = self._uniform(shape) & m, self._uniform(shape) & m
            (a0, a1), (b0, b1), (c0, c1) = (self._xsplit(a, mask), self._xsplit(b, mask),
                                            self._xsplit(a & b, mask))
            out.append(((a0, b0, c0), (a1, b1, c1)))
            gates += mask.bit_count() * int(np.prod(shape))
        parts = (tuple(t[0] for t in out), tuple(t[1] for t in out))
        self._send(label, packed_bytes(3 * gates), parts)
        return out

    def random_bits(self, shape: tuple[int, ...], label: str = "b2a") -> tuple[tuple, tuple]:
        """A uniform bit r shared twice: XOR shares (1 bit) and additive shares (8 bytes)."""
        n = int(np.prod(shape))
        r = self._uniform(shape) & np.uint64(1)
        rb0, rb1 = self._xsplit(r, 1)
        with np.errstate(over="ignore"):
            ra0, ra1 = self._split(r)
        parts = ((rb0, ra0), (rb1, ra1))
        self._send(label, packed_bytes(n) + 8 * n, parts)
        return parts
