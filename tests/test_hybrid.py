"""Hybrid backend: BFV boundary, share protocols over channels, TCP parties, faults, privacy."""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import picompile
from conftest import PICOMPILE, start_service
from onnx_models import conv_model, residual_model, shared_activation_model
from picompile.errors import OptionError, PlanError, ProtocolError, UnsupportedOpError
from picompile.runtime import run_plan
from picompile.runtime.bfv import crt_centered, crt_lift, is_prime, plaintext_primes
from picompile.runtime.channel import InMemoryChannel
from picompile.runtime.hybrid import (
    HybridClient,
    HybridServer,
    client_run,
    client_view,
    run_dealer,
)
from picompile.runtime.hybrid.kernels import LinearKernel
from picompile.runtime.hybrid.randomness import secure_below_prime
from picompile.runtime.hybrid.wire import pack_bits, unpack_bits

ROOT = Path(__file__).resolve().parents[1]
@pytest.fixture(scope="module")
def calibration() -> np.ndarray:
    return np.random.default_rng(0).normal(size=(64, 2, 6, 6))


@pytest.fixture(scope="module")
def residual_plans(calibration, tmp_path_factory) -> dict[str, picompile.Plan]:
    model = residual_model().SerializeToString()
    folder = tmp_path_factory.mktemp("hybrid")
    return {
        "relu": picompile.compile(model, folder / "relu.piplan", protocol="hybrid",
                                  calib=calibration),
        "hermite": picompile.compile(model, folder / "hermite.piplan", protocol="hybrid",
                                     calib=calibration, degree=2, method="hermite"),
    }


def _inputs(count: int, seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(count, 2, 6, 6))


# --------------------------------------------------------------------------- building blocks


@settings(max_examples=30, deadline=None)
@given(st.lists(st.integers(0, 2**64 - 1), min_size=1, max_size=40),
       st.sampled_from([1, 0b1010, 2**63 | 5, 2**64 - 1]))
