"""cluster.workers — one CKKS inference across Ray workers: a linear step's giant steps split.

Reads: the plan and one session's public key material (both put once in Ray's object store),
the prepared input ciphertext of each split linear step.
Writes: :class:`StepWorker` actors (each deserializes the session's keys once, at start, and
keeps them: a ``CkksServer`` without the bootstrap set-up), the partial sums they return, and
per-session counters (:class:`SplitStats`).

A BSGS linear step is y = Σ_g rot_g(Σ_b diag'_(g+b) ⊙ rot_b(x)) + bias: each giant step's
baby-step sum is independent. :class:`DistributedProgram` (a ``SlotProgram``) serializes the
prepared ciphertext once into the object store, gives each worker a group of giant steps
(balanced by diagonal count, ``slot_program.partition_giants``), each worker hoists the baby
rotations its group needs and returns Σ over its giants (``CkksServer.linear_part``); the
session adds the parts and the bias. Everything else (activations, bootstraps) stays on the
session's actor.

Worker loss: workers are actors with ``max_restarts``/``max_task_retries`` =
``SessionSpec.worker_restarts``: a killed worker is restarted (its keys re-read from the object
store) and its part retried; past the restarts, or past the session timeout, the step fails
with a :class:`BackendError` that ``FheServer`` reports to the client (a ``ProtocolError``
there). This module does not import Ray at import time.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from picompile.errors import BackendError, ProtocolError
from picompile.plan import Plan, Step
from picompile.runtime.cluster import load_ray, ray_reason
from picompile.runtime.cluster.spec import SessionSpec
from picompile.runtime.slot_program import SlotProgram, partition_giants

#: How long a session waits for its workers to be placed and hold its keys.
PLACEMENT_SECONDS = 120.0


class StepWorker:
    """One worker of a session: its keys, deserialized once; evaluates parts of linear steps."""

    def __init__(self, plan: Plan, material: Any) -> None:
        from picompile.runtime.ckks import CkksServer

        start = time.perf_counter()
        self.server = CkksServer(plan, material, bootstrap=False)
        self.setup_seconds = time.perf_counter() - start

    def ready(self) -> float:
        """Seconds the keys took to deserialize (answered once the worker is set up)."""
        return self.setup_seconds

    def part(self, step_name: str, data: bytes, giants: list[int], factor: float
             ) -> tuple[bytes, float, float]:
        """(serialized Σ over ``giants`` of step ``step_name``, wall seconds, CPU seconds of
        this worker: below the wall time when the worker shares its core)."""
        start, cpu = time.perf_counter(), time.process_time()
        result = self.server.linear_part(step_name, data, giants, factor)
        return result, time.perf_counter() - start, time.process_time() - cpu


@dataclass
class SplitStats:
    """What a session's split steps cost: steps split, parts sent, seconds on the workers
    (summed, and the slowest part of each step summed: the critical path, in wall and in CPU
    seconds), seconds the session
    waited for them, ciphertext bytes each way."""

    steps: int = 0
    parts: int = 0
    worker_seconds: float = 0.0
    critical_seconds: float = 0.0
    critical_cpu_seconds: float = 0.0
    wait_seconds: float = 0.0
    bytes_out: int = 0
    bytes_back: int = 0


class WorkerPool:
    """A session's :class:`StepWorker` actors; ``close`` kills them (the session's end)."""

    def __init__(self, plan: Plan, material: Any, spec: SessionSpec) -> None:
        self.ray = ray = load_ray()
        self.spec = spec
        self.plan_ref = ray.put(plan)
        self.material_ref = ray.put(material)  # shipped once; re-read by a restarted worker
        settings: dict[str, Any] = {"num_cpus": spec.worker_cpus,
                                    "max_restarts": spec.worker_restarts,
                                    "max_task_retries": spec.worker_restarts}
        if spec.worker_memory > 0:
            settings["memory"] = spec.worker_memory
        remote = ray.remote(StepWorker).options(**settings)
        self.workers = [remote.remote(self.plan_ref, self.material_ref)
                        for _ in range(spec.workers)]
        try:
            self.setup_seconds = ray.get([w.ready.remote() for w in self.workers],
                                         timeout=min(spec.timeout, PLACEMENT_SECONDS))
        except ray.exceptions.GetTimeoutError:
            self.close()
            raise ProtocolError(f"the server's cluster has no room for this session's "
                                f"{spec.workers} workers: try again later") from None
        except ray.exceptions.RayError as exc:
            self.close()
            raise ProtocolError(f"the server could not start this session's workers: "
                                f"{ray_reason(exc)}") from None

    def run_parts(self, step_name: str, data: bytes, groups: list[list[int]], factor: float
                  ) -> list[tuple[bytes, float, float]]:
        """Each group of giant steps on its own worker; the parts in group order."""
        ray = self.ray
        data_ref = ray.put(data)
        futures = [self.workers[i % len(self.workers)].part.remote(step_name, data_ref, group,
                                                                    factor)
                   for i, group in enumerate(groups)]
        try:
            return ray.get(futures, timeout=self.spec.timeout)
        except ray.exceptions.GetTimeoutError:
            raise BackendError(f"the workers did not return step {step_name!r} within "
                               f"{self.spec.timeout:g} s") from None
        except ray.exceptions.RayError as exc:
            raise BackendError(f"a worker was lost during step {step_name!r} and could not be "
                               f"replaced ({ray_reason(exc)})") from None

    def close(self) -> None:
        for worker in self.workers:
            self.ray.kill(worker)
        self.workers = []


class DistributedProgram(SlotProgram):
    """A ``SlotProgram`` that sends the giant steps of large linear steps to a
    :class:`WorkerPool`; :meth:`attach` gives it the server's (de)serialization."""

    def __init__(self, plan: Plan, engine: Any, pool: WorkerPool, min_giants: int = 2) -> None:
        super().__init__(plan, engine)
        self.pool = pool
        self.min_giants = min_giants
        self.server: Any = None
        self.stats = SplitStats()

    def attach(self, server: Any) -> None:
        """The ``CkksServer`` whose ``serialize``/``adopt`` move ciphertexts to and from workers."""
        self.server = server

    def linear(self, step: Step, ciphertext: Any, factor: float = 1.0) -> Any:
        giants = self.giants(step)
        if self.server is None or len(giants) < self.min_giants:
            return super().linear(step, ciphertext, factor)
        groups = partition_giants(giants, len(self.pool.workers))
        data = self.server.serialize(self.engine.prepare(ciphertext))
        start = time.perf_counter()
        parts = self.pool.run_parts(step.name, data, groups, factor)
        stats = self.stats
        stats.wait_seconds += time.perf_counter() - start
        stats.steps += 1
        stats.parts += len(parts)
        stats.bytes_out += len(data) * len(parts)
        result = None
        stats.critical_seconds += max(seconds for _, seconds, _ in parts)
        stats.critical_cpu_seconds += max(cpu for _, _, cpu in parts)
        for blob, seconds, _ in parts:
            stats.worker_seconds += seconds
            stats.bytes_back += len(blob)
            part = self.server.adopt(blob)
            result = part if result is None else self.engine.add(result, part)
        return self.add_bias(step, result, factor)

    def close(self) -> None:
        self.pool.close()


def distributed_server_factory(spec: SessionSpec) -> Callable[[Plan, Any], Any]:
    """``make_server(plan, material)`` for ``FheServer``: a ``CkksServer`` whose linear steps
    with ≥ ``spec.min_giants`` giant steps run on ``spec.workers`` workers."""

    def make_server(plan: Plan, material: Any) -> Any:
        from picompile.runtime.ckks import CkksServer

        pool = WorkerPool(plan, material, spec)
        try:
            server = CkksServer(plan, material, program=lambda p, engine: DistributedProgram(
                p, engine, pool, spec.min_giants))
        except BaseException:
            pool.close()
            raise
        server.program.attach(server)
        return server

    return make_server
