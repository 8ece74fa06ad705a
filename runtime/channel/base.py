"""One channel endpoint over an abstract byte transport: framing, payload encoding, timeouts,
phases and traffic accounting (:class:`Channel`); the transports are in ``memory`` and ``tcp``.

Reads: frames from the transport (``_read_into``), decoded into a :class:`Message` each.
Writes: frames to the transport (``_write``), and a :class:`Traffic` record of every message.
docs/protocol.md §8 specifies the format.

Every failure is a :class:`~picompile.errors.ProtocolError` naming what was wrong: bad magic or
version, unknown type, oversized or truncated frame, malformed payload, a peer that does not
answer within the timeout, a peer that closed the connection. An endpoint is used by one thread
at a time. After a ProtocolError the channel is broken (the stream position is unknown) and
every later call raises again.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from typing import Any

from picompile.errors import ProtocolError
from picompile.runtime.channel.framing import (
    HEADER_BYTES,
    MESSAGE_KINDS,
    Message,
    pack_header,
    unpack_header,
)
from picompile.runtime.channel.payload import decode_payload, encode_payload
from picompile.runtime.channel.traffic import PHASES, Traffic

DEFAULT_MAX_FRAME_BYTES = 1 << 30
DEFAULT_TIMEOUT = 30.0


class Channel:
    """One endpoint: framing, payload encoding, timeouts and accounting over a byte transport.

    Subclasses provide ``_write(header, body)``, ``_read_into(buf, deadline, wait, what)`` and
    ``_close()``.
    ``timeout`` (seconds) bounds every recv unless the call passes its own.
    """

    def __init__(self, *, timeout: float = DEFAULT_TIMEOUT,
                 max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES) -> None:
        if not 0 < max_frame_bytes <= 0xFFFFFFFF:
            raise ValueError("max_frame_bytes must be in [1, 2^32 - 1]")
        if not timeout > 0:
            raise ValueError("timeout must be positive")
        self.timeout = float(timeout)
        self.max_frame_bytes = int(max_frame_bytes)
        self.traffic = Traffic()
        self.current_phase = "online"
        self._broken: str | None = None
        self._closed = False

    # -- phases

    @contextlib.contextmanager
    def phase(self, name: str) -> Iterator[Channel]:
        """Count the messages of the block under phase ``name`` ("offline" or "online")."""
        if name not in PHASES:
            raise ValueError(f"unknown phase {name!r} (phases: {', '.join(PHASES)})")
        previous, self.current_phase = self.current_phase, name
        try:
            yield self
        finally:
            self.current_phase = previous

    # -- send / recv

    def _check_usable(self) -> None:
        if self._closed:
            raise ProtocolError("channel is closed")
        if self._broken is not None:
            raise ProtocolError(f"channel unusable after an earlier error: {self._broken}")

    def _fail(self, message: str) -> ProtocolError:
        self._broken = message
        return ProtocolError(message)

    def send(self, kind: str, payload: Any = b"") -> int:
        """Send one message; returns the bytes put on the wire (header included)."""
        if kind not in MESSAGE_KINDS:
            raise ValueError(f"unknown message kind {kind!r} (kinds: {', '.join(MESSAGE_KINDS)})")
        self._check_usable()
        body = encode_payload(payload)
        if len(body) > self.max_frame_bytes:
            raise ProtocolError(f"cannot send a {len(body)}-byte {kind!r} message: over the "
                                f"frame limit of {self.max_frame_bytes} bytes")
        header = pack_header(kind, len(body))
        try:
            self._write(header, body)
        except ProtocolError as exc:
            self._broken = str(exc)
            raise
        nbytes = HEADER_BYTES + len(body)
        self.traffic.record(self.current_phase, "sent", kind, nbytes)
        return nbytes

    def send_error(self, text: str) -> None:
        """Tell the peer this side gives up (its next recv raises ProtocolError with ``text``)."""
        with contextlib.suppress(ProtocolError):
            self.send("error", text)

    def recv(self, expected_kind: str | None = None, *, timeout: float | None = None) -> Message:
        """Receive one message. With ``expected_kind``, any other kind is a ProtocolError; a peer's
        ``error`` message is always raised as a ProtocolError carrying the peer's text."""
        if expected_kind is not None and expected_kind not in MESSAGE_KINDS:
            raise ValueError(f"unknown message kind {expected_kind!r}")
        self._check_usable()
        wait = self.timeout if timeout is None else float(timeout)
        deadline = time.monotonic() + wait
        try:
            header = self._read_exact(HEADER_BYTES, deadline, wait, "frame header", True)
            kind, length = unpack_header(header, self.max_frame_bytes)
            body = self._read_exact(length, deadline, wait, f"{kind!r} payload", False)
        except ProtocolError as exc:
            self._broken = str(exc)
            raise
        self.traffic.record(self.current_phase, "received", kind, HEADER_BYTES + length)
        try:
            payload = decode_payload(body)
        except ProtocolError as exc:
            raise self._fail(f"{kind!r} message: {exc}") from None
        if kind == "error":
            raise self._fail(f"peer reported an error: {payload}")
        if expected_kind is not None and kind != expected_kind:
            raise self._fail(f"expected a {expected_kind!r} message, got {kind!r}")
        return Message(kind, payload)

    def expect(self, kind: str, *, timeout: float | None = None) -> Any:
        """recv(kind) and return only the payload."""
        return self.recv(kind, timeout=timeout).payload

    def _read_exact(self, n: int, deadline: float, wait: float, what: str,
                    at_boundary: bool) -> bytearray:
        buf = bytearray(n)
        got = self._read_into(buf, deadline, wait, what)
        if got < n:
            if got == 0 and at_boundary:
                raise self._fail("peer closed the connection")
            raise self._fail(f"truncated frame: peer closed the connection after {got} of {n} "
                             f"{what} bytes")
        return buf

    # -- lifecycle

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._close()

    def __enter__(self) -> Channel:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- transport hooks

    def _write(self, header: bytes, body: bytes) -> None:
        raise NotImplementedError

    def _read_into(self, buf: bytearray, deadline: float, wait: float, what: str) -> int:
        """Fill ``buf``; return how many bytes arrived before EOF (len(buf) when complete)."""
        raise NotImplementedError

    def _close(self) -> None:
        raise NotImplementedError


def timeout_error(wait: float, what: str) -> ProtocolError:
    return ProtocolError(f"peer did not answer within {wait:g} s (waiting for the {what})")
