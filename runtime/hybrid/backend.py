"""hybrid.backend — the hybrid protocol in one process: client, server (and dealer) as threads.

Reads: a full hybrid plan and the inputs (batch axis first).
Writes: a :class:`~picompile.runtime.backend.RunResult` with the client's decrypted outputs and
per-inference communication (bytes, flights, times) measured on in-memory channels.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from picompile.errors import ProtocolError
from picompile.plan import Plan
from picompile.runtime.backend import Backend, RunResult
from picompile.runtime.channel import InMemoryChannel
from picompile.runtime.hybrid.client import HybridClient
from picompile.runtime.hybrid.dealer import run_dealer
from picompile.runtime.hybrid.server import HybridServer
from picompile.runtime.hybrid.views import hybrid_settings


class HybridBackend(Backend):
    """Client, server and dealer in one process (threads, in-memory channels, bytes between).

    ``progress(description, done, total)`` is called after key setup and each sample."""

    name = "hybrid"

    def __init__(self, progress: Callable[[str, int, int], None] | None = None,
                 timeout: float = 300.0, correlations: str | None = None) -> None:
        self.progress = progress or (lambda description, done, total: None)
        self.timeout = timeout
        self.correlations = correlations  # None: the plan's (two-party OT or dealer)

    def execute(self, plan: Plan, inputs: dict[str, np.ndarray]) -> RunResult:
        hybrid_settings(plan)
        start = time.perf_counter()
        x = next(iter(inputs.values()))
        client_end, server_end = InMemoryChannel.pair(timeout=self.timeout)
        client_dealer, dealer_client = InMemoryChannel.pair(timeout=self.timeout)
        server_dealer, dealer_server = InMemoryChannel.pair(timeout=self.timeout)
        server = HybridServer(plan, server_end, server_dealer, correlations=self.correlations)
        client = HybridClient(plan, client_end, client_dealer, correlations=self.correlations)
        errors: list[BaseException] = []

        def guarded(target: Callable[[], Any]) -> Callable[[], None]:
            def run() -> None:
                try:
                    target()
                except BaseException as exc:  # noqa: BLE001 - reported to the caller
                    errors.append(exc)
            return run

        threads = [threading.Thread(target=guarded(server.serve), daemon=True)]
        if client.needs_dealer:
            threads.append(threading.Thread(
                target=guarded(lambda: run_dealer((dealer_client, dealer_server))), daemon=True))
        for thread in threads:
            thread.start()
        try:
            outputs, totals = client.run_all(x, self.progress)
        except ProtocolError:
            if errors:
                raise errors[0] from None
            raise
        for thread in threads:
            thread.join(timeout=self.timeout)
        if errors:
            raise errors[0]
        dealer_bytes = sum(ch.traffic.bytes_sent + ch.traffic.bytes_received
                           for ch in (dealer_client, dealer_server))
        return RunResult({plan.outputs[0].name: outputs}, seconds=time.perf_counter() - start,
                         backend=self.name, communication=client.communication(totals,
                                                                               dealer_bytes))
