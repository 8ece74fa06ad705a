"""picompile on Ray: sessions as actors behind `serve --ray`, a linear step split over workers,
worker loss, refusal for lack of room, and Ray imported only with --ray. Every test uses its own
local Ray (module fixture, 2 CPUs, 500 MB object store; the CLI test's server starts its own)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

ray = pytest.importorskip("ray")

import picompile  # noqa: E402
from conftest import EXAMPLES, ROOT, model_input  # noqa: E402
from picompile.errors import BackendError, ProtocolError  # noqa: E402
from picompile.runtime import fhe_session, run_plan  # noqa: E402
from picompile.runtime.channel import InMemoryChannel  # noqa: E402
from picompile.runtime.ckks import CkksClient, CkksServer  # noqa: E402
from picompile.runtime.cluster import load_ray  # noqa: E402
from picompile.runtime.cluster.relay import ClusterOptions, serve_ray  # noqa: E402
from picompile.runtime.cluster.spec import SessionSpec  # noqa: E402
from picompile.runtime.cluster.workers import distributed_server_factory  # noqa: E402
from picompile.runtime.fhe_session import FheClient, FheServer, fhe_client_view  # noqa: E402
from picompile.runtime.slot_program import partition_giants  # noqa: E402

PICOMPILE = [sys.executable, "-m", "picompile.cli"]


@pytest.fixture(scope="module")
def cnn_plan(digits_split):
    calib = {"input": model_input(digits_split["calib_images"], "img8")}
    return picompile.compile(EXAMPLES / "cnn_digits.onnx", calib=calib, degree=3,
                             insecure_test_params=True)


@pytest.fixture(scope="module")
def local_ray():
    ray.init(num_cpus=2, object_store_memory=500 << 20, include_dashboard=False,
             logging_level="warning")
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
    victim = server.evaluator.program.pool.workers[0]
    killer = threading.Timer(0.1, lambda: ray.kill(victim, no_restart=False))
    killer.start()
    outputs = [client.infer({"input": sample})[name] for sample in x]
    killer.join()
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


def _start_front_end(plan, spec: SessionSpec, options: ClusterOptions) -> tuple[int, dict]:
    ready = threading.Event()
    state: dict = {"refused": []}

    def listening(port: int) -> None:
        state["port"] = port
        ready.set()

    def target() -> None:
        try:
            serve_ray(plan, 0, spec, options, once=True, timeout=60, on_listen=listening,
                      on_refuse=state["refused"].append)
        except Exception as exc:  # noqa: BLE001 (reported to the test)
            state["error"] = exc

    threading.Thread(target=target, daemon=True).start()
    assert ready.wait(60)
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


def test_session_actor_serves_and_releases_memory(cnn_plan, digits_split, local_ray):
    """One session through the front end in-process: right answers, and the actor's memory
    request is released when the session ends."""
    free = ray.available_resources().get("memory", 0)
    port, state = _start_front_end(cnn_plan, SessionSpec(timeout=60),
                                   ClusterOptions(session_memory=256 << 20, session_cpus=0.5))
    x = model_input(digits_split["test_images"][:2], "img8")
    result = fhe_session.client_run(fhe_client_view(cnn_plan), f"127.0.0.1:{port}", x,
                                    timeout=60)
    name = cnn_plan.outputs[0].name
    plain = run_plan(cnn_plan, x).server_outputs[name]
    assert np.max(np.abs(result.server_outputs[name] - plain)) < 1e-4
    deadline = time.monotonic() + 30
    while ray.available_resources().get("memory", 0) < free * (1 - 1e-3):
        assert time.monotonic() < deadline, "the session's memory was not released"
        time.sleep(0.1)
    assert "error" not in state


def test_four_concurrent_clients_through_cli_serve_ray(cnn_plan, digits_split, tmp_path):
    """`picompile serve --ray` (its own local Ray) and 4 `picompile client` processes at once:
    every client gets the outputs of the plain (sequential) run of its inputs."""
    plan_path = cnn_plan.save(tmp_path / "cnn.piplan")
    client_path = fhe_client_view(cnn_plan).save(tmp_path / "cnn.client.piplan")
    log = tmp_path / "server.log"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    server = subprocess.Popen(PICOMPILE + ["serve", str(plan_path), "--port", "0", "--ray",
                                           "--session-cpus", "0.25", "--session-memory", "0.3"],
                              stdout=log.open("w"), stderr=subprocess.STDOUT, cwd=ROOT, env=env)
    try:
        deadline = time.monotonic() + 120
        while "listening on" not in log.read_text():
            assert server.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.2)
        port = int(log.read_text().split("listening on")[1].split()[0].rsplit(":", 1)[1])
        images = digits_split["test_images"][:8]
        clients = []
        for index in range(4):
            np.save(tmp_path / f"x{index}.npy", model_input(images[2 * index:2 * index + 2],
                                                            "img8"))
            clients.append(subprocess.Popen(
                PICOMPILE + ["client", str(client_path), "--connect", f"127.0.0.1:{port}",
                             "--input", str(tmp_path / f"x{index}.npy"),
                             "--output", str(tmp_path / f"y{index}.npy")],
                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT, env=env))
        for client in clients:
            _, err = client.communicate(timeout=300)
            assert client.returncode == 0, err + log.read_text()
        name = cnn_plan.outputs[0].name
        for index in range(4):
            want = run_plan(cnn_plan, np.load(tmp_path / f"x{index}.npy")).server_outputs[name]
            assert np.max(np.abs(np.load(tmp_path / f"y{index}.npy") - want)) < 1e-4
        deadline = time.monotonic() + 30
        while log.read_text().count("served 2 inference(s)") < 4:
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.2)
    finally:
        server.send_signal(signal.SIGINT)  # the server shuts its local Ray down
        try:
            server.wait(timeout=60)
        except subprocess.TimeoutExpired:
            server.kill()


def test_ray_is_imported_only_with_the_option(monkeypatch):
    code = ("import sys, picompile.cli, picompile.runtime.fhe_session, "
            "picompile.runtime.hybrid.service, picompile.runtime.cluster.relay; "
            "picompile.cli.build_parser().parse_args(['serve', 'x.piplan', '--port', '0']); "
            "assert 'ray' not in sys.modules, 'ray imported'")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    monkeypatch.setitem(sys.modules, "ray", None)  # as if the extra were not installed
    with pytest.raises(BackendError, match=r"picompile\[cluster\]"):
        load_ray()


def test_workers_without_ray_is_an_option_error(cnn_plan, tmp_path):
    plan_path = cnn_plan.save(Path(tmp_path) / "cnn.piplan")
    done = subprocess.run(PICOMPILE + ["serve", str(plan_path), "--port", "0", "--workers",
                                       "2"], capture_output=True, text=True, cwd=ROOT,
                          timeout=60)
    assert done.returncode == 2 and "--workers needs --ray" in done.stderr
