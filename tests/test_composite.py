"""Composite sign-based ReLUs: error bounds against the exact function, the degree search's
choice among forms, the plan's steps, and CKKS against the slot-level model at a small ring."""

from __future__ import annotations

import numpy as np
import pytest
from test_bootstrap import deep_residual_model

import picompile
from picompile.approx.composite import design_sign, relu_error_bounds
from picompile.errors import AccuracyBudgetError, OptionError
from picompile.runtime import run_plan


@pytest.mark.parametrize("stages", [2, 3, 4])
def test_sign_and_relu_error_bounds_hold_on_the_calibrated_range(stages):
    sign = design_sign((7,) * stages)
    t = np.linspace(-1.0, 1.0, 400_001)
    outside = np.abs(t) >= sign.tau
    assert np.max(np.abs(sign.sign(t[outside]) - np.sign(t[outside]))) <= sign.error * (1 + 1e-4)
    assert sign.error <= 2.0**-10
    step = sign.step(t)  # h stays in [−e/2, 1 + e/2]: nothing leaves the next stage's domain
    slack = sign.error * (1 + 1e-4) / 2  # the error is measured on a grid: 1e-4 relative
    assert step.min() >= -slack and step.max() <= 1 + slack
    bound = 3.7
    x = bound * t
    error = np.abs(sign.relu(x, bound) - np.maximum(x, 0.0))
    bounds = relu_error_bounds(sign, bound)
    inside = np.abs(x) < bounds["transition"]
    assert np.max(error[~inside]) <= bounds["max_error_outside_transition"] * (1 + 1e-4)
    assert np.max(error[inside]) <= bounds["max_error_in_transition"] * (1 + 1e-4)
    # more stages: a narrower transition (the degree search's accuracy/cost trade)
    if stages > 2:
        assert sign.tau < design_sign((7,) * (stages - 1)).tau / 4
    # float32 inputs are evaluated in float32 (the compile-time simulation's dtype)
    assert sign.relu(x.astype(np.float32)[:10], bound).dtype == np.float32


def _calibration() -> np.ndarray:
    return np.random.default_rng(2).uniform(-1, 1, (400, 16)).astype(np.float32)


@pytest.fixture(scope="module")
def composite_plan():
    """Two residual blocks (4 ReLUs), budget 1 point, single polynomials capped at degree 3:
    only composite forms meet the budget."""
    return picompile.compile(deep_residual_model(blocks=2), calib=_calibration(),
                             accuracy_budget=1.0, max_degree=3, insecure_test_params=True)


def test_degree_search_picks_composite_forms_where_polynomials_miss(composite_plan):
    with pytest.raises(AccuracyBudgetError, match="cannot be met"):
        picompile.compile(deep_residual_model(blocks=2), calib=_calibration(),
                          accuracy_budget=1.0, max_degree=3, activation_form="polynomial",
                          insecure_test_params=True)
    plan = composite_plan
    degrees = plan.analysis["degrees"]
    assert degrees["budget_met"] and degrees["composite_layers"] == 4
    assert degrees["range_margin"] == 0.25
    products = [s for s in plan.steps if s.op == "Product"]
    stages = [s for s in plan.steps if s.attrs.get("method") == "composite"]
    assert len(products) == 4 and len(stages) >= 8
    for product in products:
        record = product.meta["approximation"]
        assert record["method"] == "composite" and record["tau"] < 0.2
        low, high = record["interval"]
        calibrated = max(abs(v) for v in (product.meta["calibration"]["min"],
                                          product.meta["calibration"]["max"]))
        assert high == -low == pytest.approx(1.25 * calibrated)
    # every stage fits between two bootstraps: the levels pass put bootstraps inside them
    boot = plan.ckks.bootstrapping
    assert plan.ckks.runnable and boot is not None and boot.count >= 1
    assert any(s.fhe.bootstrap_after is not None for s in stages)
    # refreshed stage outputs feeding the next stage are multiplied up to fill the bootstrap's
    # range (its error is absolute); the next stage evaluates p(x · scale)
    upscaled = [s for s in stages if s.fhe.bootstrap_after is not None
                and s.fhe.bootstrap_after.scale < 1]
    assert upscaled and boot.upscaled_values == len(upscaled)
    assert all(s.attrs["stage"] < s.attrs["stages"] for s in upscaled)


def test_composite_plan_equals_exact_model_within_its_bounds(composite_plan):
    plan = composite_plan
    x = _calibration()[:32]
    key = plan.outputs[0].name
    tensors = run_plan(plan, x, backend="plain", slot_level=False).server_outputs[key]
    slots = run_plan(plan, x[:2], backend="plain").server_outputs[key]
    np.testing.assert_allclose(slots, tensors[:2], atol=1e-9)
    exact = picompile.run(picompile.compile(deep_residual_model(blocks=2)), x)
    exact = next(iter(exact.values()))
    assert np.max(np.abs(tensors - exact)) < 0.2
    assert np.mean(np.argmax(tensors, 1) == np.argmax(exact, 1)) >= 0.95


