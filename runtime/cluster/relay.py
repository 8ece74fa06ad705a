"""cluster.relay — the TCP front end of ``picompile serve --ray``: sessions as Ray actors.

Reads: client TCP connections; the cluster's free memory (``ray.available_resources``).
Writes: one :class:`~picompile.runtime.cluster.session_actor.SessionHost` actor per admitted
client (placed by Ray on a node with the memory it requests), the bytes relayed between the
client's socket and that actor, and an ``error`` frame to a client refused for lack of room.

The front end does no protocol work: it admits a client, creates its actor (the plan travels
once to the object store and is shared by every actor on a node), then two loops move raw bytes
— socket → :meth:`SessionHost.push`, :meth:`SessionHost.pull` → socket — until the session
closes its channel; the actor is then killed, which releases its memory. Sessions run in
parallel (one relay thread each). A client the cluster has no room for (free memory below the
request, or the actor not placed within ``placement_timeout``) gets an ``error`` message naming
the memory needed and free, and its connection is closed; the server goes on. A session whose
actor dies (Ray's memory monitor kills workers when a node runs out of memory; a node lost)
gets an ``error`` message too ("the server lost this session"), never a silent hang.
"""

from __future__ import annotations

import contextlib
import select
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from picompile.errors import ProtocolError
from picompile.plan import Plan
from picompile.runtime.channel import TcpChannel
from picompile.runtime.cluster import load_ray, ray_reason
from picompile.runtime.cluster.session_actor import SessionHost, SessionOutcome
from picompile.runtime.cluster.spec import SessionSpec

RECV_BYTES = 4 << 20
#: Session actors are named with this prefix (``ray list actors`` shows them).
SESSION_NAME_PREFIX = "picompile-session-"
#: How long a client whose session actor died may take to read the error (its keys may still
#: be arriving).
LOST_SESSION_DRAIN_SECONDS = 60.0


@dataclass(frozen=True)
class ClusterOptions:
    """Where the sessions run and what each one requests.

    ``address``: a running Ray cluster (``ray start --head``), or None for a local Ray started
    (and shut down) by the server with ``local_cpus`` and ``object_store_bytes``; an already
    initialized Ray (tests) is used as it is. ``session_memory``: bytes each session actor
    requests (the plan's predicted server memory); ``session_cpus``: its logical CPUs.
    """

    address: str | None = None
    session_memory: int = 1 << 30
    session_cpus: float = 1.0
    placement_timeout: float = 30.0
    local_cpus: int | None = None
    object_store_bytes: int | None = 500 << 20


def gib(n: float) -> str:
    return f"{n / 2**30:.2f} GiB"


def start_ray(options: ClusterOptions) -> tuple[Any, bool]:
    """(ray, whether this call started it): connect to ``options.address`` or start a local
    Ray, unless one is already initialized in this process."""
    ray = load_ray()
    if ray.is_initialized():
        return ray, False
    if options.address is not None:
        ray.init(address=options.address, logging_level="warning")
    else:
        ray.init(num_cpus=options.local_cpus, object_store_memory=options.object_store_bytes,
                 include_dashboard=False, logging_level="warning")
    return ray, True


def admit(ray: Any, host_class: Any, plan_ref: Any, spec: SessionSpec,
          options: ClusterOptions) -> Any:
    """A placed, ready session actor; a :class:`ProtocolError` when the cluster has no room."""
    need = options.session_memory + spec.workers * spec.worker_memory
    free = ray.available_resources().get("memory", 0.0)
    if need > free:
        raise ProtocolError(f"the server's cluster has no room for another session: it needs "
                            f"{gib(need)} of memory and {gib(free)} are free; try again later")
    settings: dict[str, Any] = {"num_cpus": options.session_cpus, "max_concurrency": 4,
                                "max_restarts": 0,
                                "name": f"{SESSION_NAME_PREFIX}{uuid.uuid4().hex[:12]}"}
    if options.session_memory > 0:
        settings["memory"] = options.session_memory
    actor = host_class.options(**settings).remote(plan_ref, spec)
    try:
        ray.get(actor.ready.remote(), timeout=options.placement_timeout)
    except ray.exceptions.GetTimeoutError:
        ray.kill(actor)
        raise ProtocolError(f"the server's cluster has no room for another session: no node "
                            f"could place one needing {gib(need)} within "
                            f"{options.placement_timeout:g} s; try again later") from None
    except ray.exceptions.RayError as exc:
        ray.kill(actor)
        raise ProtocolError(f"the server could not start a session: {ray_reason(exc)}"
                            ) from None
    return actor


