"""`picompile serve --ray` from the command line: 4 concurrent `picompile client` processes get
the outputs of sequential plain runs; Ray is imported only with --ray and its absence is a clear
error naming the extra. The server process starts and stops its own local Ray."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("ray")

from conftest import PICOMPILE, ROOT, model_input, start_service  # noqa: E402
from picompile.errors import BackendError  # noqa: E402
from picompile.runtime import run_plan  # noqa: E402
from picompile.runtime.cluster import load_ray  # noqa: E402
from picompile.runtime.fhe_session import fhe_client_view  # noqa: E402

#: The machine is shared: Ray's memory monitor would kill the sessions when other jobs fill it.
RAY_ENV = {"PYTHONUNBUFFERED": "1", "RAY_memory_usage_threshold": "0.99"}


def test_four_concurrent_clients_through_cli_serve_ray(cnn_plan, digits_split, tmp_path):
    """`picompile serve --ray` (its own local Ray) and 4 `picompile client` processes at once:
    every client gets the outputs of the plain (sequential) run of its inputs."""
    plan_path = cnn_plan.save(tmp_path / "cnn.piplan")
    client_path = fhe_client_view(cnn_plan).save(tmp_path / "cnn.client.piplan")
    log = tmp_path / "server.log"
    env = {**os.environ, **RAY_ENV}
    server, port = start_service(["serve", str(plan_path), "--port", "0", "--ray",
                                  "--session-cpus", "0.25", "--session-memory", "0.3"],
                                 tmp_path, "server", env=RAY_ENV, timeout=120)
    try:
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


def test_cli_serve_ray_with_workers_splits_and_answers(cnn_plan, digits_split, tmp_path):
    """`serve --ray --workers 2 --once`: the session's linear steps run on 2 workers; the client
    gets the plain run's outputs and the server exits after the session."""
    plan_path = cnn_plan.save(tmp_path / "cnn.piplan")
    client_path = fhe_client_view(cnn_plan).save(tmp_path / "cnn.client.piplan")
    x = model_input(digits_split["test_images"][:2], "img8")
    np.save(tmp_path / "x.npy", x)
    log = tmp_path / "server.log"
    env = {**os.environ, **RAY_ENV}
    server, port = start_service(["serve", str(plan_path), "--port", "0", "--ray",
                                  "--workers", "2", "--session-cpus", "0.5", "--once"],
                                 tmp_path, "server", env=RAY_ENV, timeout=120)
    try:
        assert "2 giant-step workers per session" in log.read_text()
        done = subprocess.run(
            PICOMPILE + ["client", str(client_path), "--connect", f"127.0.0.1:{port}",
                         "--input", str(tmp_path / "x.npy"), "--output", str(tmp_path / "y.npy")],
            capture_output=True, text=True, cwd=ROOT, env=env, timeout=300)
        assert done.returncode == 0, done.stderr + log.read_text()
        want = run_plan(cnn_plan, x).server_outputs[cnn_plan.outputs[0].name]
        assert np.max(np.abs(np.load(tmp_path / "y.npy") - want)) < 1e-4
        assert server.wait(timeout=60) == 0, log.read_text()
        assert "served 2 inference(s)" in log.read_text()
    finally:
        if server.poll() is None:
            server.send_signal(signal.SIGINT)
            server.wait(timeout=60)
