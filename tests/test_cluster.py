"""picompile on Ray, in process: a linear step split over workers, worker loss, session actors
behind the front end (FHE and hybrid), refusal for lack of room. The module starts and stops its
own local Ray (2 CPUs, 500 MB object store). The CLI (`serve --ray` with 4 concurrent client
processes, lazy import) is tested in test_cluster_cli.py."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

ray = pytest.importorskip("ray")

import picompile  # noqa: E402
from conftest import model_input  # noqa: E402
from picompile.errors import ProtocolError  # noqa: E402
from picompile.runtime import fhe_session, run_plan  # noqa: E402
from picompile.runtime.channel import InMemoryChannel  # noqa: E402
from picompile.runtime.ckks import CkksClient, CkksServer  # noqa: E402
from picompile.runtime.cluster.relay import ClusterOptions, serve_ray  # noqa: E402
from picompile.runtime.cluster.spec import SessionSpec  # noqa: E402
from picompile.runtime.cluster.workers import distributed_server_factory  # noqa: E402
from picompile.runtime.fhe_session import FheClient, FheServer, fhe_client_view  # noqa: E402
from picompile.runtime.slot_program import partition_giants  # noqa: E402


@pytest.fixture(scope="module")
def local_ray():
    # the machine is shared: Ray's memory monitor (default: kill workers above 95 % of the
    # node's memory, whoever uses it) would kill these small actors when other jobs fill it
    ray.init(num_cpus=2, object_store_memory=500 << 20, include_dashboard=False,
             logging_level="warning", _system_config={"memory_usage_threshold": 0.99})
    yield ray
    ray.shutdown()


def _serve_in_thread(server: FheServer) -> tuple[threading.Thread, dict]:
    outcome: dict = {}

    def target() -> None:
        try:
            outcome["count"] = server.serve()
        except Exception as exc:  # noqa: BLE001 (reported to the test)
            outcome["error"] = exc
        finally:
            server.close()

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    return thread, outcome


def test_partition_balances_diagonals():
    giants = {0: 8, 8: 8, 16: 8, 24: 4, 32: 4}
    groups = partition_giants(giants, 2)
    assert sorted(g for group in groups for g in group) == sorted(giants)
    loads = [sum(giants[g] for g in group) for group in groups]
    assert loads == [16, 16]
    assert partition_giants({0: 3}, 4) == [[0]]


def test_split_step_equals_single_process(cnn_plan, digits_split, local_ray):
    """Each linear step's giant steps on 2 workers: the decrypted output equals the
    single-process CKKS server's within CKKS noise, and the plain slot-level model's."""
    client = CkksClient(cnn_plan)
    material = client.public_material()
    x = model_input(digits_split["test_images"][:1], "img8")
    encrypted = {"input": client.encrypt(x[0], "input")}
    name = cnn_plan.outputs[0].name
    single = client.decrypt(CkksServer(cnn_plan, material).evaluate(encrypted)[0][name], name)
    split = distributed_server_factory(SessionSpec(workers=2, timeout=120))(cnn_plan, material)
    try:
        outputs, _ = split.evaluate(encrypted)
        stats = split.program.stats
    finally:
        split.close()
    linear = [s for s in cnn_plan.steps if s.fhe is not None and s.fhe.linear is not None]
    assert stats.steps == sum(len({(int(o) // s.fhe.linear.baby_step) for o in
                                   s.fhe.linear.offsets}) >= 2 for s in linear) > 0
    assert stats.parts == 2 * stats.steps and stats.bytes_out > 0 and stats.bytes_back > 0
    distributed = client.decrypt(outputs[name], name)
    plain = run_plan(cnn_plan, x).server_outputs[name].reshape(-1)
    assert np.max(np.abs(distributed - single)) < 1e-6
    assert np.max(np.abs(distributed - plain)) < 1e-4


def _session_with_workers(plan, spec: SessionSpec):
    server_end, client_end = InMemoryChannel.pair(timeout=120)
    server = FheServer(plan, server_end, make_server=distributed_server_factory(spec))
    thread, outcome = _serve_in_thread(server)
    client = FheClient(fhe_client_view(plan))
    client.setup(client_end)
    deadline = time.monotonic() + 60
    while server.evaluator is None:  # the workers start once the keys arrived
        assert time.monotonic() < deadline and thread.is_alive(), outcome
        time.sleep(0.05)
    return server, client, thread, outcome


def test_worker_killed_mid_inference_is_replaced(cnn_plan, digits_split, local_ray):
    """A worker killed while the session runs is restarted by Ray (keys re-read from the object
    store) and its part retried: the answers stay right, nothing hangs."""
    server, client, thread, outcome = _session_with_workers(
        cnn_plan, SessionSpec(workers=2, worker_restarts=2, timeout=120))
    x = model_input(digits_split["test_images"][:2], "img8")
    name = cnn_plan.outputs[0].name
    pool = server.evaluator.program.pool
    victim, run_parts, killers = pool.workers[0], pool.run_parts, []

    def run_parts_then_kill(*args, **kwargs):  # the first split step: kill while it runs
        if not killers:
            killers.append(threading.Timer(0.01, ray.kill, (victim,), {"no_restart": False}))
            killers[0].start()
        return run_parts(*args, **kwargs)

    pool.run_parts = run_parts_then_kill
    outputs = [client.infer({"input": sample})[name] for sample in x]
    killers[0].join()
    outputs.append(client.infer({"input": x[1]})[name])  # after the restart too
    client.finish()
    thread.join(timeout=60)
    assert outcome == {"count": 3}
    plain = run_plan(cnn_plan, x).server_outputs[name]
    assert np.max(np.abs(np.stack(outputs[:2]) - plain)) < 1e-4
    assert np.max(np.abs(outputs[2] - plain[1])) < 1e-4


def test_worker_lost_for_good_is_a_protocol_error(cnn_plan, digits_split, local_ray):
    """Without restarts, a lost worker ends the session: the client gets a ProtocolError
    naming the failure (no hang, no answer)."""
    server, client, thread, outcome = _session_with_workers(
        cnn_plan, SessionSpec(workers=2, worker_restarts=0, timeout=120))
    ray.kill(server.evaluator.program.pool.workers[1], no_restart=True)
    start = time.monotonic()
    with pytest.raises(ProtocolError, match="worker was lost"):
        client.infer({"input": model_input(digits_split["test_images"][:1], "img8")[0]})
    assert time.monotonic() - start < 60
    thread.join(timeout=60)
    assert isinstance(outcome.get("error"), ProtocolError)


def _start_front_end(plan, spec: SessionSpec, options: ClusterOptions,
                     clients: int | None = None) -> tuple[int, dict]:
    ready = threading.Event()
    state: dict = {"refused": []}

    def listening(port: int) -> None:
        state["port"] = port
        ready.set()

    def target() -> None:
        try:
            serve_ray(plan, 0, spec, options, once=clients is None, timeout=60,
                      on_listen=listening, on_refuse=state["refused"].append, clients=clients)
        except Exception as exc:  # noqa: BLE001 (reported to the test)
            state["error"] = exc

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    assert ready.wait(60)
    state["thread"] = thread
    return state["port"], state


def test_no_room_refuses_the_client_clearly(cnn_plan, digits_split, local_ray):
    """A session needing more memory than the cluster has free is refused with a clear error
    sent to that client; no actor is left behind."""
    free = ray.available_resources().get("memory", 0)
    port, state = _start_front_end(cnn_plan, SessionSpec(timeout=60),
                                   ClusterOptions(session_memory=int(free * 2)))
    with pytest.raises(ProtocolError, match="no room for another session"):
        fhe_session.client_run(fhe_client_view(cnn_plan), f"127.0.0.1:{port}",
                               model_input(digits_split["test_images"][:1], "img8"), timeout=30)
    deadline = time.monotonic() + 30
    while "error" not in state:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert state["refused"] and "GiB" in state["refused"][0]
    assert ray.available_resources().get("memory", 0) == pytest.approx(free, rel=1e-3)


def test_full_cluster_refuses_the_next_session_until_one_ends(cnn_plan, digits_split,
                                                              local_ray):
    """Sessions each requesting 60 % of the free memory: while one is open the next client is
    refused with a clear error; the open session still completes with the right answer, and
    its actor's memory is released when it ends."""
    free = ray.available_resources().get("memory", 0)
    port, state = _start_front_end(cnn_plan, SessionSpec(timeout=60),
                                   ClusterOptions(session_memory=int(free * 0.6),
                                                  session_cpus=0.5), clients=2)
    holder = FheClient(fhe_client_view(cnn_plan))
    channel = fhe_session.connect(f"127.0.0.1:{port}", 30)
    try:
        holder.setup(channel)  # admitted: its session actor holds 60 % of the memory
        with pytest.raises(ProtocolError, match="no room for another session"):
            fhe_session.client_run(fhe_client_view(cnn_plan), f"127.0.0.1:{port}",
                                   model_input(digits_split["test_images"][:1], "img8"),
                                   timeout=30)
        x = model_input(digits_split["test_images"][:1], "img8")
        name = cnn_plan.outputs[0].name
        got = holder.infer({"input": x[0]})[name]
        holder.finish()
    finally:
        channel.close()
    assert np.max(np.abs(got - run_plan(cnn_plan, x).server_outputs[name][0])) < 1e-4
    state["thread"].join(timeout=60)
    assert not state["thread"].is_alive() and "error" not in state
    assert len(state["refused"]) == 1
    deadline = time.monotonic() + 30
    while ray.available_resources().get("memory", 0) < free * (1 - 1e-3):
        assert time.monotonic() < deadline, "the session's memory was not released"
        time.sleep(0.1)


