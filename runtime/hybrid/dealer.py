"""hybrid.dealer — the trusted dealer of the hybrid protocol and the parties' proxies of it.

Reads: ``dealer`` requests (method, shapes, bit masks, label) from the two parties' channels;
on the party side, the dealer's replies.
Writes: each party's part of the correlated randomness (Beaver triples, square pairs, random
shared bits, bit-sliced AND triples) from the OS CSPRNG; the parties record what they fetched
offline and replay it online in the same order.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from picompile.errors import ProtocolError
from picompile.runtime import mpc
from picompile.runtime.channel import Channel
from picompile.runtime.hybrid.randomness import secure_uint64
from picompile.runtime.hybrid.wire import CLIENT, expect_arrays, pack_bits, unpack_bits


class SecureDealer(mpc.Dealer):
    """The MPC dealer with its randomness from the OS CSPRNG instead of PCG64."""

    def __init__(self) -> None:
        super().__init__(None, mpc.Transcript())

    def _uniform(self, shape: tuple[int, ...]) -> np.ndarray:
        return secure_uint64(shape)


class RemoteDealer:
    """Party-side proxy of the dealer: asks for each correlation, receives its own part.

    Returns the same structure as :class:`picompile.runtime.mpc.Dealer`, the peer's part filled
    with zeros (never read by this party's computations)."""

    def __init__(self, channel: Channel, party: int) -> None:
        self.channel = channel
        self.party = party

    def _request(self, method: str, shapes: list[tuple[int, ...]], masks: list[int],
                 label: str, count: int) -> list[np.ndarray]:
        self.channel.send("dealer", {"method": method, "shapes": [list(s) for s in shapes],
                                     "masks": [str(m) for m in masks], "label": label})
        return expect_arrays(self.channel.expect("dealer"), count, "dealer")

    def _pair(self, own: tuple) -> tuple[tuple, tuple]:
        zeros = tuple(np.zeros_like(a) for a in own)
        return (own, zeros) if self.party == CLIENT else (zeros, own)

    def beaver_triples(self, shape: tuple[int, ...], label: str = "mul") -> tuple[tuple, tuple]:
        return self._pair(tuple(self._request("beaver_triples", [shape], [], label, 3)))

    def square_pairs(self, shape: tuple[int, ...], label: str = "square") -> tuple[tuple, tuple]:
        return self._pair(tuple(self._request("square_pairs", [shape], [], label, 2)))

    def random_bits(self, shape: tuple[int, ...], label: str = "b2a") -> tuple[tuple, tuple]:
        (packed, arithmetic) = self._request("random_bits", [shape], [1], label, 2)
        (bits,) = unpack_bits(packed, [shape], [1])
        return self._pair((bits, arithmetic))

    def and_triples(self, specs: list[tuple[tuple[int, ...], int]], label: str = "and"
                    ) -> list[tuple[tuple, tuple]]:
        shapes = [tuple(s) for s, _ in specs]
        masks = [m for _, m in specs]
        (packed,) = self._request("and_triples", shapes, masks, label, 1)
        words = unpack_bits(packed, [s for s in shapes for _ in range(3)],
                            [m for m in masks for _ in range(3)])
        return [self._pair(tuple(words[3 * j:3 * j + 3])) for j in range(len(specs))]


class RecordingDealer:
    """Forwards every request to another dealer and keeps the answers in order."""

    def __init__(self, dealer: Any) -> None:
        self.dealer = dealer
        self.log: list[tuple[str, Any]] = []

    def __getattr__(self, method: str) -> Callable[..., Any]:
        def call(*args: Any, **kwargs: Any) -> Any:
            result = getattr(self.dealer, method)(*args, **kwargs)
            self.log.append((method, result))
            return result
        return call


class ReplayDealer:
    """Hands out prefetched correlations in the order they were fetched."""

    def __init__(self, log: list[tuple[str, Any]]) -> None:
        self.log = list(reversed(log))

    def __getattr__(self, method: str) -> Callable[..., Any]:
        def call(*args: Any, **kwargs: Any) -> Any:
            if not self.log:
                raise ProtocolError("ran out of prefetched dealer correlations")
            fetched, result = self.log.pop()
            if fetched != method:
                raise ProtocolError(f"prefetched {fetched} where {method} is needed")
            return result
        return call


def dry_exchange(label: str, msg0: list, msg1: list, op: str, masks: Any) -> list[np.ndarray]:
    """Stand-in for the peer during the offline dry run: every opening is zero."""
    return [np.zeros(np.shape(m), dtype=np.uint64) for m in msg0]


def run_dealer(channels: tuple[Channel, Channel], *, timeout: float | None = None) -> int:
    """Serve correlated randomness to the two parties until both say ``bye``; returns the
    number of requests served. Both parties must ask for the same things in the same order."""
    dealer = SecureDealer()
    served = 0
    while True:
        requests = [ch.recv(timeout=timeout) for ch in channels]
        kinds = {m.kind for m in requests}
        if kinds == {"bye"}:
            return served
        if kinds != {"dealer"} or requests[0].payload != requests[1].payload:
            for ch in channels:
                ch.send_error("the parties asked the dealer for different correlations")
            raise ProtocolError("the parties asked the dealer for different correlations")
        request = requests[0].payload
        shapes = [tuple(int(d) for d in s) for s in request["shapes"]]
        masks = [int(m) for m in request["masks"]]
        label = str(request["label"])
        method = request["method"]
        if method == "beaver_triples":
            parts = [list(p) for p in dealer.beaver_triples(shapes[0], label)]
        elif method == "square_pairs":
            parts = [list(p) for p in dealer.square_pairs(shapes[0], label)]
        elif method == "random_bits":
            parts = [[pack_bits([bits], [1]), arithmetic]
                     for bits, arithmetic in dealer.random_bits(shapes[0], label)]
        elif method == "and_triples":
            out = dealer.and_triples(list(zip(shapes, masks, strict=True)), label)
            parts = [[pack_bits([w for t in out for w in t[p]],
                                [m for m in masks for _ in range(3)])] for p in (0, 1)]
        else:
            raise ProtocolError(f"unknown dealer request {method!r}")
        for ch, part in zip(channels, parts, strict=True):
            ch.send("dealer", part)
        served += 1
