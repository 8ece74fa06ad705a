"""FHE-only plans: slot-level model vs tensor semantics, CKKS end to end, key separation."""

from __future__ import annotations

import numpy as np
import pytest

import picompile
from conftest import EXAMPLES, model_input
from picompile.errors import UnsupportedOpError
from picompile.passes.packing import assign_packing, assign_periods
from picompile.plan import SLOT_MATRIX_OPS
from picompile.reference import reference_outputs
from picompile.runtime import run_plan
from picompile.runtime.ckks import CkksClient, CkksServer, PublicMaterial
from picompile.runtime.slot_program import NumpySlots, SlotProgram

MODELS = {"mlp_digits": "flat64", "cnn_digits": "img8"}


def fhe_plan(name: str, digits_split, insecure: bool = True, degree: int = 3):
    calib = {"input": model_input(digits_split["calib_images"], MODELS[name]),
             "labels": digits_split["calib_labels"]}
    return picompile.compile(EXAMPLES / f"{name}.onnx", calib=calib, degree=degree,
                             insecure_test_params=insecure)


def scatter_slots(x: np.ndarray, slot_map: np.ndarray, slots: int, period: int) -> np.ndarray:
    """The slot vector of a value: its map, repeated every ``period`` slots (replication)."""
    full = np.zeros(period)
    full[slot_map] = x.reshape(-1)
    return np.tile(full, slots // period)


@pytest.mark.parametrize("name", list(MODELS))
def test_every_linear_step_at_slot_level_equals_dense_reference(name, digits_split):
    plan = fhe_plan(name, digits_split)
    from picompile.runtime.plain import execute_step

    slots = plan.ckks.slots
    program = SlotProgram(plan, NumpySlots(slots))
    packing = assign_packing(plan)
    assign_periods(plan, packing, slots, SLOT_MATRIX_OPS)
    maps, periods = packing.slot_maps, packing.periods
    x = model_input(digits_split["test_images"][:1], MODELS[name]).astype(np.float64)
    trace = {plan.inputs[0].name: x}
    checked = 0
    for step in plan.steps:
        args = [trace[v] for v in step.inputs]
        trace[step.outputs[0]] = execute_step(plan, step, args)
        if step.fhe is None or step.fhe.linear is None:
            continue
        result = program.execute_step(step, [scatter_slots(a, maps[v], slots, periods[v])
                                             for a, v in zip(args, step.inputs, strict=True)])
        out = step.outputs[0]
        expected = scatter_slots(trace[out], maps[out], slots, periods[out])
        written = np.zeros(slots, dtype=bool)  # every copy of the output's mapped slots
        written[(maps[out][None, :] + np.arange(0, slots, periods[out])[:, None]).ravel()] = True
        np.testing.assert_allclose(result[written], expected[written], rtol=0, atol=1e-9)
        checked += 1
    assert checked >= 2


def test_plan_records_ckks_parameters_and_rotation_keys(digits_split):
    plan = fhe_plan("cnn_digits", digits_split, insecure=False)
    ckks = plan.ckks
    assert ckks.security.startswith("128-bit") and not ckks.insecure
    assert ckks.ring_dimension >= 1 << 15
    keys = plan.layout.rotation_keys
    used = {k for s in plan.steps if s.fhe.linear is not None
            for k in s.fhe.linear.baby_rotations + s.fhe.linear.giant_rotations}
    assert set(keys) == used - {0}
    depth = max(s.fhe.level_out for s in plan.steps)
    assert depth == ckks.multiplicative_depth


def test_insecure_parameters_are_labelled(digits_split):
    plan = fhe_plan("mlp_digits", digits_split)
    assert plan.ckks.insecure
    assert "insecure" in plan.ckks.security


def test_maxpool_needs_hybrid(digits_split):
    calib = {"input": model_input(digits_split["calib_images"], "img8")}
    with pytest.raises(UnsupportedOpError, match="MaxPool"):
        picompile.compile(EXAMPLES / "maxpool_digits.onnx", calib=calib, degree=3)


def _check_encrypted(name: str, digits_split, count: int, insecure: bool) -> None:
    plan = fhe_plan(name, digits_split, insecure=insecure)
    x = model_input(digits_split["test_images"][:count], MODELS[name])
    encrypted = run_plan(plan, x, backend="ckks")
    plain = run_plan(plan, x, backend="plain")
    key = plan.outputs[0].name
    assert np.max(np.abs(encrypted.server_outputs[key] - plain.server_outputs[key])) < 1e-2
    ort = reference_outputs(EXAMPLES / f"{name}.onnx", {"input": x})
    if name == "mlp_digits":
        np.testing.assert_array_equal(encrypted.outputs["output_label"], ort["output_label"])
    else:
        np.testing.assert_array_equal(np.argmax(encrypted.outputs["logits"], 1),
                                      np.argmax(ort["logits"], 1))


def test_encrypted_mlp_small_parameters(digits_split):
    _check_encrypted("mlp_digits", digits_split, 3, insecure=True)


@pytest.mark.slow
@pytest.mark.parametrize("name", list(MODELS))
def test_encrypted_inference_128_bit_on_20_inputs(name, digits_split):
    _check_encrypted(name, digits_split, 20, insecure=False)


def test_server_holds_no_secret_key_and_cannot_decrypt(tmp_path, digits_split):
    import openfhe

    plan = fhe_plan("mlp_digits", digits_split)
    client = CkksClient(plan)
    material = client.public_material().save(tmp_path / "keys")
    server = CkksServer(plan, PublicMaterial.load(material))  # built from files only
    secret = client.secret_key_bytes()
    window = secret[len(secret) // 2: len(secret) // 2 + 64]
    loaded = PublicMaterial.load(material)
    for name in ("context", "public_key", "multiplication_key", "rotation_keys"):
        assert window not in getattr(loaded, name)
    assert not any(isinstance(v, openfhe.PrivateKey) for v in vars(server).values())
    x = model_input(digits_split["test_images"][:1], "flat64")[0]
    outputs, _ = server.evaluate({"input": client.encrypt(x)})
    ciphertext = openfhe.DeserializeCiphertextString(outputs[plan.outputs[0].name],
                                                     openfhe.BINARY)
    with pytest.raises(TypeError):
        server.context.Decrypt(ciphertext, server.public_key)  # a public key cannot decrypt
    decrypted = client.decrypt(outputs[plan.outputs[0].name], plan.outputs[0].name)
    plain = run_plan(plan, x[None]).server_outputs[plan.outputs[0].name][0]
    assert np.max(np.abs(decrypted - plain)) < 1e-2


def test_calibrate_costs_feeds_the_cost_pass(tmp_path, monkeypatch, digits_split):
    import json
    import subprocess
    import sys

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    result = subprocess.run([sys.executable, "-m", "picompile.cli", "calibrate-costs",
                             "--ring-dimensions", "4096", "--repeats", "1"],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    table = json.loads((tmp_path / "picompile" / "costs.json").read_text())
    costs = table["ring_dimensions"]["4096"]
    for key in ("rotate", "hoisted_rotate", "diagonal", "multiply_plain", "chebyshev"):
        assert key in costs
    assert costs["rotate"] > costs["multiply_plain"] > 0
    hybrid = table["hybrid"]   # the hybrid protocol's BFV and share costs (--protocol auto)
    assert hybrid["rotate"] > hybrid["diagonal"] > 0 and hybrid["ciphertext_bytes"] > 0
    assert hybrid["relu_call"] > 0 and hybrid["message"] > 0
    from picompile.deployment import hybrid_costs

    assert hybrid_costs()["encrypt"] == hybrid["encrypt"]
    plan = fhe_plan("mlp_digits", digits_split)
    assert plan.analysis["cost"]["table"] == "measured by picompile calibrate-costs"
    steps = [s.meta["estimated_seconds"] for s in plan.steps]
    assert all(t >= 0 for t in steps) and sum(steps) == pytest.approx(
        plan.analysis["cost"]["predicted_seconds"])


def test_ckks_backend_refuses_plans_it_cannot_run(digits_split):
    from picompile.errors import BackendError, PlanError

    exact = picompile.compile(EXAMPLES / "mlp_digits.onnx")  # no calibration: exact ReLUs
    x = model_input(digits_split["test_images"][:1], "flat64")
    with pytest.raises(PlanError, match="no CKKS layout"):
        run_plan(exact, x, backend="ckks")
    per_channel = picompile.compile(
        EXAMPLES / "mlp_digits.onnx", method="hermite", degree=9,
        calib={"input": model_input(digits_split["calib_images"], "flat64")})
    with pytest.raises(BackendError, match="per-channel polynomial activations.*degree 7"):
        run_plan(per_channel, x, backend="ckks")
    np.testing.assert_array_equal(run_plan(per_channel, x).outputs["output_label"].shape, (1,))


@pytest.mark.parametrize("name,method", [("mlp_digits", "hermite"), ("cnn_digits", "quad")])
def test_per_channel_and_folded_quadratics_under_ckks(name, method, digits_split):
    """AESPA's and Flash's per-channel quadratics run under CKKS: per-slot coefficients, and
    where the producer is a convolution/linear layer the square is folded into it (one level).
    Encrypted = plain backend = the same plan without folding (hybrid plans never fold)."""
    calib = {"input": model_input(digits_split["calib_images"], MODELS[name])}
    plan = picompile.compile(EXAMPLES / f"{name}.onnx", calib=calib, degree=2, method=method,
                             insecure_test_params=True)
    unfolded = picompile.compile(EXAMPLES / f"{name}.onnx", calib=calib, degree=2,
                                 method=method, protocol="hybrid")
    polynomials = [s for s in plan.steps if s.op == "Polynomial"]
    assert all(plan.param(s, "coefficients").shape[0] > 1 or s.meta.get("folded_square")
               for s in polynomials)
    folded = [s for s in polynomials if s.meta.get("folded_square")]
    assert folded and all(s.fhe.level_out - s.fhe.level_in == 1 for s in folded)
    x = model_input(digits_split["test_images"][:3], MODELS[name])
    name_out = plan.outputs[0].name
    plain = run_plan(plan, x).server_outputs[name_out]
    reference = run_plan(unfolded, x).server_outputs[unfolded.outputs[0].name]
    np.testing.assert_allclose(plain, reference, rtol=1e-9, atol=1e-9)
    encrypted = run_plan(plan, x, backend="ckks").server_outputs[name_out]
    assert np.max(np.abs(encrypted - plain)) < 1e-4 * max(1.0, np.max(np.abs(plain)))


def test_power_basis_only_for_low_degrees_and_narrow_ranges():
    from picompile.cost import chebyshev_depth, polynomial_depth

    assert [polynomial_depth(d, 10.0) for d in (1, 2, 3, 5, 7)] == [1, 2, 2, 3, 3]
    assert polynomial_depth(13, 10.0) == chebyshev_depth(13) == 5
    assert polynomial_depth(7, 100.0) == chebyshev_depth(7)  # 100^7 would eat the scale


@pytest.mark.parametrize("degree", [1, 2, 3, 5, 7])
def test_power_series_uses_ceil_log2_levels_under_ckks(degree):
    """The power-basis product tree fits in exactly ceil(log2(d+1)) levels of a real CKKS
    context and matches the float64 model and the Chebyshev series it came from."""
    from picompile.approx.basis import chebyshev_to_power
    from picompile.cost import polynomial_depth
    from picompile.runtime.ckks import OpenFheSlots
    from picompile.runtime.openfhe_loader import ckks_parameters, load_openfhe
    from picompile.runtime.slot_program import power_series

    openfhe = load_openfhe()
    depth = polynomial_depth(degree, bound=6.0)
    assert depth == degree.bit_length()
    context = openfhe.GenCryptoContext(ckks_parameters(openfhe, depth, insecure=True))
    for feature in (openfhe.PKE, openfhe.KEYSWITCH, openfhe.LEVELEDSHE):
        context.Enable(feature)
    keys = context.KeyGen()
    context.EvalMultKeyGen(keys.secretKey)
    slots = context.GetRingDimension() // 2
    x = np.random.default_rng(degree).uniform(-6, 5, slots)
    chebyshev = np.random.default_rng(degree + 1).normal(size=degree + 1) / np.arange(1, degree + 2)
    coefficients = chebyshev_to_power(chebyshev, (-6.0, 5.0), snap=True)[0]
    engine = OpenFheSlots(openfhe, context, slots, depth + 1)
    ciphertext = context.Encrypt(keys.publicKey, context.MakeCKKSPackedPlaintext(x.tolist()))
    result = power_series(engine, ciphertext, coefficients)
    plaintext = context.Decrypt(result, keys.secretKey)
    plaintext.SetLength(slots)
    decrypted = np.array(plaintext.GetRealPackedValue())
    expected = np.polynomial.Chebyshev(chebyshev, domain=[-6.0, 5.0])(x)
    model = power_series(NumpySlots(slots), x, coefficients)
    np.testing.assert_allclose(model, expected, atol=1e-9)
    assert np.max(np.abs(decrypted - expected)) < 1e-4


def test_multiplexed_packing_of_strided_convolutions_runs_encrypted():
    """Stride-2 convolutions keep the 8x8 grid with channels multiplexed into the gaps (no
    compaction step, few diagonals); slot-level = tensor-level; the encrypted run (small
    insecure ring) matches the plain backend."""
    from onnx_models import strided_model
    from picompile.passes.packing import Grid

    full = Grid(16, 2, 2, 4, 8, 8).slot_map()  # 16 channels fill every 4x4 cell of one grid
    assert sorted(full.tolist()) == list(range(64))
    assert full[:4].tolist() == [0, 4, 32, 36]  # channel 0 at its cells' first slots
    x = np.random.default_rng(0).normal(size=(64, 2, 8, 8)).astype(np.float32)
    plan = picompile.compile(strided_model(), calib=x, degree=3, insecure_test_params=True)
    packings = [s.meta["packing"] for s in plan.steps if s.op == "Conv"]
    assert "4×4×4 on 8×8 grids, gap 2, 4 channels multiplexed, 32 copies (period 64)" in packings
    assert "8×2×2 on 8×8 grids, gap 4, 16 channels multiplexed, 32 copies (period 64)" in packings
    strided = [s for s in plan.steps if s.op == "Conv" and s.attrs["strides"] == [2, 2]]
    assert all(s.fhe.linear.diagonal_count <= 64 for s in strided)
    maps = assign_packing(plan).slot_maps
    assert all(len(set(m.tolist())) == m.size for m in maps.values())
    slots = run_plan(plan, x[:3], backend="plain").server_outputs["y"]
    tensors = run_plan(plan, x[:3], backend="plain", slot_level=False).server_outputs["y"]
    np.testing.assert_allclose(slots, tensors, atol=1e-9)
    encrypted = run_plan(plan, x[:1], backend="ckks").server_outputs["y"]
    assert np.max(np.abs(encrypted - slots[:1])) < 1e-3
