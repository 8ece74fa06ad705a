"""mpc.session — both parties of one evaluation and ``open_``, the only online exchange.

Reads: a :class:`~.sharing.FixedPoint` configuration, the dealer and input seeds, and, in
two-party mode, an ``exchange`` callable that talks to the peer.
Writes: a :class:`Session` holding the :class:`~.transcript.Transcript` and the
:class:`~.dealer.Dealer`; ``open_`` logs one online round (P0 -> P1 and P1 -> P0) and returns the
opened values.

Every protocol step is a party-local computation (own shares, own dealer material, opened
values) followed by :func:`open_`: the only place where data crosses from one party to the
other, and the only online traffic the transcript counts.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from picompile.runtime.mpc.dealer import Dealer
from picompile.runtime.mpc.sharing import FixedPoint, Shared, share, u64
from picompile.runtime.mpc.transcript import Transcript, packed_bytes


@dataclass
class Session:
    """Both parties of one evaluation: fixed-point config, dealer and transcript.

    ``dealer_seed`` seeds the dealer's generator, ``input_seed`` the generator that
    :meth:`share_input` uses to split inputs. ``keep_payloads`` stores every message's content.

    Two-party mode (``picompile.runtime.hybrid``): each process holds one party's shares (the
    other party's are placeholders), ``exchange(label, own_messages, op, masks)`` sends this
    party's messages to the peer and returns the peer's, and ``dealer`` is replaced by a proxy
    that receives this party's part of the dealer's material over the network.
    """

    fp: FixedPoint = field(default_factory=FixedPoint)
    dealer_seed: int | None = 0
    input_seed: int | None = None
    keep_payloads: bool = False
    exchange: Callable[..., list[np.ndarray]] | None = None
    transcript: Transcript = field(init=False)
    dealer: Dealer = field(init=False)
    input_rng: np.random.Generator = field(init=False)

    def __post_init__(self) -> None:
        self.transcript = Transcript(keep_payloads=self.keep_payloads)
        self.dealer = Dealer(self.dealer_seed, self.transcript)
        self.input_rng = np.random.default_rng(self.input_seed)

    def share_input(self, x: object) -> Shared:
        """Encode floats in fixed point and share them (inputs arrive pre-shared: not logged)."""
        return share(self.fp.encode(x), self.input_rng)


def open_(sess: Session, label: str, msg0: Sequence[np.ndarray], msg1: Sequence[np.ndarray],
          *, op: str = "add", nbits: int | None = None,
          masks: Sequence[int] | None = None) -> list[np.ndarray]:
    """One online round: P0 sends ``msg0`` (its shares) to P1 while P1 sends ``msg1`` to P0; both
    then know the opened values (sum mod 2^64 for op="add", XOR for op="xor").

    Each party's message counts 8 bytes per ring element, or, for op="xor", ``nbits`` packed bits
    (the bits under the gates' masks) rounded up to whole bytes. ``masks`` (one per array, xor
    only) lets a two-party exchange put exactly those bits on the wire.
    """
    if len(msg0) != len(msg1):
        raise ValueError("both parties must send the same number of arrays")
    if op == "add":
        nbytes = 8 * sum(int(np.asarray(m).size) for m in msg0)
    elif op == "xor":
        if nbits is None:
            raise ValueError("op='xor' needs nbits")
        nbytes = packed_bytes(nbits)
    else:
        raise ValueError(f"unknown op {op!r}")
    tr = sess.transcript
    rnd = tr.new_round("online")
    tr.record("online", rnd, "P0", "P1", nbytes, label, msg0)
    tr.record("online", rnd, "P1", "P0", nbytes, label, msg1)
    if sess.exchange is not None:
        return sess.exchange(label, msg0, msg1, op, masks)
    with np.errstate(over="ignore"):
        if op == "add":
            return [u64(a) + u64(b) for a, b in zip(msg0, msg1, strict=True)]
        return [u64(a) ^ u64(b) for a, b in zip(msg0, msg1, strict=True)]
