"""mpc.transcript — the log of every message the parties and the dealer send.

Reads: the sends recorded by the dealer (:mod:`.dealer`) and by ``open_`` (:mod:`.session`).
Writes: one :class:`Message` per send (phase "offline" for the dealer, "online" for the parties;
round, sender, receiver, byte count, label and, with ``keep_payloads``, a copy of the content)
and per-phase round counts. Nothing is sent over a network.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

PHASES = ("offline", "online")
PARTIES = ("P0", "P1")


def packed_bytes(bits: int) -> int:
    """Bytes that ``bits`` packed bits take on the wire (rounded up)."""
    return -(-bits // 8)


@dataclass(frozen=True)
class Message:
    phase: str
    round: int
    sender: str
    receiver: str
    nbytes: int
    label: str
    payload: tuple[np.ndarray, ...] | None = None


@dataclass
class Transcript:
    """Log of every send. ``rounds(phase)`` counts sequential exchanges: the messages both parties
    send at the same time (one ``open_``) share one round; each dealer flight is one offline
    round (the dealer's material is input independent, so all flights could be sent as one)."""

    keep_payloads: bool = False
    messages: list[Message] = field(default_factory=list)
    round_counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(PHASES, 0))

    def new_round(self, phase: str) -> int:
        if phase not in PHASES:
            raise ValueError(f"unknown phase {phase!r}")
        self.round_counts[phase] += 1
        return self.round_counts[phase] - 1

    def record(self, phase: str, round_: int, sender: str, receiver: str, nbytes: int,
               label: str, payload: Sequence[np.ndarray] | None = None) -> None:
        kept = tuple(np.array(p, copy=True) for p in payload) if (
            self.keep_payloads and payload is not None) else None
        self.messages.append(Message(phase, round_, sender, receiver, int(nbytes), label, kept))

    def bytes(self, phase: str, sender: str | None = None) -> int:
        return sum(m.nbytes for m in self.messages
                   if m.phase == phase and (sender is None or m.sender == sender))

    def rounds(self, phase: str) -> int:
        return self.round_counts[phase]

    def view(self, party: int, phase: str = "online") -> list[Message]:
        """The messages party ``party`` received in ``phase``."""
        return [m for m in self.messages if m.phase == phase and m.receiver == PARTIES[party]]

    def counts(self) -> dict[str, int]:
        return {"online_rounds": self.rounds("online"), "online_bytes": self.bytes("online"),
                "offline_rounds": self.rounds("offline"), "offline_bytes": self.bytes("offline")}