def test_composite_plan_under_ckks_matches_the_slot_level_model(composite_plan, tmp_path):
    from picompile.runtime.ckks import CkksClient, CkksServer

    plan = composite_plan
    client = CkksClient(plan)
    server = CkksServer(plan, client.write_public_material(tmp_path / "keys"))
    x = _calibration()[:1]
    key = plan.outputs[0].name
    outputs, _ = server.evaluate({"x": client.encrypt(x[0])})
    encrypted = client.decrypt(outputs[key], key)
    plain = run_plan(plan, x, backend="plain").server_outputs[key][0]
    assert server.program.engine.bootstraps == plan.ckks.bootstrapping.count
    assert np.max(np.abs(encrypted - plain)) < 1e-2 * max(1.0, np.max(np.abs(plain)))
    assert np.argmax(encrypted) == np.argmax(plain)


def test_composite_options_are_checked():
    with pytest.raises(OptionError, match="activation form"):
        picompile.compile(deep_residual_model(blocks=1), calib=_calibration(),
                          activation_form="sigmoid")
    with pytest.raises(OptionError, match="accuracy-budget"):
        picompile.compile(deep_residual_model(blocks=1), calib=_calibration(), degree=3,
                          activation_form="composite")
    with pytest.raises(OptionError, match="range-margin"):
        picompile.compile(deep_residual_model(blocks=1), calib=_calibration(), range_margin=-1)


def test_report_states_the_composite_forms_and_margin(composite_plan):
    from picompile.report import render_text

    report = render_text(composite_plan)
    assert "composite ReLUs" in report and "range margin" in report
    assert "7∘7" in report


@pytest.mark.slow
def test_composite_plan_at_128_bit_matches_the_slot_level_model():
    """The same 4-ReLU residual network with inputs in ±8 (bounds B up to ~17) at 128-bit
    (N=2^16, bootstrapped): ~2.5 min, measured 0.024 from the slot-level model."""
    x = np.random.default_rng(2).uniform(-8, 8, (400, 16)).astype(np.float32)
    plan = picompile.compile(deep_residual_model(blocks=2), calib=x, accuracy_budget=1.0,
                             max_degree=3)
    assert plan.ckks.ring_dimension == 1 << 16 and plan.ckks.bootstrapping is not None
    key = plan.outputs[0].name
    encrypted = run_plan(plan, x[:1], backend="ckks").server_outputs[key]
    plain = run_plan(plan, x[:1], backend="plain").server_outputs[key]
    assert np.max(np.abs(encrypted - plain)) < 1e-2 * max(1.0, float(np.max(np.abs(plain))))


def test_a_refresh_gain_is_absorbed_only_by_polynomials(composite_plan):
    """``substituted`` gives p(x / g) exactly (uniform and per-slot coefficients), and a plan
    whose up-scaled value reaches a step that cannot absorb the gain is refused."""
    import dataclasses

    from picompile.errors import PlanError
    from picompile.runtime.slot_program import NumpySlots, SlotProgram, substituted

    coefficients = np.array([0.5, -1.0, 0.25, 2.0])
    x = np.linspace(-8, 8, 17)
    np.testing.assert_allclose(np.polynomial.polynomial.polyval(x, substituted(coefficients, 8)),
                               np.polynomial.polynomial.polyval(x / 8, coefficients))
    per_slot = np.stack([coefficients] * 3, axis=1)
    np.testing.assert_allclose(substituted(per_slot, 4.0)[:, 1], substituted(coefficients, 4.0))

    plan = composite_plan
    upscaled = next(s for s in plan.steps if s.fhe.bootstrap_after is not None
                    and s.fhe.bootstrap_after.scale < 1)
    consumer = next(s for s in plan.steps if upscaled.outputs[0] in s.inputs)
    assert consumer.op == "Polynomial"
    program = SlotProgram(plan, NumpySlots(plan.ckks.slots))
    with pytest.raises(PlanError, match="only polynomial steps absorb"):
        program.execute_step(dataclasses.replace(consumer, op="Add"), [np.zeros(1)] * 2,
                             gain=8.0)


def test_precision_pass_simulates_the_bootstraps_error(composite_plan):
    """The plan records top-1 under its refreshes' measured error; a refresh error as large as
    the 60-bit first modulus gave at N=2^16 (0.12) breaks the composite stages, the measured
    one does not, and the report says which."""
    from picompile.passes import precision
    from picompile.report import render_text

    plan = composite_plan
    found = plan.analysis["precision"]
    assert found["holds"] and found["agreement"] >= found["required_agreement"]
    assert found["images"] == len(_calibration()) and found["sigma"] > 0
    assert "bootstrap precision" in render_text(plan)
    from picompile.pipeline import CompileOptions, PassManager, default_passes, front

    options = CompileOptions(calib=_calibration(), accuracy_budget=1.0, max_degree=3,
                             insecure_test_params=True)
    frontend, context, _ = front(deep_residual_model(blocks=2).SerializeToString(), options)
    passes = default_passes(options)
    PassManager(passes[:passes.index(precision)]).run(frontend.graph, context)
    graph = frontend.graph
    inputs = context.calibration.inputs
    clean = precision.noisy_agreement(graph, inputs, {})
    assert clean["agreement"] == 100.0 and clean["max_logit_change"] < 1e-5
    assert clean["imaginary_std"] == 0.0
    sigma = 0.12 / precision.MAX_ERROR_SIGMAS
    broken = precision.noisy_agreement(graph, inputs, precision.refresh_sigmas(graph, sigma))
    assert broken["mean_logit_change"] > 5 * found["mean_logit_change"]
    assert broken["imaginary_std"] > 5 * found["imaginary_std"] > 0
