"""Traffic accounting of one channel endpoint: bytes, messages and flights per phase.

Reads: one record per message sent or received (phase, direction, kind, bytes on the wire).
Writes: the running totals (:class:`Traffic`, per phase a :class:`PhaseTraffic`, and bytes per
message kind). docs/protocol.md §8 defines what is counted.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

PHASES = ("offline", "online")


@dataclass
class PhaseTraffic:
    bytes_sent: int = 0
    bytes_received: int = 0
    messages_sent: int = 0
    messages_received: int = 0
    rounds: int = 0

    @property
    def bytes(self) -> int:
        return self.bytes_sent + self.bytes_received


@dataclass
class Traffic:
    """Everything one endpoint sent and received, frame headers included, per phase.

    ``rounds`` counts flights: a message starts a new flight when its direction differs from the
    previous message of the same phase (the first message of a phase starts one). A
    request/response is 2 flights at both ends.
    """

    phases: dict[str, PhaseTraffic] = field(
        default_factory=lambda: {p: PhaseTraffic() for p in PHASES})
    by_kind: dict[str, int] = field(default_factory=dict)   # bytes both ways, per message kind
    _last_direction: dict[str, str] = field(default_factory=dict, repr=False)

    def record(self, phase: str, direction: str, kind: str, nbytes: int) -> None:
        p = self.phases[phase]
        if direction == "sent":
            p.bytes_sent += nbytes
            p.messages_sent += 1
        else:
            p.bytes_received += nbytes
            p.messages_received += 1
        if self._last_direction.get(phase) != direction:
            p.rounds += 1
            self._last_direction[phase] = direction
        self.by_kind[kind] = self.by_kind.get(kind, 0) + nbytes

    def __getitem__(self, phase: str) -> PhaseTraffic:
        return self.phases[phase]

    @property
    def bytes_sent(self) -> int:
        return sum(p.bytes_sent for p in self.phases.values())

    @property
    def bytes_received(self) -> int:
        return sum(p.bytes_received for p in self.phases.values())

    @property
    def rounds(self) -> int:
        return sum(p.rounds for p in self.phases.values())

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for name, p in self.phases.items():
            out[name] = {"bytes_sent": p.bytes_sent, "bytes_received": p.bytes_received,
                         "messages_sent": p.messages_sent,
                         "messages_received": p.messages_received, "rounds": p.rounds}
        out["by_kind"] = dict(self.by_kind)
        return out
