"""hybrid.service — the hybrid protocol over TCP: server, client and dealer processes.

Reads: a hybrid plan (the server's full plan or the client's view), ``HOST:PORT`` addresses
(the dealer's only with ``correlations="dealer"``),
the client's input samples; TCP connections from the peers.
Writes: served sessions (the server, the dealer) or the client's outputs with per-inference
communication and times (:func:`client_run`). The dealer pairs the client's and the server's
connections by the session id of their ``hello``.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable

import numpy as np

from picompile.errors import ProtocolError
from picompile.plan import Plan
from picompile.runtime.backend import RunResult
from picompile.runtime.channel import Channel, TcpChannel
from picompile.runtime.hybrid.client import HybridClient
from picompile.runtime.hybrid.dealer import run_dealer
from picompile.runtime.hybrid.server import HybridServer
from picompile.runtime.hybrid.views import hybrid_settings
from picompile.runtime.session import PROTOCOL_VERSION, connect, serve_tcp

#: Between requests the dealer waits as long as both parties stay connected (their HE work can
#: take minutes); a party that disconnects is still noticed at once.
DEALER_IDLE_SECONDS = 24 * 3600


def _dealer_hello(address: str, role: str, session: str, timeout: float) -> Channel:
    channel = connect(address, timeout)
    channel.send("hello", {"version": PROTOCOL_VERSION, "role": role, "session": session})
    return channel


def serve(plan: Plan, port: int, *, host: str = "127.0.0.1", dealer: str | None = None,
          correlations: str | None = None, once: bool = False, timeout: float = 300.0,
          on_listen: Callable[[int], None] | None = None,
          on_session: Callable[[int, float], None] | None = None) -> None:
    """Serve clients one after another on TCP (``once``: a single session). ``correlations``
    (None: the plan's): "two-party" (OT with each client) or "dealer" (needs ``dealer``)."""
    serve_tcp(session_opener(plan, dealer, timeout, correlations), port, host=host, once=once,
              timeout=timeout, on_listen=on_listen, on_session=on_session)


def session_opener(plan: Plan, dealer: str | None, timeout: float,
                   correlations: str | None = None) -> Callable[[Channel], HybridServer]:
    """``open_session(channel)``: a server session of ``plan`` on a client's channel, its
    correlations from OT with the client or, in dealer mode, from the dealer at ``dealer``
    (HOST:PORT). A clear error first if ``plan`` is not servable."""
    mode = correlations or hybrid_settings(plan).correlations
    connect_dealer = None if dealer is None or mode != "dealer" else (
        lambda session: _dealer_hello(dealer, "server", session, timeout))

    def open_session(channel: Channel) -> HybridServer:
        return HybridServer(plan, channel, dealer_connect=connect_dealer,
                            correlations=correlations)

    return open_session


def client_run(plan: Plan, address: str, x: np.ndarray, *, dealer: str | None = None,
               correlations: str | None = None, timeout: float = 300.0) -> RunResult:
    """Connect to a server, run every sample of ``x`` (batch axis first), return the outputs
    (before the head) with per-inference communication and times."""
    start = time.perf_counter()
    channel = connect(address, timeout)
    session = os.urandom(16).hex()
    dealer_channel = None
    try:
        mode = correlations or hybrid_settings(plan).correlations
        if dealer is not None and mode == "dealer":
            dealer_channel = _dealer_hello(dealer, "client", session, timeout)
        client = HybridClient(plan, channel, dealer_channel, session=session,
                              correlations=correlations)
    except BaseException:
        channel.close()
        raise
    try:
        outputs, totals = client.run_all(x)
    finally:
        channel.close()
        if dealer_channel is not None:
            dealer_channel.close()
    dealer_bytes = 0 if dealer_channel is None else (
        dealer_channel.traffic.bytes_sent + dealer_channel.traffic.bytes_received)
    return RunResult({plan.outputs[0].name: outputs}, seconds=time.perf_counter() - start,
                     backend="hybrid", communication=client.communication(totals, dealer_bytes))


def dealer_service(port: int, *, host: str = "127.0.0.1", sessions: int | None = None,
                   timeout: float = 300.0, on_listen: Callable[[int], None] | None = None,
                   on_session_end: Callable[[int, int], None] | None = None) -> None:
    """The trusted dealer as a TCP service: pairs the client's and the server's connections by
    session id and serves each pair in a thread (``sessions``: stop after that many).
    ``on_session_end(requests, bytes)``: a session's requests served and bytes moved on both
    links (headers included), when its parties say bye."""
    listener = TcpChannel.listen(host, port, timeout=max(timeout, DEALER_IDLE_SECONDS))
    if on_listen is not None:
        on_listen(listener.port)
    pending: dict[str, dict[str, Channel]] = {}
    threads: list[threading.Thread] = []
    served = 0
    try:
        while sessions is None or served < sessions:
            channel = listener.accept(timeout=None)
            try:
                hello = channel.expect("hello")
                role, session = str(hello["role"]), str(hello["session"])
                if role not in ("client", "server") or hello.get("version") != PROTOCOL_VERSION:
                    raise KeyError(role)
            except (ProtocolError, KeyError, TypeError):
                channel.close()
                continue
            pair = pending.setdefault(session, {})
            pair[role] = channel
            if len(pair) == 2:
                del pending[session]
                ends = (pair["client"], pair["server"])

                def run(ends: tuple[Channel, Channel] = ends) -> None:
                    try:
                        requests = run_dealer(ends)
                        if on_session_end is not None:
                            on_session_end(requests, sum(end.traffic.bytes_sent
                                                         + end.traffic.bytes_received
                                                         for end in ends))
                    except ProtocolError:
                        pass
                    finally:
                        for end in ends:
                            end.close()

                thread = threading.Thread(target=run, daemon=True)
                thread.start()
                threads.append(thread)
                served += 1
        for thread in threads:  # each ends when its parties say bye or disconnect
            thread.join()
    finally:
        listener.close()
