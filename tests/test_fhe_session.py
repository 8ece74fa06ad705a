"""FHE-only client and server apart: handshake, keys in chunks, ciphertexts both ways, errors."""

from __future__ import annotations

import subprocess
import threading
import time
from pathlib import Path

import numpy as np
import pytest

import picompile
from conftest import EXAMPLES, PICOMPILE, ROOT, model_input, start_service
from picompile.errors import PlanError, ProtocolError
from picompile.plan import Plan
from picompile.runtime import fhe_session, run_plan
from picompile.runtime.channel import InMemoryChannel
from picompile.runtime.fhe_session import FheClient, FheServer, fhe_client_view


def _serve_in_thread(plan, channel) -> tuple[threading.Thread, dict]:
    outcome: dict = {}

    def target() -> None:
        try:
            outcome["count"] = FheServer(plan, channel).serve()
        except Exception as exc:  # noqa: BLE001 (reported to the test)
            outcome["error"] = exc

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    return thread, outcome


def test_client_view_holds_nothing_of_the_model(cnn_plan, tmp_path):
    view = fhe_client_view(cnn_plan)
    assert view.arrays == {} and all(not s.params for s in view.steps)
    loaded = Plan.load(view.save(tmp_path / "cnn.client.piplan"))
    assert fhe_session.fhe_fingerprint(loaded) == fhe_session.fhe_fingerprint(cnn_plan)
    with pytest.raises(PlanError, match="client plan"):
        FheServer(loaded, InMemoryChannel.pair()[0])


def test_encrypted_inference_between_client_and_server(cnn_plan, digits_split, monkeypatch):
    """The client (client view, secret key) and the server (full plan, public material only)
    talk over a channel; rotation keys travel in several chunks; outputs = plain backend."""
    monkeypatch.setattr(fhe_session, "KEY_CHUNK_BYTES", 8 << 20)
    server_end, client_end = InMemoryChannel.pair()
    thread, outcome = _serve_in_thread(cnn_plan, server_end)
    client = FheClient(fhe_client_view(cnn_plan))
    client.setup(client_end)
    x = model_input(digits_split["test_images"][:2], "img8")
    outputs = [client.infer({"input": sample}) for sample in x]
    client.finish()
    thread.join(timeout=60)
    assert outcome == {"count": 2}
    name = cnn_plan.outputs[0].name
    plain = run_plan(cnn_plan, x).server_outputs[name]
    assert np.max(np.abs(np.stack([o[name] for o in outputs]) - plain)) < 1e-4
    kinds = client_end.traffic.by_kind
    assert kinds["data"] > 8 << 20  # more than one chunk of rotation keys
    # what the server received: public material and ciphertexts, never the secret key
    secret = client.ckks.secret_key_bytes()
    window = secret[len(secret) // 2: len(secret) // 2 + 64]
    assert window not in client.ckks.public_material().rotation_keys


def test_plan_mismatch_is_refused_on_both_sides(cnn_plan, digits_split):
    other = picompile.compile(EXAMPLES / "cnn_digits.onnx", degree=2,
                              calib={"input": model_input(digits_split["calib_images"], "img8")},
                              insecure_test_params=True)
    server_end, client_end = InMemoryChannel.pair()
    thread, outcome = _serve_in_thread(cnn_plan, server_end)
    client = FheClient(fhe_client_view(other))
    with pytest.raises(ProtocolError, match="plan mismatch"):
        client.setup(client_end)
    thread.join(timeout=30)
    assert isinstance(outcome.get("error"), ProtocolError)


def test_garbage_ciphertext_is_a_protocol_error(cnn_plan):
    server_end, client_end = InMemoryChannel.pair()
    thread, outcome = _serve_in_thread(cnn_plan, server_end)
    client = FheClient(fhe_client_view(cnn_plan))
    client.setup(client_end)
    client_end.send("ciphertexts", {"input": b"not a ciphertext"})
    with pytest.raises(ProtocolError):
        client_end.expect("result", timeout=60)
    thread.join(timeout=30)
    assert isinstance(outcome.get("error"), ProtocolError)


def test_cli_serve_and_client_over_tcp(cnn_plan, digits_split, tmp_path):
    """`picompile serve` with the full plan, `picompile client` with the client's plan."""
    plan_path = cnn_plan.save(Path(tmp_path) / "cnn.piplan")
    client_path = fhe_client_view(cnn_plan).save(Path(tmp_path) / "cnn.client.piplan")
    x = model_input(digits_split["test_images"][:2], "img8")
    np.save(tmp_path / "x.npy", x)
    log = tmp_path / "server.log"
    server, port = start_service(["serve", str(plan_path), "--port", "0", "--once"], tmp_path,
                                 "server")
    try:
        done = subprocess.run(
            PICOMPILE + ["client", str(client_path), "--connect", f"127.0.0.1:{port}",
                         "--input", str(tmp_path / "x.npy"), "--output", str(tmp_path / "y.npy")],
            capture_output=True, text=True, cwd=ROOT, timeout=300)
        assert done.returncode == 0, done.stderr
        assert "FHE over TCP" in done.stdout
        want = run_plan(cnn_plan, x).server_outputs[cnn_plan.outputs[0].name]
        assert np.max(np.abs(np.load(tmp_path / "y.npy") - want)) < 1e-4
        assert server.wait(timeout=60) == 0
        assert "served 2 inference(s)" in log.read_text()
    finally:
        if server.poll() is None:
            server.kill()


def test_server_gone_client_fails_fast(cnn_plan, digits_split):
    """A server that disappears after the handshake: the client gets a ProtocolError within
    its timeout, not a hang."""
    from picompile.runtime.channel import TcpChannel

    listener = TcpChannel.listen("127.0.0.1", 0, timeout=30)

    def accept_and_drop() -> None:
        channel = listener.accept(timeout=30)
        channel.expect("hello")
        channel.close()

    thread = threading.Thread(target=accept_and_drop, daemon=True)
    thread.start()
    start = time.monotonic()
    try:
        with pytest.raises(ProtocolError):
            fhe_session.client_run(cnn_plan, f"127.0.0.1:{listener.port}",
                                   model_input(digits_split["test_images"][:1], "img8"),
                                   timeout=10)
        assert time.monotonic() - start < 60
    finally:
        listener.close()
