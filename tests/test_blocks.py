"""FHE tensors larger than one ciphertext (``passes/block_layout.py``, ``runtime/blocks.py``):
block-split linear steps against the dense kernel, whole plans at slot level and encrypted at
the insecure test ring (leveled and bootstrapped), the cost model, the plan file and the
errors."""

from __future__ import annotations

import dataclasses

import numpy as np
import onnxruntime as ort
import pytest
from test_bootstrap import deep_residual_model

import picompile
from onnx_models import shared_activation_model, strided_model
from picompile.errors import OptionError, PlanError, UnsupportedOpError
from picompile.runtime.blocks import block_count, frame, pair_offsets, split_blocks, unframe
from picompile.runtime.kernels import execute_step
from picompile.runtime.plain import PlainBackend
from picompile.runtime.slot_program import NumpySlots, SlotProgram, is_blocked


def strided_inputs(count: int = 32) -> np.ndarray:
    return np.random.default_rng(0).normal(size=(count, 2, 8, 8)).astype(np.float32)


@pytest.fixture(scope="module")
def blocked_plan():
    """The strided two-stage network over 32-slot ciphertexts: its 2×8×8 input spans 4."""
    return picompile.compile(strided_model(), calib=strided_inputs(), degree=3,
                             insecure_test_params=True, slots=32)


def test_plan_spans_several_ciphertexts(blocked_plan):
    assert blocked_plan.ckks.slots == 32
    assert blocked_plan.layout.ciphertexts == 4
    assert is_blocked(blocked_plan)
    blocked = [s for s in blocked_plan.steps if s.fhe.blocked is not None]
    assert {s.op for s in blocked} >= {"Conv", "GlobalAveragePool", "Linear"}
    conv = next(s for s in blocked if s.op == "Conv")
    # 2×8×8 input in 4 blocks; the stride-2 output, 4×4×4 multiplexed on the 8×8 grid, in 2
    assert conv.fhe.blocked.input_blocks == 4 and conv.fhe.blocked.output_blocks == 2
    assert "diagonals" not in conv.params  # built by the runtime from the weights


def test_block_split_linear_steps_equal_the_dense_kernel(blocked_plan):
    """Every blocked linear step, run on a random tensor as a block matrix with the numpy slot
    engine, equals the plain kernel on that tensor within 1e-9."""
    plan = blocked_plan
    slots = plan.ckks.slots
    program = SlotProgram(plan, NumpySlots(slots))
    rng = np.random.default_rng(4)
    checked = 0
    for step in plan.steps:
        layout = step.fhe.blocked
        if layout is None:
            continue
        shape = tuple(plan.values[step.inputs[0]].shape)
        x = rng.normal(size=shape)
        in_map = plan.param(step, "input_slots").astype(np.int64)
        out_map = plan.param(step, "output_slots").astype(np.int64)
        packed = np.zeros(layout.input_blocks * slots)
        packed[in_map] = x.reshape(-1)
        result = program.blocked_linear(step, split_blocks(packed, slots))
        assert len(result) == layout.output_blocks
        got = np.concatenate(result)[out_map]
        want = execute_step(plan, step, [x]).reshape(-1)
        np.testing.assert_allclose(got, want, atol=1e-9, rtol=0)
        checked += 1
    assert checked >= 4


