"""hybrid.randomness — uniform randomness from the operating system's CSPRNG.

Reads: ``os.urandom``.
Writes: numpy arrays of uniform 64-bit words or uniform residues mod a prime (the parties'
masks and the dealer's correlations).
"""

from __future__ import annotations

import os

import numpy as np


def secure_uint64(shape: tuple[int, ...]) -> np.ndarray:
    """Uniform 64-bit words from the operating system's CSPRNG."""
    n = int(np.prod(shape))
    return np.frombuffer(os.urandom(8 * n), dtype=np.uint64).reshape(shape).copy()


def secure_below_prime(t: int, shape: tuple[int, ...]) -> np.ndarray:
    """Uniform integers in [0, t) (rejection sampling on t.bit_length() random bits)."""
    n = int(np.prod(shape))
    bits = t.bit_length()
    out = np.empty(0, dtype=np.int64)
    while out.size < n:
        draw = (secure_uint64((2 * (n - out.size) + 8,)) >> np.uint64(64 - bits)).astype(np.int64)
        out = np.concatenate([out, draw[draw < t]])
    return out[:n].reshape(shape)
