"""Framed, counted message channel between the parties of the hybrid and FHE protocols.

Reads: frames from a peer (an in-memory queue or a TCP socket).
Writes: frames to the peer, and a :class:`Traffic` record of every message (bytes, messages and
rounds per phase). docs/protocol.md §8 specifies the format.

This package only re-exports; the pieces:

* :mod:`.framing` — frame header, ``FRAME_VERSION``, message kinds and type codes, ``Message``;
* :mod:`.payload` — the typed payload codec (``encode_payload``/``decode_payload``, dtype
  allow-list, depth limit; never pickle);
* :mod:`.traffic` — ``PhaseTraffic``/``Traffic`` accounting per phase;
* :mod:`.base` — ``Channel``: send/recv/expect, timeouts, phases, broken-after-error;
* :mod:`.memory` — ``InMemoryChannel`` (queue pairs); :mod:`.tcp` — ``TcpChannel``,
  ``TcpListener``.
"""

from __future__ import annotations

from picompile.runtime.channel.base import DEFAULT_MAX_FRAME_BYTES, DEFAULT_TIMEOUT, Channel
from picompile.runtime.channel.framing import (
    FRAME_VERSION,
    HEADER,
    HEADER_BYTES,
    MAGIC,
    MESSAGE_KINDS,
    Message,
)
from picompile.runtime.channel.memory import InMemoryChannel
from picompile.runtime.channel.payload import (
    ALLOWED_DTYPES,
    MAX_DEPTH,
    decode_payload,
    encode_payload,
)
from picompile.runtime.channel.tcp import TcpChannel, TcpListener
from picompile.runtime.channel.traffic import PHASES, PhaseTraffic, Traffic

__all__ = [
    "ALLOWED_DTYPES",
    "DEFAULT_MAX_FRAME_BYTES",
    "DEFAULT_TIMEOUT",
    "FRAME_VERSION",
    "HEADER",
    "HEADER_BYTES",
    "MAGIC",
    "MAX_DEPTH",
    "MESSAGE_KINDS",
    "PHASES",
    "Channel",
    "InMemoryChannel",
    "Message",
    "PhaseTraffic",
    "TcpChannel",
    "TcpListener",
    "Traffic",
    "decode_payload",
    "encode_payload",
]
