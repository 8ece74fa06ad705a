"""ot.base — Chou–Orlandi "simplest OT" base OTs on Ed25519 (docs/protocol.md §11.2).

Reads: this party's choice bits (as base-OT receiver); the peer's points A and B_i (``ot``
messages), each checked to be a canonical Ed25519 point of the prime-order subgroup and not
of small order.
Writes: the points A (as sender) and B_i (as receiver); 128-bit keys: both keys of every OT
(sender), the chosen key (receiver). All curve arithmetic is libsodium's (PyNaCl); scalars are
uniform modulo the subgroup order ℓ (64 random bytes reduced), so every point a party
computes is in the subgroup.
"""

from __future__ import annotations

import os
from typing import Any

from nacl import bindings as sodium
from nacl.exceptions import CryptoError

from picompile.errors import ProtocolError
from picompile.runtime.channel import Channel
from picompile.runtime.ot.exchange import swap
from picompile.runtime.ot.primitives import derive_key

#: Base OTs per direction: the computational security parameter κ.
BASE_OTS = 128
POINT_BYTES = 32
_TAG = b"picompile chou-orlandi v1"


def random_scalar() -> bytes:
    """A uniform scalar mod ℓ: 64 bytes of the OS CSPRNG reduced by libsodium (bias 2^−260)."""
    return sodium.crypto_core_ed25519_scalar_reduce(os.urandom(64))


def check_point(point: Any, what: str) -> bytes:
    """``point`` as bytes if it is a valid Ed25519 point of the prime-order subgroup (canonical,
    on the curve, not of small order); a ProtocolError naming ``what`` otherwise."""
    if not isinstance(point, bytes) or len(point) != POINT_BYTES or \
            not sodium.crypto_core_ed25519_is_valid_point(point):
        raise ProtocolError(f"malformed ot message: {what} is not a valid Ed25519 point of the "
                            "prime-order subgroup")
    return point


def _multiply(scalar: bytes, point: bytes) -> bytes:
    try:
        return sodium.crypto_scalarmult_ed25519_noclamp(scalar, point)
    except (CryptoError, RuntimeError) as exc:  # the identity: only from a degenerate point
        raise ProtocolError(f"malformed ot message: degenerate point ({exc})") from None


class BaseOtSender:
    """Sender of κ random OTs: draws a, publishes A = a·G, derives k_i^0, k_i^1 from B_i."""

    def __init__(self) -> None:
        self._a = random_scalar()
        self.message = sodium.crypto_scalarmult_ed25519_base_noclamp(self._a)

    def keys(self, points: Any, count: int) -> list[tuple[bytes, bytes]]:
        """(k_i^0, k_i^1) for the receiver's ``count`` points B_i."""
        if not isinstance(points, list) or len(points) != count:
            raise ProtocolError(f"malformed ot message: expected {count} base-OT points")
        a_point, pairs = self.message, []
        for i, point in enumerate(points):
            b = check_point(point, f"B_{i}")
            shifted = sodium.crypto_core_ed25519_sub(b, a_point)
            pairs.append((derive_key(_TAG, i, a_point, b, _multiply(self._a, b)),
                          derive_key(_TAG, i, a_point, b, _multiply(self._a, shifted))))
        return pairs


class BaseOtReceiver:
    """Receiver of κ random OTs with choice bits c_i: B_i = b_i·G + c_i·A, key from b_i·A."""

    def __init__(self, choices: list[int]) -> None:
        self.choices = [int(c) & 1 for c in choices]
        self._b = [random_scalar() for _ in self.choices]
        self._a_point = b""
        self.points: list[bytes] = []

    def message(self, a_point: Any) -> list[bytes]:
        """The points B_i answering the sender's A (checked)."""
        self._a_point = check_point(a_point, "A")
        self.points = []
        for b, c in zip(self._b, self.choices, strict=True):
            point = sodium.crypto_scalarmult_ed25519_base_noclamp(b)
            self.points.append(sodium.crypto_core_ed25519_add(point, self._a_point) if c
                               else point)
        return self.points

    def keys(self) -> list[bytes]:
        """k_i^{c_i} = KDF(i, A, B_i, b_i·A)."""
        return [derive_key(_TAG, i, self._a_point, point, _multiply(b, self._a_point))
                for i, (b, point) in enumerate(zip(self._b, self.points, strict=True))]


def base_ots_both_ways(channel: Channel, party: int, choices: list[int]
                       ) -> tuple[list[tuple[bytes, bytes]], list[bytes]]:
    """κ base OTs in each direction at once (two ``ot`` swaps): this party sends one set (both
    keys returned) and receives the other with ``choices`` (the chosen keys returned)."""
    sender, receiver = BaseOtSender(), BaseOtReceiver(choices)
    peer_a = swap(channel, party, {"A": sender.message})
    if not isinstance(peer_a, dict):
        raise ProtocolError("malformed ot message: expected the base-OT point A")
    points = receiver.message(peer_a.get("A"))
    peer_points = swap(channel, party, {"B": points})
    if not isinstance(peer_points, dict):
        raise ProtocolError("malformed ot message: expected the base-OT points B")
    return sender.keys(peer_points.get("B"), BASE_OTS), receiver.keys()


def base_ot_send(channel: Channel, count: int = BASE_OTS) -> list[tuple[bytes, bytes]]:
    """One-directional base OTs, this end the sender (tests, tools): A out, B_i in."""
    sender = BaseOtSender()
    channel.send("ot", {"A": sender.message})
    reply = channel.expect("ot")
    if not isinstance(reply, dict):
        raise ProtocolError("malformed ot message: expected the base-OT points B")
    return sender.keys(reply.get("B"), count)


def base_ot_receive(channel: Channel, choices: list[int]) -> list[bytes]:
    """One-directional base OTs, this end the receiver: A in, B_i out."""
    receiver = BaseOtReceiver(choices)
    message = channel.expect("ot")
    if not isinstance(message, dict):
        raise ProtocolError("malformed ot message: expected the base-OT point A")
    channel.send("ot", {"B": receiver.message(message.get("A"))})
    return receiver.keys()
