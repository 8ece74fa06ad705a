"""cluster.session_actor — one client session of ``picompile serve --ray``, inside a Ray actor.

Reads: the plan (from Ray's object store), the serving options (:class:`SessionSpec`), and the
client's bytes as the front end pushes them (:meth:`SessionHost.push`).
Writes: the session's reply bytes for the front end to pull (:meth:`SessionHost.pull`), and the
session's outcome (:class:`SessionOutcome`). Nothing on disk.

The actor runs the protocols' own server sessions — ``FheServer`` and ``HybridServer``, the
classes ``picompile serve`` runs without Ray — on an :class:`InMemoryChannel` whose queues the
front end fills and drains: the framing, the checks and the timeouts are the channel's, the
protocol is the session class's; the actor only moves bytes. It must be created with
``max_concurrency`` ≥ 3 (:meth:`run`, :meth:`push` and :meth:`pull` run on their own threads).
This module does not import Ray: the front end wraps :class:`SessionHost` with ``ray.remote``.
"""

from __future__ import annotations

import queue
import time
from dataclasses import dataclass
from typing import Any

from picompile.errors import PicompileError, ProtocolError
from picompile.plan import Plan
from picompile.runtime.channel import InMemoryChannel
from picompile.runtime.cluster.spec import SessionSpec

#: At most this many bytes per :meth:`SessionHost.pull` (several frames are coalesced).
PULL_BYTES = 64 << 20


@dataclass(frozen=True)
class SessionOutcome:
    """What a finished session reports to the front end."""

    inferences: int
    seconds: float
    error: str | None = None


class SessionHost:
    """The actor's state: one session's plan, channel and server session."""

    def __init__(self, plan: Plan, spec: SessionSpec) -> None:
        # the front end passes an ObjectRef: Ray resolves it from the object store
        self.plan = plan
        self.spec = spec
        self._inbox: queue.Queue = queue.Queue()
        self._outbox: queue.Queue = queue.Queue()
        self.channel = InMemoryChannel(self._inbox, self._outbox, timeout=spec.timeout)

    def ready(self) -> bool:
        """Answered once the actor is placed and its plan is loaded."""
        return True

    def _open(self) -> Any:
        if self.plan.protocol == "fhe":
            from picompile.runtime.fhe_session import FheServer

            make_server = None
            if self.spec.workers > 0:
                from picompile.runtime.cluster.workers import distributed_server_factory

                make_server = distributed_server_factory(self.spec)
            return FheServer(self.plan, self.channel, make_server=make_server)
        from picompile.runtime.hybrid.service import session_opener

        return session_opener(self.plan, self.spec.dealer, self.spec.timeout,
                              self.spec.correlations)(self.channel)

    def run(self) -> SessionOutcome:
        """Serve the session to its end; the channel is closed (an EOF for the front end)."""
        start = time.perf_counter()
        server = None
        try:
            server = self._open()
            count = server.serve()
            return SessionOutcome(count, time.perf_counter() - start)
        except PicompileError as exc:
            if not isinstance(exc, ProtocolError):  # a ProtocolError was already reported
                self.channel.send_error(str(exc))
            return SessionOutcome(0, time.perf_counter() - start, str(exc))
        finally:
            if server is not None:
                server.close()
            else:
                self.channel.close()

    def push(self, data: bytes | None) -> None:
        """Bytes from the client (``None``: the client closed the connection)."""
        self._inbox.put(data)

    def pull(self, wait: float = 1.0) -> bytes | None:
        """The session's next reply bytes (``b""`` if none within ``wait`` s; ``None`` once the
        session has closed its channel and everything was pulled)."""
        try:
            first = self._outbox.get(timeout=wait)
        except queue.Empty:
            return b""
        if first is None:
            return None
        parts, size = [first], len(first)
        while size < PULL_BYTES:
            try:
                item = self._outbox.get_nowait()
            except queue.Empty:
                break
            if item is None:
                self._outbox.put(None)  # the EOF comes with the next pull
                break
            parts.append(item)
            size += len(item)
        return b"".join(parts)
