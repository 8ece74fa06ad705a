"""Hybrid plans without a third party: MPC correlations from OT between client and server
(``--correlations two-party``, the default) — end to end in one process, as two processes over
loopback TCP with no dealer process, the choice in plan/report/hello, and failures."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

import picompile
from conftest import PICOMPILE, start_service
from onnx_models import residual_model
from picompile.errors import OptionError, ProtocolError
from picompile.runtime import run_plan
from picompile.runtime.channel import InMemoryChannel
from picompile.runtime.hybrid import HybridClient, HybridServer, client_view

ROOT = Path(__file__).resolve().parents[1]
@pytest.fixture(scope="module")
def plan() -> picompile.Plan:
    calib = np.random.default_rng(0).normal(size=(64, 2, 6, 6))
    return picompile.compile(residual_model().SerializeToString(), protocol="hybrid",
                             calib=calib)


def _inputs(count: int, seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(count, 2, 6, 6))


def test_plan_report_and_options_state_the_correlations(plan):
    from picompile.report import render_text

    assert plan.bfv.correlations == "two-party" and plan.dealer_steps()
    text = render_text(plan, width=400)
    assert "two-party, no dealer: oblivious transfer" in text and "IKNP" in text
    calib = np.random.default_rng(0).normal(size=(16, 2, 6, 6))
    dealer_plan = picompile.compile(residual_model().SerializeToString(), protocol="hybrid",
                                    calib=calib, correlations="dealer")
    assert dealer_plan.bfv.correlations == "dealer"
    assert "a third party trusted not to collude" in render_text(dealer_plan, width=400)
    with pytest.raises(OptionError, match="correlations"):
        picompile.compile(residual_model().SerializeToString(), protocol="hybrid",
                          calib=calib, correlations="oracle")


class RecordingChannel(InMemoryChannel):
    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.received: list = []

    def recv(self, expected_kind=None, *, timeout=None):
        message = super().recv(expected_kind, timeout=timeout)
        self.received.append(message)
        return message


def test_two_party_matches_plain_and_the_server_sees_only_pads(plan):
    """No dealer channel at all: the output equals the plain backend's, the server receives
    only the protocol's messages plus ``ot`` matrices (uniform bits), the online phase is the
    dealer plan's byte for byte."""
    x = _inputs(1)
    client_end, server_end = RecordingChannel.pair(timeout=60)
    server = HybridServer(plan, server_end)
    assert not server.needs_dealer and server.needs_correlations
    thread = threading.Thread(target=server.serve)
    thread.start()
    client = HybridClient(plan, client_end)
    client.setup()
    output, _ = client.infer(x[0])
    client.finish()
    thread.join(timeout=60)
    want = run_plan(plan, x, backend="plain").server_outputs[plan.outputs[0].name]
    assert np.max(np.abs(output - want[0])) < 1e-2
    kinds = {m.kind for m in server_end.received}
    assert "ot" in kinds and kinds <= {"hello", "keys", "ciphertexts", "reshare", "open", "ot",
                                       "bye"}
    matrices = [a for m in server_end.received if m.kind == "ot" and isinstance(m.payload, list)
                for a in m.payload if isinstance(a, np.ndarray) and a.dtype == np.uint8
                and a.ndim == 2]
    bits = np.unpackbits(np.concatenate([a.ravel() for a in matrices]))
    assert bits.size > 10_000 and abs(bits.mean() - 0.5) < 0.01  # pads of the client's choices
    stats = client.communication({"offline": 1.0, "online": 1.0}, 0)
    assert stats["ot_bytes"] > 0 and stats["correlations_two_party"] == 1
    predicted = plan.bfv.predicted["offline_bytes"]  # HE preprocessing + OT correlations
    assert abs(stats["offline_bytes"] - predicted) < 0.05 * predicted
    dealer = run_plan(plan, x, backend="hybrid", correlations="dealer").communication
    assert dealer["dealer_bytes"] > 0 and dealer["ot_bytes"] == 0
    assert dealer["online_bytes"] == stats["online_bytes"]
    assert dealer["online_flights"] == stats["online_flights"]


def test_correlation_mismatch_is_a_protocol_error(plan):
    client_end, server_end = InMemoryChannel.pair(timeout=10)
    server = HybridServer(plan, server_end, InMemoryChannel.pair(timeout=10)[0],
                          correlations="dealer")
    errors: list = []

    def run() -> None:
        try:
            server.serve()
        except ProtocolError as exc:
            errors.append(exc)

    thread = threading.Thread(target=run)
    thread.start()
    client = HybridClient(plan, client_end)
    with pytest.raises(ProtocolError, match="dealer"):
        client.setup()
    thread.join(timeout=10)
    assert errors and "correlations" in str(errors[0])


