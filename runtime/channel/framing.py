"""Frame header of the channel's wire format: version, magic, message kinds and their type codes.

Reads: a 9-byte frame header (:func:`unpack_header`).
Writes: a 9-byte frame header (:func:`pack_header`). docs/protocol.md §8 specifies the format.

Frame: ``MAGIC`` (4 bytes: b"PIC" + frame version) | message type (1 byte) | payload length
(4 bytes, big-endian) | payload. :func:`unpack_header` rejects a declared length above the
receiver's limit before any payload byte is read; every header fault is a
:class:`~picompile.errors.ProtocolError` naming what was wrong (bad magic or version, unknown
type, oversized frame).
"""

from __future__ import annotations

import struct
from typing import Any, NamedTuple

from picompile.errors import ProtocolError

#: Version of the framing and payload encoding (this package's format), in every frame header.
#: Not the session protocol's version (``picompile.runtime.session.PROTOCOL_VERSION``, carried
#: in ``hello``): that one changes with the messages' meaning, this one with their encoding.
FRAME_VERSION = 1
MAGIC = b"PIC" + bytes([FRAME_VERSION])
HEADER = struct.Struct(">4sBI")
HEADER_BYTES = HEADER.size  # 9

# Message kinds and their 1-byte type codes (docs/protocol.md §4).
MESSAGE_KINDS: dict[str, int] = {
    "hello": 1, "keys": 2, "dealer": 3, "ciphertexts": 4, "reshare": 5, "open": 6,
    "result": 7, "data": 8, "error": 9, "bye": 10, "ot": 11,
}
_KIND_OF_CODE = {code: kind for kind, code in MESSAGE_KINDS.items()}


class Message(NamedTuple):
    kind: str
    payload: Any


def pack_header(kind: str, length: int) -> bytes:
    """The frame header of a ``length``-byte payload of message ``kind`` (a known kind)."""
    return HEADER.pack(MAGIC, MESSAGE_KINDS[kind], length)


def unpack_header(header: bytes | bytearray, max_frame_bytes: int) -> tuple[str, int]:
    """(kind, payload length) of a frame header; a ProtocolError for a header this side refuses."""
    magic, code, length = HEADER.unpack(header)
    if magic != MAGIC:
        if magic[:3] == MAGIC[:3]:
            raise ProtocolError(f"peer speaks protocol version {magic[3]}, this side "
                                f"speaks {FRAME_VERSION}")
        raise ProtocolError(f"bad frame magic {magic!r} (expected {MAGIC!r}): the peer is "
                            "not a picompile channel")
    if code not in _KIND_OF_CODE:
        raise ProtocolError(f"unknown message type {code} in frame header")
    kind = _KIND_OF_CODE[code]
    if length > max_frame_bytes:
        raise ProtocolError(f"frame declares a {length}-byte {kind!r} payload, over the "
                            f"limit of {max_frame_bytes} bytes (max_frame_bytes)")
    return kind, length