def test_bit_packing_round_trip(words, mask):
    array = np.array(words, dtype=np.uint64) & np.uint64(mask)
    packed = pack_bits([array, array[::-1].copy()], [mask, mask])
    assert packed.size == -(-2 * mask.bit_count() * array.size // 8)
    first, second = unpack_bits(packed, [array.shape, array.shape], [mask, mask])
    assert np.array_equal(first, array) and np.array_equal(second, array[::-1])


def test_plaintext_primes_batch_and_crt_recombines():
    primes = plaintext_primes(2)
    assert all(is_prime(t) and t % 2**17 == 1 and t.bit_length() == 50 for t in primes)
    values = np.array([0, 1, -1, 2**90, -(2**90) + 7], dtype=object)
    residues = [np.array([int(v) % t for v in values], dtype=np.int64) for t in primes]
    assert list(crt_centered(residues, primes)) == list(values)
    draws = secure_below_prime(primes[0], (4096,))
    assert draws.min() >= 0 and draws.max() < primes[0] and len(np.unique(draws)) == 4096


def test_linear_kernel_is_exact_modulo_each_prime(residual_plans):
    plan = residual_plans["relu"]
    step = next(s for s in plan.steps if s.op == "Conv")
    kernel = LinearKernel.from_plan(plan, step, 16)
    w = np.random.default_rng(2).integers(-(2**62), 2**62, kernel.matrix.shape[1])
    dense = kernel.matrix.toarray().astype(object)
    for t in plaintext_primes(2):
        expected = (dense @ w.astype(object)) % t
        assert list(kernel.apply_mod(w, t)) == list(expected)


@settings(max_examples=80, deadline=None)
@given(st.integers(-(2**60), 2**60), st.integers(0, 2**100), st.integers(1, 63))
def test_boundary_lift_truncates_within_one_ulp(y, r, shift):
    """Shares z = [y − r]_T and r lift to ring shares whose sum is floor(y/2^s) or one less
    (unless the centered lift wraps, probability |y|/T); the vectorized lift equals the
    object-integer reference."""
    primes = plaintext_primes(2)
    modulus = primes[0] * primes[1]
    r %= modulus
    shares = []
    for value in ((y - r) % modulus, r):
        residues = [np.array([value % t], dtype=np.int64) for t in primes]
        lifted = crt_lift(residues, primes, shift)
        reference = crt_centered(residues, primes)[0] // 2**shift % 2**64
        assert int(lifted[0]) == reference
        shares.append(int(lifted[0]))
    centered = [v - modulus if v > modulus // 2 else v for v in ((y - r) % modulus, r)]
    if sum(centered) == y:  # no wrap
        total = sum(shares) % 2**64
        signed = total - 2**64 if total >= 2**63 else total
        assert signed in (y // 2**shift, y // 2**shift - 1)


# --------------------------------------------------------------------------- end to end


@pytest.mark.parametrize("kind", ["relu", "hermite"])
def test_hybrid_matches_plain_backend(residual_plans, kind):
    plan = residual_plans[kind]
    x = _inputs(3)
    hybrid = run_plan(plan, x, backend="hybrid")
    plain = run_plan(plan, x, backend="plain")
    name = plan.outputs[0].name
    got, want = hybrid.server_outputs[name], plain.server_outputs[name]
    assert np.max(np.abs(got - want)) < 1e-2
    assert np.array_equal(got.argmax(-1), want.argmax(-1))
    stats = hybrid.communication
    assert stats["online_bytes"] > 0 and stats["offline_bytes"] > stats["online_bytes"]
    if kind == "hermite":  # one square per activation instead of a comparison circuit
        relu_stats = run_plan(residual_plans["relu"], x[:1], backend="hybrid").communication
        assert relu_stats["online_bytes"] > 2 * stats["online_bytes"]


def test_hybrid_plan_report_states_security(residual_plans):
    bfv = residual_plans["relu"].bfv
    assert bfv.security_bits == 128 and bfv.sigma == 40
    assert bfv.sigma_hide >= 40 and bfv.sigma_correct >= 40
    steps = [s.hybrid for s in residual_plans["relu"].steps]
    assert {s.protocol for s in steps} == {"he_linear", "relu", "max_pool", "local"}


def test_hybrid_compile_errors(calibration):
    model = residual_model().SerializeToString()
    with pytest.raises(UnsupportedOpError, match="degree"):
        picompile.compile(model, protocol="hybrid", calib=calibration, degree=5)
    with pytest.raises(OptionError, match="--calib"):
        picompile.compile(model, protocol="hybrid")


def test_client_view_holds_no_weights(residual_plans, tmp_path):
    plan = residual_plans["relu"]
    view = client_view(plan)
    private = {"weight", "bias", "diagonals", "bias_slots"}
    assert not [k for k in view.arrays if k.rsplit(".", 1)[-1] in private]
    assert [k for k in plan.arrays if k.rsplit(".", 1)[-1] in private]
    view.save(tmp_path / "client.piplan")
    loaded = picompile.load_plan(tmp_path / "client.piplan")  # a valid plan file
    weights = [np.asarray(v).ravel() for k, v in plan.arrays.items()
               if k.rsplit(".", 1)[-1] == "weight"]
    assert not any(np.array_equal(w, np.asarray(v).ravel()) for w in weights
                   for v in loaded.arrays.values())
    with pytest.raises(PlanError, match="client plan"):
        picompile.run(loaded, _inputs(1))


class RecordingChannel(InMemoryChannel):
    """Keeps every message this end receives."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.received: list = []

    def recv(self, expected_kind=None, *, timeout=None):
        message = super().recv(expected_kind, timeout=timeout)
        self.received.append(message)
        return message


def _in_process(plan, x, server_channel_class=InMemoryChannel):
    client_end, server_end = server_channel_class.pair(timeout=60)
    dealer_pairs = [InMemoryChannel.pair(timeout=60) for _ in range(2)]
    server = HybridServer(plan, server_end, dealer_pairs[1][0], correlations="dealer")
    client = HybridClient(plan, client_end, dealer_pairs[0][0], correlations="dealer")
    threads = [threading.Thread(target=server.serve),
               threading.Thread(target=run_dealer, args=((dealer_pairs[0][1],
                                                          dealer_pairs[1][1]),))]
    for thread in threads:
        thread.start()
    client.setup()
    outputs = [client.infer(row)[0] for row in x]
    client.finish()
    for thread in threads:
        thread.join(timeout=60)
    return client, server, server_end, outputs


def _blobs(value):
    if isinstance(value, bytes):
        yield value
    elif isinstance(value, dict):
        for v in value.values():
            yield from _blobs(v)
    elif isinstance(value, list):
        for v in value:
            yield from _blobs(v)


def test_server_receives_only_ciphertexts_keys_and_masked_values(residual_plans):
    plan = residual_plans["relu"]
    x = _inputs(1, seed=5)
    client, server, server_end, _ = _in_process(plan, x, RecordingChannel)
    kinds = {m.kind for m in server_end.received}
    assert kinds <= {"hello", "keys", "ciphertexts", "reshare", "open", "bye"}
    # no secret-key material in anything the server received
    secret_chunks = [key[len(key) // 2:len(key) // 2 + 64] for key in client.bfv.secret_key_bytes()]
    blobs = [b for m in server_end.received for b in _blobs(m.payload)]
    assert blobs and not any(chunk in blob for chunk in secret_chunks for blob in blobs)
    # every reshared value is the activation plus a mask of ~62 bits, never the activation
    trace = {plan.inputs[0].name: x}
    from picompile.runtime.plain import execute_step
    for step in plan.steps:
        trace[step.outputs[0]] = execute_step(plan, step, [trace[v] for v in step.inputs])
    reshares = [m.payload for m in server_end.received if m.kind == "reshare"]
    linear = [s for s in plan.steps if s.op in ("Conv", "Linear")]
    assert len(reshares) == len(linear)
    for step, u in zip(linear, reshares, strict=True):
        server_share = server.last_shares.get(step.inputs[0])
        assert server_share is not None
        with np.errstate(over="ignore"):
            w = (u + server_share.reshape(-1)).view(np.int64)
        activation = client.fp.encode(trace[step.inputs[0]]).view(np.int64).reshape(-1)
        mask = w - activation
        assert np.all(mask >= 0) and np.mean(mask < 2**45) < 0.05
    # arithmetic openings (Beaver masks) look uniform: top bits balanced
    opened = np.concatenate([a.reshape(-1) for m in server_end.received if m.kind == "open"
                             for a in m.payload if a.dtype == np.uint64])
    assert opened.size > 100 and 0.35 < np.mean(opened >> np.uint64(63)) < 0.65


def test_plan_mismatch_is_a_protocol_error(residual_plans):
    client_end, server_end = InMemoryChannel.pair(timeout=10)
    dealer = InMemoryChannel.pair(timeout=10)
    server = HybridServer(residual_plans["relu"], server_end, dealer[0])
    errors = []
    thread = threading.Thread(target=lambda: errors.append(pytest.raises(ProtocolError,
                                                                        server.serve)))
    thread.start()
    client = HybridClient(residual_plans["hermite"], client_end, dealer[1])
    with pytest.raises(ProtocolError, match="plan"):
        client.setup()
    thread.join(timeout=10)
    assert errors


def test_malformed_reshare_is_a_protocol_error(residual_plans):
    plan = residual_plans["relu"]
    client_end, server_end = InMemoryChannel.pair(timeout=20)
    client_dealer, dealer_client = InMemoryChannel.pair(timeout=20)
    server_dealer, dealer_server = InMemoryChannel.pair(timeout=20)
    server = HybridServer(plan, server_end, server_dealer)
    failures: list[BaseException] = []

    def run() -> None:
        try:
            server.serve()
        except ProtocolError as exc:
            failures.append(exc)

    threads = [threading.Thread(target=run),
               threading.Thread(target=lambda: pytest.raises(
                   ProtocolError, run_dealer, (dealer_client, dealer_server), timeout=20))]
    for thread in threads:
        thread.start()
    client = HybridClient(plan, client_end, client_dealer)
    client.setup()
    with client_end.phase("offline"):
        client.preprocess()
        client.prefetch_correlations()
    client_end.send("reshare", np.zeros(3, dtype=np.uint64))  # wrong size
    threads[0].join(timeout=20)
    assert failures and "reshare" in str(failures[0])
    client_dealer.close()
    server_dealer.close()
    threads[1].join(timeout=30)


# --------------------------------------------------------------------------- processes, TCP


def test_cli_client_server_dealer_over_tcp(residual_plans, tmp_path):
    plan_path = Path(tmp_path) / "relu.piplan"
    residual_plans["relu"].save(plan_path)
    client_plan = Path(tmp_path) / "relu.client.piplan"
    client_view(residual_plans["relu"]).save(client_plan)
    x = _inputs(2, seed=9)
    np.save(tmp_path / "x.npy", x)
    dealer, dealer_port = start_service(["dealer", "--port", "0", "--once"], tmp_path, "dealer")
    server, server_port = start_service(["serve", str(plan_path), "--port", "0", "--once",
                                         "--correlations", "dealer",
                                         "--dealer", f"127.0.0.1:{dealer_port}"],
                                        tmp_path, "server")
    try:
        done = subprocess.run(
            PICOMPILE + ["client", str(client_plan), "--connect", f"127.0.0.1:{server_port}",
                         "--correlations", "dealer",
                         "--dealer", f"127.0.0.1:{dealer_port}", "--input",
                         str(tmp_path / "x.npy"), "--output", str(tmp_path / "y.npy")],
            capture_output=True, text=True, cwd=ROOT, timeout=300)
        assert done.returncode == 0, done.stderr
        assert "online" in done.stdout and "offline" in done.stdout
        plain = run_plan(residual_plans["relu"], x, backend="plain")
        want = plain.server_outputs[residual_plans["relu"].outputs[0].name]
        assert np.max(np.abs(np.load(tmp_path / "y.npy") - want)) < 1e-2
        assert server.wait(timeout=60) == 0 and dealer.wait(timeout=60) == 0
    finally:
        for process in (server, dealer):
            if process.poll() is None:
                process.kill()


def test_server_killed_mid_inference_client_fails_fast(residual_plans, tmp_path):
    plan_path = Path(tmp_path) / "relu.piplan"
    residual_plans["relu"].save(plan_path)
    dealer, dealer_port = start_service(["dealer", "--port", "0"], tmp_path, "dealer")
    server, server_port = start_service(["serve", str(plan_path), "--port", "0", "--once",
                                         "--dealer", f"127.0.0.1:{dealer_port}"],
                                        tmp_path, "server")
    killer = threading.Timer(3.0, lambda: server.send_signal(signal.SIGKILL))
    killer.start()
    start = time.monotonic()
    try:
        with pytest.raises(ProtocolError):
            client_run(residual_plans["relu"], f"127.0.0.1:{server_port}", _inputs(200),
                       dealer=f"127.0.0.1:{dealer_port}", timeout=20)
        assert time.monotonic() - start < 60
    finally:
        killer.cancel()
        for process in (server, dealer):
            if process.poll() is None:
                process.kill()


@pytest.mark.slow
def test_cnn_example_over_tcp_matches_plain_on_20_inputs(digits_split, tmp_path):
    sys.path.insert(0, str(ROOT / "examples"))
    import digits

    calib = digits.to_model_input(digits_split["calib_images"], "img8")
    plan = picompile.compile(str(ROOT / "examples" / "cnn_digits.onnx"),
                             tmp_path / "cnn.piplan", protocol="hybrid", calib=calib)
    x = digits.to_model_input(digits_split["test_images"][:20], "img8")
    dealer, dealer_port = start_service(["dealer", "--port", "0", "--once"], tmp_path, "dealer")
    server, server_port = start_service(["serve", str(tmp_path / "cnn.piplan"), "--port", "0",
                                         "--once", "--dealer", f"127.0.0.1:{dealer_port}"],
                                        tmp_path, "server")
    try:
        result = client_run(plan, f"127.0.0.1:{server_port}", x,
                            dealer=f"127.0.0.1:{dealer_port}", timeout=300)
    finally:
        for process in (server, dealer):
            process.wait(timeout=60) if process.poll() is None else None
    got = result.server_outputs[plan.outputs[0].name]
    want = run_plan(plan, x, backend="plain").server_outputs[plan.outputs[0].name]
    assert np.array_equal(got.argmax(-1), want.argmax(-1))
    assert np.max(np.abs(got - want)) < 1e-2


def test_conv_matrix_from_weights_equals_basis_responses(residual_plans):
    from picompile.runtime.plain import conv_matrix, execute_step

    plan = residual_plans["relu"]
    for step in (s for s in plan.steps if s.op == "Conv"):
        shape = tuple(plan.values[step.inputs[0]].shape)
        n = int(np.prod(shape))
        bias = execute_step(plan, step, [np.zeros(shape)]).reshape(-1)
        dense = execute_step(plan, step, [np.eye(n).reshape((n,) + shape[1:])]).reshape(n, -1)
        rows, cols, values = conv_matrix(plan, step)
        matrix = np.zeros((dense.shape[1], n))
        np.add.at(matrix, (rows, cols), values)
        assert np.allclose(matrix, (dense - bias).T, atol=1e-12)


def test_tensors_larger_than_one_bfv_row(tmp_path):
    """A 9600-element activation spans two BFV rows (8192 slots): blocked layout end to end."""
    from picompile.runtime.bfv import row_rotation

    assert [row_rotation(k, 8192) for k in (-8192, 8192, -7680, 4097, 4096, -1)] == \
        [0, 0, 512, -4095, 4096, -1]
    rng = np.random.default_rng(3)
    model = conv_model(height=400).SerializeToString()
    plan = picompile.compile(model, protocol="hybrid", calib=rng.normal(size=(16, 2, 400, 6)))
    conv = next(s for s in plan.steps if s.op == "Conv")
    assert conv.hybrid.layout.output_blocks == 2
    x = rng.normal(size=(1, 2, 400, 6))
    name = plan.outputs[0].name
    got = run_plan(plan, x, backend="hybrid").server_outputs[name]
    want = run_plan(plan, x, backend="plain").server_outputs[name]
    # the 1/2400 of the global average pool is rounded to f = 16 bits (0.1% here)
    assert np.max(np.abs(got - want)) < 2e-2 * np.max(np.abs(want))


def test_flash_quadratic_fused_into_the_next_linear_step(calibration):
    """Flash's no-offline quadratic: Enc(c), Enc(c²) offline, the server evaluates
    a·y² + b·y + k under HE with its share and applies the next layer before masking."""
    plan = picompile.compile(residual_model().SerializeToString(), protocol="hybrid",
                             calib=calibration, degree=2, method="quad",
                             quadratic_protocol="flash")
    protocols = {s.name: s.hybrid.protocol for s in plan.steps}
    assert protocols["relu1"] == "flash_quadratic"          # feeds conv2: fused
    assert protocols["relu2"] == "flash_quadratic"          # feeds the max-pool: standalone
    steps = {s.name: s for s in plan.steps}
    assert steps["relu1"].hybrid.fused_into == "conv2" and steps["relu2"].hybrid.fused_into is None
    conv2 = steps["conv2"]
    assert conv2.hybrid.flash_from == "relu1"
    assert conv2.hybrid.sigma_correct >= 40
    x = _inputs(2, seed=4)
    name = plan.outputs[0].name
    hybrid = run_plan(plan, x, backend="hybrid")
    want = run_plan(plan, x, backend="plain").server_outputs[name]
    got = hybrid.server_outputs[name]
    assert np.max(np.abs(got - want)) < 1e-2 * max(1.0, np.max(np.abs(want)))
    assert np.array_equal(got.argmax(-1), want.argmax(-1))


def test_flash_quadratics_with_several_consumers_need_no_dealer():
    """A quadratic feeding a convolution and a residual Add (a ResNet block's input), and one
    feeding a pooling step, cannot be fused: the server evaluates Enc(q(y)) and returns it
    masked. No Beaver square, no dealer; the outputs match the plain backend."""
    rng = np.random.default_rng(8)
    calib = rng.normal(size=(64, 2, 6, 6)).astype(np.float32)
    plan = picompile.compile(shared_activation_model().SerializeToString(), protocol="hybrid",
                             calib=calib, degree=2, method="quad", quadratic_protocol="flash")
    quadratics = [s for s in plan.steps if s.op == "Polynomial"]
    assert len(quadratics) == 2
    for step in quadratics:
        assert step.hybrid.protocol == "flash_quadratic" and step.hybrid.fused_into is None
        assert step.hybrid.sigma_correct >= 40 and step.hybrid.output_shift > 0
    x = rng.normal(size=(3, 2, 6, 6)).astype(np.float32)
    name = plan.outputs[0].name
    hybrid = run_plan(plan, x, backend="hybrid")
    want = run_plan(plan, x, backend="plain").server_outputs[name]
    got = hybrid.server_outputs[name]
    assert np.max(np.abs(got - want)) < 1e-2 * max(1.0, np.max(np.abs(want)))
    assert hybrid.communication["offline_bytes"] > 0
    client_end, _ = InMemoryChannel.pair(timeout=1.0)
    assert not HybridClient(plan, client_end).needs_dealer   # no dealer channel given: fine


def test_reports_state_security_and_sigma_per_step(residual_plans):
    from picompile.report import render_html, render_text

    plan = residual_plans["relu"]
    bfv = plan.bfv
    text = render_text(plan, width=200)
    assert "HEStd_128_classic (128-bit)" in text and f"sigma = {bfv.sigma}" in text
    assert "hybrid protocol per step" in text and "he_linear" in text
    html = render_html(plan)
    assert "Security and protocol (hybrid)" in html and f"2^-{bfv.sigma_hide}" in html


def test_cli_run_backend_hybrid_prints_communication(residual_plans, tmp_path, capsys):
    from picompile.cli import main

    plan_path = tmp_path / "relu.piplan"
    residual_plans["relu"].save(plan_path)
    np.save(tmp_path / "x.npy", _inputs(1, seed=11))
    assert main(["run", str(plan_path), "--input", str(tmp_path / "x.npy"),
                 "--backend", "hybrid"]) == 0
    out = capsys.readouterr().out
    assert "backend hybrid" in out and "per inference: online" in out and "offline" in out
    assert main(["compile", str(tmp_path / "m.onnx"), "--protocol", "hybrid"]) != 0