def refuse(channel: TcpChannel, reason: str) -> None:
    """Tell a client it was not admitted (after its ``hello``, so it reads the reply)."""
    with contextlib.suppress(ProtocolError):
        channel.recv(timeout=5.0)
    channel.send_error(reason)
    channel.close()


def relay(ray: Any, channel: TcpChannel, actor: Any) -> SessionOutcome:
    """Move bytes between the client's socket and its session actor until the session ends;
    then kill the actor (its memory is released). Returns the session's outcome."""
    sock = channel.sock
    run = actor.run.remote()
    stop = threading.Event()
    lost = threading.Event()  # the actor is gone: the client's bytes are read and dropped

    def upstream() -> None:
        while not stop.is_set():
            readable, _, _ = select.select([sock], [], [], 0.5)
            if not readable:
                continue
            try:
                data = sock.recv(RECV_BYTES)
            except OSError:
                data = b""
            if not lost.is_set():
                try:
                    ray.get(actor.push.remote(data or None))
                except ray.exceptions.RayError:
                    lost.set()  # the downstream loop reports it
            if not data:
                return

    reader = threading.Thread(target=upstream, daemon=True)
    reader.start()
    try:
        while True:
            data = ray.get(actor.pull.remote(1.0))
            if data is None:
                break
            if data:
                sock.sendall(data)
        return ray.get(run)
    except ray.exceptions.RayError as exc:
        lost.set()
        # pulls carry whole frames: the client's stream is at a frame boundary, so it can read
        # an error; its pending bytes are drained until it has read it and hung up
        channel.send_error("the server lost this session (its Ray actor died, e.g. its node "
                           "ran out of memory); try again")
        reader.join(timeout=LOST_SESSION_DRAIN_SECONDS)
        return SessionOutcome(0, 0.0, f"the session's actor was lost: {ray_reason(exc)}")
    except OSError as exc:  # the client went away while replies were pending
        return SessionOutcome(0, 0.0, f"the client connection failed: {exc}")
    finally:
        stop.set()
        channel.close()
        reader.join(timeout=5)
        ray.kill(actor)


def serve_ray(plan: Plan, port: int, spec: SessionSpec, options: ClusterOptions, *,
              host: str = "127.0.0.1", once: bool = False, timeout: float = 300.0,
              on_listen: Callable[[int], None] | None = None,
              on_session: Callable[[int, float], None] | None = None,
              on_refuse: Callable[[str], None] | None = None,
              on_failure: Callable[[str], None] | None = None,
              clients: int | None = None) -> None:
    """Serve clients concurrently, each session in its own Ray actor (``once``: a single
    session, whose error is raised; ``clients``: stop accepting after that many connections,
    admitted or refused, and return once their sessions ended). ``on_session(count, seconds)``
    after each completed session, ``on_refuse(reason)`` for each client refused,
    ``on_failure(reason)`` for each session that ended in an error."""
    ray, started = start_ray(options)
    try:
        host_class = ray.remote(SessionHost)
        plan_ref = ray.put(plan)
        listener = TcpChannel.listen(host, port, timeout=timeout)
        relays: list[threading.Thread] = []
        try:
            if on_listen is not None:
                on_listen(listener.port)
            accepted = 0
            while clients is None or accepted < clients:
                channel = listener.accept(timeout=None)
                accepted += 1
                try:
                    actor = admit(ray, host_class, plan_ref, spec, options)
                except ProtocolError as exc:
                    refuse(channel, str(exc))
                    if on_refuse is not None:
                        on_refuse(str(exc))
                    if once:
                        raise
                    continue
                outcome: dict[str, SessionOutcome] = {}

                def serve_one(channel: TcpChannel = channel, actor: Any = actor,
                              outcome: dict = outcome) -> None:
                    result = outcome["result"] = relay(ray, channel, actor)
                    if result.error is None and on_session is not None:
                        on_session(result.inferences, result.seconds)
                    elif result.error is not None and on_failure is not None:
                        on_failure(result.error)

                thread = threading.Thread(target=serve_one, daemon=True)
                thread.start()
                relays = [t for t in relays if t.is_alive()] + [thread]
                if once:
                    thread.join()
                    if outcome["result"].error is not None:
                        raise ProtocolError(outcome["result"].error)
                    return
        finally:
            listener.close()
            for thread in relays:
                thread.join(timeout=timeout)
    finally:
        if started:
            ray.shutdown()