class VanishingServer(HybridServer):
    """Goes away in the middle of the offline phase: at the base OTs or at an inference's
    correlations."""

    def __init__(self, *args, vanish_at: str, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.vanish_at = vanish_at

    def setup_correlations(self) -> None:
        if self.vanish_at == "setup":
            self.channel.close()
            raise ProtocolError("vanished")
        super().setup_correlations()

    def prefetch_correlations(self):
        if self.vanish_at == "prefetch":
            self.channel.close()
            raise ProtocolError("vanished")
        return super().prefetch_correlations()


@pytest.mark.parametrize("vanish_at", ["setup", "prefetch"])
def test_peer_vanishing_during_the_offline_phase_is_a_protocol_error(plan, vanish_at):
    client_end, server_end = InMemoryChannel.pair(timeout=5)
    server = VanishingServer(plan, server_end, vanish_at=vanish_at)
    thread = threading.Thread(target=lambda: pytest.raises(ProtocolError, server.serve))
    thread.start()
    client = HybridClient(plan, client_end)
    start = time.monotonic()
    with pytest.raises(ProtocolError):
        client.setup()
        client.infer(_inputs(1)[0])
    assert time.monotonic() - start < 30
    thread.join(timeout=30)


def _two_processes(plan, x: np.ndarray, tmp_path: Path) -> np.ndarray:
    """``picompile serve`` and ``picompile client`` as two processes over loopback TCP, no
    dealer anywhere; the client's output."""
    plan.save(tmp_path / "server.piplan")
    client_view(plan).save(tmp_path / "client.piplan")
    np.save(tmp_path / "x.npy", x)
    server, port = start_service(["serve", str(tmp_path / "server.piplan"), "--port", "0",
                                  "--once"], tmp_path, "server")
    try:
        done = subprocess.run(
            PICOMPILE + ["client", str(tmp_path / "client.piplan"), "--connect",
                         f"127.0.0.1:{port}", "--input", str(tmp_path / "x.npy"), "--output",
                         str(tmp_path / "y.npy")],
            capture_output=True, text=True, cwd=ROOT, timeout=900)
        assert done.returncode == 0, done.stderr
        assert server.wait(timeout=60) == 0
    finally:
        if server.poll() is None:
            server.kill()
    return np.load(tmp_path / "y.npy")


def test_client_and_server_processes_over_tcp_without_a_dealer(plan, tmp_path):
    x = _inputs(2, seed=9)
    got = _two_processes(plan, x, tmp_path)
    want = run_plan(plan, x, backend="plain").server_outputs[plan.outputs[0].name]
    assert np.array_equal(got.argmax(-1), want.argmax(-1))
    assert np.max(np.abs(got - want)) < 1e-2


@pytest.mark.slow
def test_cnn_example_two_processes_no_dealer_matches_plain_on_20_inputs(digits_split,
                                                                        tmp_path):
    sys.path.insert(0, str(ROOT / "examples"))
    import digits

    calib = digits.to_model_input(digits_split["calib_images"], "img8")
    cnn = picompile.compile(str(ROOT / "examples" / "cnn_digits.onnx"), protocol="hybrid",
                            calib=calib)
    assert cnn.bfv.correlations == "two-party" and cnn.dealer_steps()
    x = digits.to_model_input(digits_split["test_images"][:20], "img8")
    got = _two_processes(cnn, x, tmp_path)
    want = run_plan(cnn, x, backend="plain").server_outputs[cnn.outputs[0].name]
    assert np.array_equal(got.argmax(-1), want.argmax(-1))
    assert np.max(np.abs(got - want)) < 1e-2


def test_cli_compile_and_run_with_correlations(tmp_path, capsys):
    from picompile.cli import main

    (tmp_path / "m.onnx").write_bytes(residual_model().SerializeToString())
    np.save(tmp_path / "calib.npy", np.random.default_rng(0).normal(size=(16, 2, 6, 6)))
    np.save(tmp_path / "x.npy", _inputs(1, seed=11))
    assert main(["compile", str(tmp_path / "m.onnx"), "--protocol", "hybrid", "--calib",
                 str(tmp_path / "calib.npy"), "--correlations", "dealer", "-o",
                 str(tmp_path / "d.piplan")]) == 0
    assert picompile.load_plan(tmp_path / "d.piplan").bfv.correlations == "dealer"
    capsys.readouterr()
    # the run overrides the plan's choice: OT between the in-process parties, no dealer
    assert main(["run", str(tmp_path / "d.piplan"), "--input", str(tmp_path / "x.npy"),
                 "--backend", "hybrid", "--correlations", "two-party"]) == 0
    assert "correlations: two-party (OT)" in capsys.readouterr().out
