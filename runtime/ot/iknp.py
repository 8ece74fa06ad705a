"""ot.iknp — IKNP OT extension, semi-honest (docs/protocol.md §11.3).

Reads: the κ = 128 base-OT keys (the extension receiver holds both keys of each base OT, the
extension sender one key per OT chosen by its secret s), the receiver's choice bits; on the
sender side the receiver's matrix u.
Writes: the κ × m bit matrix u (receiver → sender, 16 bytes per OT); random-OT pads: the
sender gets (x_l^0, x_l^1), the receiver x_l^{r_l}, as (m, 16) uint8 arrays. Every call to
``extend`` is one batch: a fresh PRG stream and fresh hash tweaks (the running OT count), so
batches may be run one after another on the same base OTs; both ends must call in step.
"""

from __future__ import annotations

import numpy as np

from picompile.errors import ProtocolError
from picompile.runtime.ot.base import BASE_OTS, BaseOtReceiver, BaseOtSender
from picompile.runtime.ot.primitives import BLOCK, correlation_robust_hash, prg


def transpose_bits(matrix: np.ndarray, m: int) -> np.ndarray:
    """The κ × m bit matrix (rows packed, (κ, ⌈m/8⌉) uint8) as m rows of κ bits ((m, κ/8))."""
    bits = np.unpackbits(matrix, axis=1, count=m)
    return np.packbits(np.ascontiguousarray(bits.T), axis=1)


def _streams(keys: list[bytes], batch: int, nbytes: int) -> np.ndarray:
    return np.stack([prg(key, batch, nbytes) for key in keys]) if nbytes else \
        np.zeros((len(keys), 0), dtype=np.uint8)


class ExtensionReceiver:
    """The extension receiver (the base OTs' sender): chooses r, sends u, gets x^{r_l}."""

    def __init__(self, pairs: list[tuple[bytes, bytes]]) -> None:
        if len(pairs) != BASE_OTS:
            raise ValueError(f"IKNP needs {BASE_OTS} base OTs")
        self.keys0 = [k0 for k0, _ in pairs]
        self.keys1 = [k1 for _, k1 in pairs]
        self.batch = 0
        self.count = 0

    def extend(self, choices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(u, pads) for the 0/1 ``choices`` of one batch: u goes to the sender."""
        m = int(choices.size)
        nbytes = -(-m // 8)
        r = np.packbits(np.asarray(choices, dtype=np.uint8).reshape(-1) & 1)
        t = _streams(self.keys0, self.batch, nbytes)
        u = t ^ _streams(self.keys1, self.batch, nbytes) ^ r[None, :]
        pads = correlation_robust_hash(transpose_bits(t, m), self.count) if m else \
            np.zeros((0, BLOCK), np.uint8)
        self.batch += 1
        self.count += m
        return u, pads


class ExtensionSender:
    """The extension sender (the base OTs' receiver with choices s): gets (x^0, x^1) per OT."""

    def __init__(self, secret: list[int], keys: list[bytes]) -> None:
        if len(secret) != BASE_OTS or len(keys) != BASE_OTS:
            raise ValueError(f"IKNP needs {BASE_OTS} base OTs")
        bits = np.array(secret, dtype=np.uint8) & 1
        self.s_block = np.packbits(bits)
        self.s_rows = (bits * np.uint8(0xFF))[:, None]
        self.keys = keys
        self.batch = 0
        self.count = 0

    def extend(self, u: object, m: int) -> tuple[np.ndarray, np.ndarray]:
        """(x^0, x^1) for the receiver's matrix ``u`` of an ``m``-OT batch (checked)."""
        nbytes = -(-m // 8)
        if not isinstance(u, np.ndarray) or u.dtype != np.uint8 or u.shape != (BASE_OTS, nbytes):
            raise ProtocolError(f"malformed ot message: expected a {BASE_OTS} x {nbytes} uint8 "
                                "extension matrix")
        q = _streams(self.keys, self.batch, nbytes) ^ (u & self.s_rows)
        if m:
            rows = transpose_bits(q, m)
            x0 = correlation_robust_hash(rows, self.count)
            x1 = correlation_robust_hash(rows ^ self.s_block[None, :], self.count)
        else:
            x0 = x1 = np.zeros((0, BLOCK), np.uint8)
        self.batch += 1
        self.count += m
        return x0, x1


def ot_pair(secret: list[int] | None = None) -> tuple[ExtensionSender, ExtensionReceiver]:
    """A linked sender/receiver pair in one process (base OTs run locally; tests, benches).
    ``secret``: the sender's κ choice bits s (default: from the OS CSPRNG)."""
    import secrets

    s = secret if secret is not None else [secrets.randbelow(2) for _ in range(BASE_OTS)]
    base_sender, base_receiver = BaseOtSender(), BaseOtReceiver(s)
    pairs = base_sender.keys(base_receiver.message(base_sender.message), BASE_OTS)
    return ExtensionSender(s, base_receiver.keys()), ExtensionReceiver(pairs)
