"""schedule — bootstrapped or leveled: the cheaper CKKS schedule of a low-degree FHE plan.

Reads: two compiled FHE plans of one model — the bootstrapped one the levels pass picks for a
deep plan, and the same plan forced leveled (``--schedule leveled``: no bootstrap, the ring
dimension OpenFHE needs for the whole depth at 128-bit) — their ``Plan.ckks`` and
``analysis["cost"]`` (predicted seconds, bootstraps, predicted server memory), and this
machine's memory.
Writes: :class:`ScheduleChoice` — a row per schedule (runnable, ring, depth, bootstraps,
predicted seconds and memory, or why not) and the chosen one: the lowest predicted latency
among the runnable plans whose predicted server memory fits in this machine's memory. The
pipeline stores it in the chosen plan's ``analysis["schedule_choice"]`` (the reports show it).

When it applies (``compile --schedule auto``, the default): an FHE plan that needs
bootstrapping and whose activations are all of degree ≤ 2 (a leveled schedule of a
higher-degree plan needs so many levels that no 128-bit ring holds them). ``--schedule
bootstrapped|leveled`` forces one schedule, so that both are measurable.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field

from picompile.plan import Plan

#: Share of this machine's memory a plan's predicted server memory may take.
MEMORY_FRACTION = 0.8


@dataclass
class ScheduleRow:
    schedule: str
    runnable: bool
    ring_dimension: int | None = None
    depth: int | None = None
    bootstraps: int = 0
    predicted_seconds: float | None = None
    predicted_memory_bytes: int | None = None
    reason: str | None = None


@dataclass
class ScheduleChoice:
    chosen: str
    rows: list[ScheduleRow] = field(default_factory=list)
    memory_limit_bytes: int = 0

    def to_json(self) -> dict:
        return asdict(self)


def machine_memory_bytes() -> int:
    """Physical memory of this machine."""
    return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))


def memory_limit() -> int:
    """What a plan's predicted server memory may take of this machine."""
    return int(MEMORY_FRACTION * machine_memory_bytes())


def leveled_key_floor(plan: Plan, insecure: bool) -> int:
    """Bytes of the smallest key set a leveled schedule of ``plan``'s depth needs (the
    relinearization key and the power-of-two rotation keys at the ring OpenFHE picks): checked
    before compiling it, since its layout at that ring is itself gigabytes."""
    from picompile.cost import evaluation_key_bytes
    from picompile.runtime.interface import ckks_ring_dimension

    depth = int(plan.ckks.leveled_depth or plan.ckks.multiplicative_depth)
    ring = ckks_ring_dimension(depth, insecure)
    keys = 1 + 2 * ((ring // 2).bit_length() - 1)
    return keys * evaluation_key_bytes(ring, depth)


def applies(plan: Plan) -> bool:
    """A bootstrapped FHE plan whose activations are all of degree ≤ 2."""
    ckks = plan.ckks
    if plan.protocol != "fhe" or ckks is None or not ckks.runnable or ckks.bootstrapping is None:
        return False
    degrees = [int(s.attrs.get("degree", 0)) for s in plan.steps if s.op == "Polynomial"]
    return bool(degrees) and max(degrees) <= 2 and not any(s.op == "Product"
                                                         for s in plan.steps)


def schedule_row(schedule: str, plan: Plan | None, error: str | None = None) -> ScheduleRow:
    if plan is None:
        return ScheduleRow(schedule, False, reason=error)
    ckks, cost = plan.ckks, plan.analysis.get("cost", {})
    if ckks is None or not ckks.runnable:
        return ScheduleRow(schedule, False, reason=None if ckks is None else ckks.reason)
    memory = (cost.get("predicted_server_memory_bytes") or {}).get("total")
    depth = ckks.leveled_depth if ckks.bootstrapping is not None else ckks.multiplicative_depth
    return ScheduleRow(schedule, True, int(ckks.ring_dimension), int(depth),
                       int(cost.get("bootstraps", 0)), cost.get("predicted_seconds"),
                       None if memory is None else int(memory))


def choose_schedule(rows: list[ScheduleRow], limit_bytes: int | None = None) -> ScheduleChoice:
    """The lowest predicted latency among runnable rows that fit the memory limit (the first
    row, the bootstrapped plan, when none qualifies)."""
    limit = limit_bytes if limit_bytes is not None else memory_limit()
    for row in rows:
        if row.runnable and row.predicted_memory_bytes is not None \
                and row.predicted_memory_bytes > limit:
            row.reason = (f"predicted server memory {row.predicted_memory_bytes / 2**30:.1f} "
                          f"GiB exceeds {limit / 2**30:.1f} GiB of this machine")
    fitting = [r for r in rows if r.runnable and r.predicted_seconds is not None
               and (r.predicted_memory_bytes or 0) <= limit]
    chosen = min(fitting, key=lambda r: r.predicted_seconds).schedule if fitting \
        else rows[0].schedule
    return ScheduleChoice(chosen, rows, limit)
