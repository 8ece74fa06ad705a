"""cluster.spec — how a session of ``picompile serve --ray`` is served (a record, no logic).

Reads: nothing. Writes: nothing; :class:`SessionSpec` travels with each session actor.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class SessionSpec:
    """How a session actor serves: the protocol's options, and for FHE plans the giant-step
    workers per session (0: the session evaluates alone) and what each worker requests."""

    timeout: float = 300.0
    dealer: str | None = None
    correlations: str | None = None  # hybrid: two-party | dealer (None: the plan's)
    workers: int = 0
    worker_memory: int = 0
    worker_cpus: float = 1.0
    worker_restarts: int = 1
    min_giants: int = 2