def test_pair_offsets_against_a_dense_scan():
    rng = np.random.default_rng(1)
    rows = rng.integers(0, 40, 300)
    cols = rng.integers(0, 70, 300)
    pairs = pair_offsets(rows, cols, 16)
    for (o, i), offsets in pairs.items():
        chosen = (rows // 16 == o) & (cols // 16 == i)
        shifts = (cols[chosen] % 16 - rows[chosen] % 16) % 16
        expected = sorted({int(s) - 16 if s > 8 else int(s) for s in shifts})
        assert offsets.tolist() == expected
    assert len(pairs) == len(set(zip(rows // 16, cols // 16, strict=True)))


@pytest.mark.parametrize("model, shape", [(strided_model, (2, 8, 8)),
                                          (shared_activation_model, (2, 6, 6))])
def test_blocked_plans_match_the_one_ciphertext_plan(model, shape):
    """Slot level: the plan over 32-slot ciphertexts computes what the tensor kernels and the
    one-ciphertext plan compute (same activations: the degree is fixed)."""
    x = np.random.default_rng(0).normal(size=(16,) + shape).astype(np.float32)
    whole = picompile.compile(model(), calib=x, degree=3, insecure_test_params=True)
    split = picompile.compile(model(), calib=x, degree=3, insecure_test_params=True, slots=32)
    assert whole.layout.ciphertexts == 1 and split.layout.ciphertexts > 1
    name = split.outputs[0].name
    slot_level = PlainBackend(slot_level=True).execute(split, {"x": x[:3]}).server_outputs[name]
    tensors = PlainBackend(slot_level=False).execute(split, {"x": x[:3]}).server_outputs[name]
    single = PlainBackend(slot_level=True).execute(whole, {"x": x[:3]}).server_outputs[name]
    np.testing.assert_allclose(slot_level, tensors, atol=1e-9)
    np.testing.assert_allclose(slot_level, single, atol=1e-9)


def test_residual_network_over_several_ciphertexts_encrypted():
    """CKKS at the insecure test ring: a residual network whose tensors span 4 ciphertexts of
    32 slots decrypts to the slot-level model and the plain backend; top-1 as onnxruntime."""
    from picompile.runtime.ckks import CkksBackend

    model = shared_activation_model()
    x = np.random.default_rng(0).normal(size=(16, 2, 6, 6)).astype(np.float32)
    plan = picompile.compile(model, calib=x, degree=3, insecure_test_params=True, slots=32)
    assert plan.layout.ciphertexts == 4
    name = plan.outputs[0].name
    sample = {"x": x[:2]}
    encrypted = CkksBackend().execute(plan, sample).server_outputs[name]
    modelled = PlainBackend(slot_level=True).execute(plan, sample).server_outputs[name]
    np.testing.assert_allclose(encrypted, modelled, atol=1e-6)
    session = ort.InferenceSession(model.SerializeToString())
    reference = session.run(None, {"x": x[:2]})[0]
    assert np.array_equal(encrypted.argmax(axis=1), reference.argmax(axis=1))


def test_bootstrapped_plan_over_two_ciphertexts_encrypted():
    """A plan deeper than leveled CKKS with 16-wide tensors over 8-slot ciphertexts: every
    bootstrap runs once per ciphertext (the cost pass counts them so) and the decryption
    matches the slot-level model."""
    from picompile.runtime.ckks import CkksBackend

    x = np.random.default_rng(2).uniform(-1, 1, (64, 16)).astype(np.float32)
    plan = picompile.compile(deep_residual_model(), calib=x, degree=3,
                             insecure_test_params=True, slots=8)
    boot = plan.ckks.bootstrapping
    assert boot is not None and plan.layout.ciphertexts == 2
    refreshed = [s for s in plan.steps if s.fhe.bootstrap_after is not None]
    assert plan.analysis["cost"]["bootstraps"] == sum(s.fhe.blocks for s in refreshed) \
        == 2 * boot.count
    name = plan.outputs[0].name
    encrypted = CkksBackend().execute(plan, {"x": x[:1]}).server_outputs[name]
    modelled = PlainBackend(slot_level=True).execute(plan, {"x": x[:1]}).server_outputs[name]
    np.testing.assert_allclose(encrypted, modelled, atol=5e-3)


def test_blocked_cost_counts_every_ciphertext(blocked_plan):
    """A blocked plan is predicted slower than the same plan in one ciphertext (more rotations
    and products), and every elementwise step is charged once per ciphertext."""
    x = strided_inputs()
    whole = picompile.compile(strided_model(), calib=x, degree=3, insecure_test_params=True)
    assert (blocked_plan.analysis["cost"]["predicted_seconds"]
            > whole.analysis["cost"]["predicted_seconds"])
    polynomial = next(s for s in blocked_plan.steps if s.op == "Polynomial")
    same = next(s for s in whole.steps if s.name == polynomial.name)
    ratio = polynomial.meta["estimated_seconds"] / same.meta["estimated_seconds"]
    assert ratio == pytest.approx(polynomial.fhe.blocks, rel=0.05)


def test_blocked_plan_file_round_trip_and_corruption(blocked_plan, tmp_path):
    path = tmp_path / "blocked.plan"
    blocked_plan.save(path)
    loaded = picompile.load_plan(path)
    x = strided_inputs(2)
    name = loaded.outputs[0].name
    np.testing.assert_allclose(
        PlainBackend(slot_level=True).execute(loaded, {"x": x}).server_outputs[name],
        PlainBackend(slot_level=True).execute(blocked_plan, {"x": x}).server_outputs[name],
        atol=1e-12)
    step = next(s for s in loaded.steps if s.fhe.blocked is not None)
    broken = dataclasses.replace(step, params={k: v for k, v in step.params.items()
                                               if k != "input_slots"})
    loaded.steps[loaded.steps.index(step)] = broken
    with pytest.raises(PlanError, match="slot maps"):
        loaded.validate()


def test_weights_that_disagree_with_the_layout_are_refused(blocked_plan):
    plan = blocked_plan
    step = next(s for s in plan.steps if s.op == "Conv" and s.fhe.blocked is not None)
    pairs = list(step.fhe.blocked.pairs)
    pairs[0] = dataclasses.replace(pairs[0], offsets=pairs[0].offsets[1:])
    changed = dataclasses.replace(step, fhe=dataclasses.replace(
        step.fhe, blocked=dataclasses.replace(step.fhe.blocked, pairs=pairs)))
    program = SlotProgram(plan, NumpySlots(plan.ckks.slots))
    blocks = [np.zeros(plan.ckks.slots)] * step.fhe.blocked.input_blocks
    with pytest.raises(PlanError, match="do not match"):
        program.blocked_linear(changed, blocks)
    with pytest.raises(PlanError, match="reads 4 ciphertexts"):
        program.blocked_linear(step, blocks[:1])


def test_framed_ciphertext_messages():
    parts = [b"a" * 5, b"", b"xyz"]
    assert unframe(frame(parts), 3) == parts
    assert frame([b"one"]) == b"one" and unframe(b"one", 1) == [b"one"]
    with pytest.raises(PlanError, match="frame header"):
        unframe(b"raw ciphertext bytes", 3)
    with pytest.raises(PlanError, match="holds 3"):
        unframe(frame(parts), 2)
    with pytest.raises(PlanError, match="truncated"):
        unframe(frame(parts)[:-2], 3)
    with pytest.raises(PlanError, match="trailing"):
        unframe(frame(parts) + b"!", 3)
    assert block_count(np.array([0, 31]), 32) == 1 and block_count(np.array([32]), 32) == 2


def test_slots_option_and_batch_are_checked():
    x = strided_inputs(8)
    with pytest.raises(OptionError, match="power of two"):
        picompile.compile(strided_model(), calib=x, degree=3, insecure_test_params=True,
                          slots=48)
    with pytest.raises(UnsupportedOpError, match="cannot share a ciphertext"):
        picompile.compile(strided_model(), calib=x, degree=3, insecure_test_params=True,
                          slots=32, batch=2)


def test_client_and_server_apart_over_several_ciphertexts(blocked_plan):
    """The FHE session (client view with the secret key, server from public material) moves a
    tensor of 4 ciphertexts as one framed message each way; outputs = slot-level model."""
    import threading

    from picompile.runtime.channel import InMemoryChannel
    from picompile.runtime.fhe_session import FheClient, FheServer, fhe_client_view

    server_end, client_end = InMemoryChannel.pair()
    outcome: dict = {}
    thread = threading.Thread(target=lambda: outcome.update(
        count=FheServer(blocked_plan, server_end).serve()), daemon=True)
    thread.start()
    client = FheClient(fhe_client_view(blocked_plan))
    client.setup(client_end)
    x = strided_inputs(2)
    outputs = [client.infer({"x": sample}) for sample in x]
    client.finish()
    thread.join(timeout=60)
    assert outcome == {"count": 2}
    name = blocked_plan.outputs[0].name
    modelled = PlainBackend(slot_level=True).execute(blocked_plan, {"x": x}).server_outputs[name]
    np.testing.assert_allclose(np.stack([o[name] for o in outputs]).reshape(modelled.shape),
                               modelled, atol=1e-6)


def constant_add_model():
    """Conv → Add(a constant per element) → Relu → Conv: the constant spans every ciphertext."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(7)
    inits = [numpy_helper.from_array(rng.normal(0, 0.3, (3, 2, 3, 3)).astype(np.float32), "w1"),
             numpy_helper.from_array(rng.normal(0, 1, (1, 3, 6, 6)).astype(np.float32), "k"),
             numpy_helper.from_array(rng.normal(0, 0.3, (2, 3, 3, 3)).astype(np.float32), "w2")]
    nodes = [helper.make_node("Conv", ["x", "w1"], ["c1"], pads=[1, 1, 1, 1]),
             helper.make_node("Add", ["c1", "k"], ["a"]),
             helper.make_node("Relu", ["a"], ["r"]),
             helper.make_node("Conv", ["r", "w2"], ["y"], pads=[1, 1, 1, 1])]
    graph = helper.make_graph(
        nodes, "constant_add",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 2, 6, 6])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 2, 6, 6])], initializer=inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def test_constant_slot_vectors_differ_per_ciphertext():
    """A constant added to a tensor over 4 ciphertexts: each ciphertext gets its own part (the
    leveled engine caches encodings by key, so the key names the block)."""
    from picompile.runtime.ckks import CkksBackend

    x = np.random.default_rng(0).normal(size=(16, 2, 6, 6)).astype(np.float32)
    plan = picompile.compile(constant_add_model(), calib=x, degree=3, insecure_test_params=True,
                             slots=32)
    assert plan.layout.ciphertexts == 4
    name = plan.outputs[0].name
    encrypted = CkksBackend().execute(plan, {"x": x[:1]}).server_outputs[name]
    modelled = PlainBackend(slot_level=True).execute(plan, {"x": x[:1]}).server_outputs[name]
    tensors = PlainBackend(slot_level=False).execute(plan, {"x": x[:1]}).server_outputs[name]
    np.testing.assert_allclose(modelled, tensors, atol=1e-9)
    np.testing.assert_allclose(encrypted, modelled, atol=1e-6)


def test_ciphertexts_no_weight_reads_still_count():
    """A convolution that ignores its input's second channel (zero weights) still reads all
    the input's ciphertexts (3 of 32 slots for 2×6×6), and its layout says so."""
    from onnx import TensorProto, helper, numpy_helper

    weight = np.random.default_rng(3).normal(0, 0.4, (2, 2, 3, 3)).astype(np.float32)
    weight[:, 1] = 0.0
    graph = helper.make_graph(
        [helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]),
         helper.make_node("Relu", ["c"], ["y"])], "ignores_a_channel",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 2, 6, 6])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 2, 6, 6])],
        initializer=[numpy_helper.from_array(weight, "w")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    x = np.random.default_rng(0).normal(size=(8, 2, 6, 6)).astype(np.float32)
    plan = picompile.compile(model, calib=x, degree=3, insecure_test_params=True, slots=32)
    conv = next(s for s in plan.steps if s.op == "Conv")
    assert conv.fhe.blocked.input_blocks == 3 and conv.fhe.blocked.output_blocks == 3
    assert {p.input_block for p in conv.fhe.blocked.pairs} == {0, 1}
    name = plan.outputs[0].name
    np.testing.assert_allclose(
        PlainBackend(slot_level=True).execute(plan, {"x": x[:2]}).server_outputs[name],
        PlainBackend(slot_level=False).execute(plan, {"x": x[:2]}).server_outputs[name],
        atol=1e-9)
