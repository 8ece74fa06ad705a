"""hybrid.wire — how the hybrid parties put shares and vectors into messages.

Reads: numpy arrays (shares over Z_2^64, vectors mod a plaintext prime) and received payloads.
Writes: bit-packed arrays, BFV-row blocks, and the two-party opening over a
:class:`~picompile.runtime.channel.Channel` (``open`` messages); a
:class:`~picompile.errors.ProtocolError` for any malformed payload.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from picompile.errors import ProtocolError
from picompile.runtime.channel import Channel

#: Party indices: the client holds share 0, the server share 1 (as in :mod:`..mpc`).
CLIENT, SERVER = 0, 1


def _bit_positions(mask: int) -> np.ndarray:
    return np.array([i for i in range(64) if mask >> i & 1], dtype=np.uint64)


def pack_bits(arrays: list[np.ndarray], masks: list[int]) -> np.ndarray:
    """Only the bits under each array's mask, packed 8 per byte."""
    chunks = []
    for array, mask in zip(arrays, masks, strict=True):
        positions = _bit_positions(mask)
        words = np.asarray(array, dtype=np.uint64).reshape(-1)
        chunks.append(((words[None, :] >> positions[:, None]) & np.uint64(1)).astype(np.uint8)
                      .reshape(-1))
    return np.packbits(np.concatenate(chunks)) if chunks else np.zeros(0, np.uint8)


def unpack_bits(packed: np.ndarray, shapes: list[tuple[int, ...]], masks: list[int]
                ) -> list[np.ndarray]:
    """The inverse of :func:`pack_bits`: arrays of ``shapes``, zero outside each mask."""
    sizes = [len(_bit_positions(m)) * int(np.prod(s)) for s, m in zip(shapes, masks, strict=True)]
    if packed.dtype != np.uint8 or packed.size != -(-sum(sizes) // 8):
        raise ProtocolError("malformed bit-packed message")
    bits = np.unpackbits(packed, count=sum(sizes)).astype(np.uint64)
    out, start = [], 0
    for shape, mask, size in zip(shapes, masks, sizes, strict=True):
        positions = _bit_positions(mask)
        block = bits[start:start + size].reshape(len(positions), -1)
        start += size
        words = np.bitwise_or.reduce(block << positions[:, None], axis=0) if len(positions) \
            else np.zeros(block.shape[1], np.uint64)
        out.append(words.reshape(shape))
    return out


def expect_arrays(payload: Any, count: int, what: str) -> list[np.ndarray]:
    """``payload`` if it is a list of ``count`` arrays, else a ProtocolError naming ``what``."""
    if not isinstance(payload, list) or len(payload) != count or not all(
            isinstance(a, np.ndarray) for a in payload):
        raise ProtocolError(f"malformed {what} message")
    return payload


def split_blocks(vector: np.ndarray, slots: int) -> list[np.ndarray]:
    """A flat vector as consecutive rows of ``slots`` values (the last one zero-padded)."""
    count = -(-vector.size // slots)
    padded = np.zeros(count * slots, dtype=vector.dtype)
    padded[:vector.size] = vector
    return list(padded.reshape(count, slots))


def make_exchange(channel: Channel, party: int) -> Callable[..., list[np.ndarray]]:
    """The two-party ``open_``: send this party's messages, receive the peer's, combine.

    The client sends first and the server answers, so two large messages never wait on each
    other's socket buffers."""

    def exchange(label: str, msg0: list, msg1: list, op: str, masks: list[int] | None
                 ) -> list[np.ndarray]:
        own = [np.asarray(m, dtype=np.uint64) for m in (msg0 if party == CLIENT else msg1)]
        if op == "xor" and masks is not None:
            payload: Any = [pack_bits(own, list(masks))]
        else:
            payload = own
        if party == CLIENT:
            channel.send("open", payload)
            received = channel.expect("open")
        else:
            received = channel.expect("open")
            channel.send("open", payload)
        if op == "xor" and masks is not None:
            (packed,) = expect_arrays(received, 1, "open")
            peer = unpack_bits(packed, [m.shape for m in own], list(masks))
        else:
            peer = expect_arrays(received, len(own), "open")
            if any(p.shape != m.shape or p.dtype != np.uint64 for p, m in zip(peer, own,
                                                                              strict=True)):
                raise ProtocolError("malformed open message: wrong shape or type")
        with np.errstate(over="ignore"):
            if op == "add":
                return [m + p for m, p in zip(own, peer, strict=True)]
            return [m ^ p for m, p in zip(own, peer, strict=True)]

    return exchange