def test_client_dropping_mid_session_ends_only_its_session(cnn_plan, local_ray):
    """A client that sends its hello and vanishes: its session ends with a ProtocolError inside
    the actor, the actor is killed (memory back), the front end returns normally."""
    free = ray.available_resources().get("memory", 0)
    port, state = _start_front_end(cnn_plan, SessionSpec(timeout=60),
                                   ClusterOptions(session_memory=256 << 20, session_cpus=0.5),
                                   clients=1)
    channel = fhe_session.connect(f"127.0.0.1:{port}", 30)
    channel.send("hello", {"version": fhe_session.PROTOCOL_VERSION, "protocol": "fhe",
                           "plan": fhe_session.fhe_fingerprint(cnn_plan)})
    channel.expect("hello", timeout=60)  # the session actor answered
    channel.close()
    state["thread"].join(timeout=60)
    assert not state["thread"].is_alive() and "error" not in state
    deadline = time.monotonic() + 30
    while ray.available_resources().get("memory", 0) < free * (1 - 1e-3):
        assert time.monotonic() < deadline, "the dropped session's memory was not released"
        time.sleep(0.1)


def test_session_actor_lost_is_a_clear_error_to_its_client(cnn_plan, digits_split,
                                                             local_ray):
    """A session actor that dies mid-session (as when Ray's memory monitor kills it): its
    client reads a ProtocolError saying the server lost the session, not a broken pipe."""
    from picompile.runtime.cluster.relay import SESSION_NAME_PREFIX

    port, state = _start_front_end(cnn_plan, SessionSpec(timeout=60),
                                   ClusterOptions(session_memory=256 << 20, session_cpus=0.5),
                                   clients=1)
    client = FheClient(fhe_client_view(cnn_plan))
    channel = fhe_session.connect(f"127.0.0.1:{port}", 60)
    try:
        client.setup(channel)
        names = [a for a in ray.util.list_named_actors() if a.startswith(SESSION_NAME_PREFIX)]
        assert len(names) == 1
        ray.kill(ray.get_actor(names[0]))
        with pytest.raises(ProtocolError, match="lost this session"):
            client.infer({"input": model_input(digits_split["test_images"][:1], "img8")[0]})
    finally:
        channel.close()
    state["thread"].join(timeout=90)
    assert not state["thread"].is_alive()


def test_hybrid_session_through_a_session_actor(local_ray):
    """The hybrid protocol's own server session (Flash quadratics, no dealer) runs in a session
    actor behind the front end: the client's outputs match the plain backend."""
    from onnx_models import shared_activation_model
    from picompile.runtime.hybrid import client_run

    rng = np.random.default_rng(8)
    plan = picompile.compile(shared_activation_model().SerializeToString(), protocol="hybrid",
                             calib=rng.normal(size=(64, 2, 6, 6)).astype(np.float32), degree=2,
                             method="quad", quadratic_protocol="flash")
    port, state = _start_front_end(plan, SessionSpec(timeout=60),
                                   ClusterOptions(session_memory=256 << 20, session_cpus=0.5))
    x = rng.normal(size=(2, 2, 6, 6)).astype(np.float32)
    result = client_run(plan, f"127.0.0.1:{port}", x, timeout=60)
    name = plan.outputs[0].name
    want = run_plan(plan, x, backend="plain").server_outputs[name]
    got = result.server_outputs[name]
    assert np.max(np.abs(got - want)) < 1e-2 * max(1.0, np.max(np.abs(want)))
    state["thread"].join(timeout=60)  # once: the front end ends with the session
    assert not state["thread"].is_alive() and "error" not in state
