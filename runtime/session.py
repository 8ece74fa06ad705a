"""session — what the FHE and the hybrid protocol share around their messages.

Reads: a plan (for its client view and fingerprint), ``HOST:PORT`` addresses, TCP connections.
Writes: client views of plans, plan fingerprints, TCP listeners and connections; nothing on disk.

* :data:`PROTOCOL_VERSION` — the session protocol version both protocols (and the hybrid dealer)
  put in their ``hello``. The channel's frame header carries its own, separate
  :data:`~picompile.runtime.channel.FRAME_VERSION` (the framing and payload encoding).
* :func:`client_view` / :func:`is_client_view` — the one place a plan is marked as, and checked
  for being, the client's copy (no server secrets).
* :func:`fingerprint` — sha256 of the public part of a plan both parties check in ``hello``.
* :func:`serve_tcp` — the server's accept loop: one :class:`ServerSession` after another
  (``once``: a single one).
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any, Protocol

from picompile.errors import ProtocolError
from picompile.plan import Plan, Step
from picompile.runtime.channel import Channel, TcpChannel

PROTOCOL_VERSION = 1


def parse_address(text: str) -> tuple[str, int]:
    """``HOST:PORT`` → (host, port); a :class:`ProtocolError` for anything else."""
    host, _, port = text.rpartition(":")
    if not host or not port.isdigit():
        raise ProtocolError(f"address {text!r} is not HOST:PORT")
    return host, int(port)


def connect(address: str, timeout: float) -> TcpChannel:
    """A channel to the peer listening at ``HOST:PORT``."""
    host, port = parse_address(address)
    return TcpChannel.connect(host, port, timeout=timeout)


# --------------------------------------------------------------------------- plan views


def is_client_view(plan: Plan) -> bool:
    """Whether ``plan`` is a client's copy made by :func:`client_view`."""
    return plan.client_view


def client_view(plan: Plan, keep: Callable[[str], bool]) -> Plan:
    """``plan`` with only the arrays whose name ``keep`` accepts (and step parameters that name
    such an array), marked as a client view; a client view is returned as it is."""
    if is_client_view(plan):
        return plan
    steps = [replace(step, params={role: key for role, key in step.params.items() if keep(key)})
             for step in plan.steps]
    arrays = {name: value for name, value in plan.arrays.items() if keep(name)}
    return replace(plan, steps=steps, arrays=arrays, client_view=True)


def fingerprint(plan: Plan, extra: dict[str, Any],
                step_detail: Callable[[Step], Any] | None = None) -> str:
    """sha256 of the public part of ``plan`` both parties must agree on: every step's name, op,
    inputs and outputs (and ``step_detail(step)`` if given), every value's shape, the rotation
    key list, and the protocol-specific public parts in ``extra`` (JSON-serializable; keys other
    than ``steps``, ``values`` and ``rotations``)."""
    steps = [[s.name, s.op, s.inputs, s.outputs] + ([step_detail(s)] if step_detail else [])
             for s in plan.steps]
    public = {
        "steps": steps,
        "values": {k: list(v.shape) for k, v in sorted(plan.values.items())},
        "rotations": plan.rotation_keys,
        **extra,
    }
    return hashlib.sha256(json.dumps(public, sort_keys=True).encode()).hexdigest()


def require_same_plan(channel: Channel, hello: dict[str, Any], own: str) -> None:
    """Server side of ``hello``: an ``error`` to the client and a :class:`ProtocolError` unless
    the client's plan fingerprint is ``own``."""
    if hello.get("plan") != own:
        channel.send_error("plan mismatch: the client and the server hold different plans")
        raise ProtocolError("the client's plan differs from the server's")


# --------------------------------------------------------------------------- serving


class ServerSession(Protocol):
    """One client session on the server: :meth:`serve` runs it and returns its inference count;
    :meth:`close` closes the client channel and whatever else the session opened."""

    def serve(self) -> int: ...

    def close(self) -> None: ...


def serve_tcp(open_session: Callable[[Channel], ServerSession], port: int, *,
              host: str = "127.0.0.1", once: bool = False, timeout: float = 300.0,
              on_listen: Callable[[int], None] | None = None,
              on_session: Callable[[int, float], None] | None = None) -> None:
    """Accept clients one after another, each served by ``open_session(channel)``. An error
    while opening a session (a misconfigured server) ends the loop; a :class:`ProtocolError`
    during a session ends that session only, unless ``once`` (a single session; its error is
    raised). ``on_listen(port)`` is called once listening, ``on_session(count, seconds)`` after
    each completed session."""
    listener = TcpChannel.listen(host, port, timeout=timeout)
    if on_listen is not None:
        on_listen(listener.port)
    try:
        while True:
            channel = listener.accept(timeout=None)
            start = time.perf_counter()
            try:
                server = open_session(channel)
            except BaseException:
                channel.close()
                raise
            try:
                count = server.serve()
                if on_session is not None:
                    on_session(count, time.perf_counter() - start)
            except ProtocolError:
                if once:
                    raise
            finally:
                server.close()
            if once:
                return
    finally:
        listener.close()
