"""In-memory channel endpoints: connected pairs over two queues (tests, single-process runs).

Reads: frames from the inbox queue the peer writes to.
Writes: frames to the outbox queue the peer reads; closing an endpoint puts an EOF there.
"""

from __future__ import annotations

import queue
import time
from typing import Any

from picompile.errors import ProtocolError
from picompile.runtime.channel.base import Channel, timeout_error

_EOF = None


class InMemoryChannel(Channel):
    """Queue-based endpoint (tests, single-process runs). Create connected pairs with
    :meth:`pair`; closing an endpoint is an EOF for its peer."""

    def __init__(self, inbox: queue.Queue, outbox: queue.Queue, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._inbox = inbox
        self._outbox = outbox
        self._pending = bytearray()
        self._eof = False
        self._peer: InMemoryChannel | None = None

    @classmethod
    def pair(cls, **kwargs: Any) -> tuple[InMemoryChannel, InMemoryChannel]:
        a_to_b: queue.Queue = queue.Queue()
        b_to_a: queue.Queue = queue.Queue()
        a = cls(b_to_a, a_to_b, **kwargs)
        b = cls(a_to_b, b_to_a, **kwargs)
        a._peer, b._peer = b, a
        return a, b

    def _write(self, header: bytes, body: bytes) -> None:
        if self._peer is not None and self._peer._closed:
            raise ProtocolError("peer closed the connection")
        self._outbox.put(header + body)

    def send_raw(self, data: bytes) -> None:
        """Put raw bytes on the wire (tests: malformed frames). Not counted."""
        self._outbox.put(bytes(data))

    def _read_into(self, buf: bytearray, deadline: float, wait: float, what: str) -> int:
        n = len(buf)
        while len(self._pending) < n and not self._eof:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise self._fail(str(timeout_error(wait, what)))
            try:
                chunk = self._inbox.get(timeout=remaining)
            except queue.Empty:
                raise self._fail(str(timeout_error(wait, what))) from None
            if chunk is _EOF:
                self._eof = True
            else:
                self._pending += chunk
        got = min(n, len(self._pending))
        buf[:got] = self._pending[:got]
        del self._pending[:got]
        return got

    def _close(self) -> None:
        self._outbox.put(_EOF)
