"""hybrid.correlations — the dealer's correlations produced by client and server alone, from OT.

Reads: the peer's ``ot`` messages (base-OT points, IKNP matrices, correlated-OT corrections) on
the client↔server channel; the shapes and bit masks of each request (the same at both parties).
Writes: this party's ``ot`` messages and, per request, this party's part of Beaver triples,
square pairs, bit-sliced AND triples and random shared bits, in the structure of
:class:`picompile.runtime.mpc.Dealer` (the peer's part zero-filled, never read), so the MPC
protocols run unchanged. docs/protocol.md §11 specifies the messages and the security argument.
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence

import numpy as np

from picompile.errors import ProtocolError
from picompile.runtime.channel import Channel
from picompile.runtime.hybrid.randomness import secure_uint64
from picompile.runtime.hybrid.wire import CLIENT, expect_arrays, pack_bits, unpack_bits
from picompile.runtime.ot.base import BASE_OTS, base_ots_both_ways
from picompile.runtime.ot.exchange import swap
from picompile.runtime.ot.iknp import ExtensionReceiver, ExtensionSender

#: OTs per IKNP batch (one ``ot`` swap each): 2 MiB matrices, ~16·CHUNK bytes of working memory.
CHUNK = 1 << 17
_BIT_INDEX = np.arange(64, dtype=np.uint64)
#: Bits of the i-th correlated OT of a Gilboa product: only 64 − i bits matter after ·2^i.
GILBOA_MASKS = [(1 << (64 - i)) - 1 for i in range(64)]


def _low_bits(pads: np.ndarray) -> np.ndarray:
    return pads[:, 0] & np.uint8(1)


def _words(pads: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(pads[:, :8]).view("<u8").reshape(-1).astype(np.uint64)


def _bits_of(values: np.ndarray) -> np.ndarray:
    """The 64 bits of each value, least significant first, flattened (value-major)."""
    return ((values.reshape(-1, 1) >> _BIT_INDEX) & np.uint64(1)).astype(np.uint8).reshape(-1)


def _random_bits(count: int) -> np.ndarray:
    return np.unpackbits(np.frombuffer(secrets.token_bytes(-(-count // 8)), np.uint8),
                         count=count)


class TwoPartyCorrelations:
    """One party's source of correlated randomness from OT with the peer (no third party).

    Offers the dealer's methods with the dealer's return structure. Both parties must call the
    same methods with the same arguments in the same order (the dry run of the share protocols
    guarantees it); each call is one or two ``ot`` swaps per :data:`CHUNK` OTs."""

    def __init__(self, channel: Channel, party: int, chunk: int = CHUNK) -> None:
        self.channel = channel
        self.party = party
        self.chunk = chunk
        self.sender: ExtensionSender | None = None
        self.receiver: ExtensionReceiver | None = None
        self.ots = 0  # OTs this party received (its extension-receiver count)

    # ----------------------------------------------------------------------------- OT layer
    def setup(self) -> None:
        """κ base OTs each way (Chou–Orlandi), once per session: the IKNP state of both roles."""
        secret = [secrets.randbelow(2) for _ in range(BASE_OTS)]
        pairs, keys = base_ots_both_ways(self.channel, self.party, secret)
        self.sender = ExtensionSender(secret, keys)
        self.receiver = ExtensionReceiver(pairs)

    def random_ots(self, send_count: int, choices: np.ndarray, bits: bool = False
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``send_count`` random OTs to the peer and ``choices.size`` from it, both directions
        batch by batch: (x^0, x^1) of the sent OTs, x^{c} of the received ones, each reduced
        batch by batch to 64-bit words (uint64), or to one bit (uint8) with ``bits``."""
        reduce = _low_bits if bits else _words
        if self.sender is None or self.receiver is None:
            self.setup()
        assert self.sender is not None and self.receiver is not None
        received = int(choices.size)
        batches = max(-(-send_count // self.chunk), -(-received // self.chunk))
        x0, x1, pads = [], [], []
        for batch in range(batches):
            lo = batch * self.chunk
            u, own = self.receiver.extend(choices[lo:lo + self.chunk])
            (peer_u,) = expect_arrays(swap(self.channel, self.party, [u]), 1, "ot")
            s0, s1 = self.sender.extend(peer_u, min(max(send_count - lo, 0), self.chunk))
            x0.append(reduce(s0))
            x1.append(reduce(s1))
            pads.append(reduce(own))
        self.ots += received
        empty = np.zeros(0, np.uint8 if bits else np.uint64)
        return (np.concatenate(x0) if x0 else empty, np.concatenate(x1) if x1 else empty,
                np.concatenate(pads) if pads else empty)

    def _swap_corrections(self, corrections: list[np.ndarray]) -> list[np.ndarray]:
        peer = swap(self.channel, self.party, corrections)
        if not isinstance(peer, list) or not all(isinstance(a, np.ndarray) for a in peer):
            raise ProtocolError("malformed ot message: expected correlated-OT corrections")
        return peer

    def _gilboa(self, send: np.ndarray | None, receive: np.ndarray | None) -> tuple[
            np.ndarray | None, np.ndarray | None]:
        """Additive shares of products over Z_2^64 by Gilboa's method on correlated OT: this
        party sends for ``send`` (its factor x of x·y_peer) and receives for ``receive`` (its
        factor y of x_peer·y); either may be None when the direction is unused. Returns this
        party's share of each product."""
        n_send = 0 if send is None else send.size
        choices = np.zeros(0, np.uint8) if receive is None else _bits_of(receive)
        x0, x1, pads = self.random_ots(64 * n_send, choices)
        own_share = None
        corrections: list[np.ndarray] = []
        if send is not None:
            h0, h1 = x0.reshape(-1, 64), x1.reshape(-1, 64)
            with np.errstate(over="ignore"):
                tau = h1 - h0 - send.reshape(-1, 1)
                own_share = (np.uint64(0) - (h0 << _BIT_INDEX).sum(axis=1, dtype=np.uint64))
            corrections = [pack_bits([tau[:, i] for i in range(64)], GILBOA_MASKS)]
        peer = self._swap_corrections(corrections)
        peer_share = None
        if receive is not None:
            n = receive.size
            if len(peer) != 1 or peer[0].dtype != np.uint8:
                raise ProtocolError("malformed ot message: expected packed Gilboa corrections")
            tau = np.stack(unpack_bits(peer[0], [(n,)] * 64, GILBOA_MASKS), axis=1)
            chosen = choices.reshape(n, 64).astype(np.uint64)
            with np.errstate(over="ignore"):
                out = pads.reshape(n, 64) - chosen * tau
                peer_share = (out << _BIT_INDEX).sum(axis=1, dtype=np.uint64)
        elif peer:
            raise ProtocolError("malformed ot message: unexpected correlated-OT corrections")
        return own_share, peer_share

    def _pair(self, own: tuple) -> tuple[tuple, tuple]:
        zeros = tuple(np.zeros_like(a) for a in own)
        return (own, zeros) if self.party == CLIENT else (zeros, own)

    # ------------------------------------------------------------------ the dealer interface
    def beaver_triples(self, shape: tuple[int, ...], label: str = "mul") -> tuple[tuple, tuple]:
        """Shares of (a, b, c = a·b): two Gilboa products, a_own·b_peer and a_peer·b_own."""
        n = int(np.prod(shape))
        a, b = secure_uint64((n,)), secure_uint64((n,))
        sent, received = self._gilboa(a, b)
        with np.errstate(over="ignore"):
            c = a * b + sent + received
        return self._pair((a.reshape(shape), b.reshape(shape), c.reshape(shape)))

    def square_pairs(self, shape: tuple[int, ...], label: str = "square") -> tuple[tuple, tuple]:
        """Shares of (a, a²): one Gilboa product a_0·a_1 (the client sends), doubled."""
        n = int(np.prod(shape))
        a = secure_uint64((n,))
        client = self.party == CLIENT
        sent, received = self._gilboa(a if client else None, None if client else a)
        cross = sent if client else received
        with np.errstate(over="ignore"):
            q = a * a + np.uint64(2) * cross
        return self._pair((a.reshape(shape), q.reshape(shape)))

    def and_triples(self, specs: Sequence[tuple[tuple[int, ...], int]],
                    label: str = "and") -> list[tuple[tuple, tuple]]:
        """Bit-sliced AND triples from two random OTs per gate (one each way)."""
        shapes = [tuple(s) for s, _ in specs]
        masks = [int(m) for _, m in specs]
        gates = sum(m.bit_count() * int(np.prod(s)) for s, m in zip(shapes, masks, strict=True))
        b = _random_bits(gates)
        sent0, sent1, received = self.random_ots(gates, b, bits=True)
        a = sent0 ^ sent1
        c = (a & b) ^ sent0 ^ received
        words = [unpack_bits(np.packbits(bits), shapes, masks) for bits in (a, b, c)]
        return [self._pair((words[0][j], words[1][j], words[2][j])) for j in range(len(specs))]

    def random_bits(self, shape: tuple[int, ...], label: str = "b2a") -> tuple[tuple, tuple]:
        """A uniform bit r = r_0 ⊕ r_1 shared both ways: one correlated OT (correlation r_0,
        choice r_1) gives additive shares of r_0·r_1, and r = r_0 + r_1 − 2·r_0·r_1."""
        n = int(np.prod(shape))
        r = _random_bits(n)
        client = self.party == CLIENT
        x0, x1, pads = self.random_ots(n if client else 0,
                                       np.zeros(0, np.uint8) if client else r)
        r64 = r.astype(np.uint64)
        if client:
            h0 = x0
            with np.errstate(over="ignore"):
                peer = self._swap_corrections([x1 - h0 - r64])
                product = np.uint64(0) - h0
        else:
            peer = self._swap_corrections([])
            if len(peer) != 1 or peer[0].dtype != np.uint64 or peer[0].shape != (n,):
                raise ProtocolError("malformed ot message: expected random-bit corrections")
            with np.errstate(over="ignore"):
                product = pads - r64 * peer[0]
        with np.errstate(over="ignore"):
            arithmetic = r64 - np.uint64(2) * product
        return self._pair((r64.reshape(shape), arithmetic.reshape(shape)))
