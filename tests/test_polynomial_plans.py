"""Polynomial activations: calibration, approximation pass, OLA degree DP, AutoReP selection."""

from __future__ import annotations

import itertools
import time

import numpy as np
import pytest

import picompile
from conftest import EXAMPLES, model_input
from picompile.errors import CalibrationError, OptionError
from picompile.passes.degrees import Candidate, accuracy_drop_upper_bound, assign_degrees
from picompile.passes.select import relu_budget_count
from picompile.plan import Plan


def calibration(digits_split, kind: str, labels: bool = True) -> dict:
    data = {"input": model_input(digits_split["calib_images"], kind)}
    if labels:
        data["labels"] = digits_split["calib_labels"]
    return data


def test_calibration_errors(tmp_path, digits_split):
    model = EXAMPLES / "cnn_digits.onnx"
    with pytest.raises(CalibrationError, match="does not exist"):
        picompile.compile(model, calib=tmp_path / "missing.npz", degree=3)
    with pytest.raises(CalibrationError, match=r"expected \(samples, 1, 8, 8\)"):
        picompile.compile(model, calib=np.zeros((4, 1, 9, 9)), degree=3)
    with pytest.raises(CalibrationError, match="need calibration data"):
        picompile.compile(model, degree=3)
    with pytest.raises(CalibrationError, match="labels"):
        picompile.compile(model, calib={"input": np.zeros((4, 1, 8, 8)), "labels": np.zeros(3)},
                          degree=3)
    bad = tmp_path / "bad.npy"
    bad.write_bytes(b"not numpy")
    with pytest.raises(CalibrationError, match="cannot read"):
        picompile.compile(model, calib=bad, degree=3)
    with pytest.raises(OptionError):
        picompile.compile(model, calib=np.zeros((4, 1, 8, 8)), degree=3, accuracy_budget=1)


def test_calibration_statistics_match_onnxruntime(digits_split):
    plan = picompile.compile(EXAMPLES / "cnn_digits.onnx",
                             calib=calibration(digits_split, "img8"), degree=3)
    first = next(s for s in plan.steps if s.op == "Polynomial")
    stats = first.meta["calibration"]
    assert stats["samples"] == 256 * 8 * 8 * 8
    assert len(stats["channel_mean"]) == 8 and len(stats["histogram"]["counts"]) == 256
    assert stats["min"] <= stats["percentiles"]["1.0"] <= stats["percentiles"]["99.0"] <= (
        stats["max"])
    # the first ReLU's input is the folded conv output: check against the plain runtime
    exact = picompile.compile(EXAMPLES / "cnn_digits.onnx")
    from picompile.runtime.plain import execute_step

    x = model_input(digits_split["calib_images"], "img8").astype(np.float64)
    conv = execute_step(exact, exact.steps[0], [x])
    assert stats["mean"] == pytest.approx(conv.mean(), rel=1e-4)
    assert stats["max"] == pytest.approx(conv.max(), rel=1e-4)


def test_uniform_degree_plan_runs_polynomials(digits_split):
    plan = picompile.compile(EXAMPLES / "cnn_digits.onnx",
                             calib=calibration(digits_split, "img8"), degree=5)
    polys = [s for s in plan.steps if s.op == "Polynomial"]
    assert len(polys) == 2 and all(s.attrs["degree"] == 5 for s in polys)
    assert all(plan.param(s, "coefficients").shape == (1, 6) for s in polys)
    x = model_input(digits_split["test_images"], "img8")
    logits = picompile.run(plan, x)["logits"]
    accuracy = np.mean(np.argmax(logits, 1) == digits_split["test_labels"])
    assert accuracy > 0.95


@pytest.mark.parametrize("method", ["minimax", "chebyshev", "hermite"])
def test_other_methods_compile_and_stay_accurate(method, digits_split):
    plan = picompile.compile(EXAMPLES / "cnn_digits.onnx",
                             calib=calibration(digits_split, "img8"), degree=4, method=method)
    poly = next(s for s in plan.steps if s.op == "Polynomial")
    assert poly.attrs["method"] == method
    assert plan.param(poly, "coefficients").shape[0] == (8 if method == "hermite" else 1)
    x = model_input(digits_split["test_images"], "img8")
    logits = picompile.run(plan, x)["logits"]
    accuracy = np.mean(np.argmax(logits, 1) == digits_split["test_labels"])
    assert accuracy > 0.9


def test_assign_degrees_is_optimal_on_small_instances():
    rng = np.random.default_rng(0)
    for _ in range(20):
        layers = [[Candidate(d, float(e), float(c), None) for d, e, c in
                   zip((2, 3, 5, 7), sorted(rng.uniform(0, 1, 4), reverse=True),
                       sorted(rng.uniform(1, 10, 4)), strict=True)] for _ in range(4)]
        sens = rng.uniform(0.5, 2, 4).tolist()
        budget = float(rng.uniform(0.5, 3))
        chosen = assign_degrees(layers, sens, budget)
        feasible = [(sum(layers[i][k].cost for i, k in enumerate(ks)), ks)
                    for ks in itertools.product(range(4), repeat=4)
                    if sum(sens[i] * layers[i][k].error for i, k in enumerate(ks)) <= budget]
        if not feasible:
            assert chosen is None
            continue
        best = min(c for c, _ in feasible)
        cost = sum(layers[i][k].cost for i, k in enumerate(chosen))
        assert sum(sens[i] * layers[i][k].error for i, k in enumerate(chosen)) <= budget + 1e-9
        assert cost <= best * 1.05 + 1e-9  # discretization of the error budget costs < 5 %


def test_accuracy_drop_bound_is_conservative():
    labels = np.arange(100) % 10
    exact = np.eye(10)[labels]
    assert accuracy_drop_upper_bound(exact, exact, labels) < 3.0  # 0 lost of 100
    worse = exact.copy()
    worse[:5] = np.roll(worse[:5], 1, axis=1)
    assert accuracy_drop_upper_bound(exact, worse, labels) > 5.0


def test_accuracy_budget_plan_on_small_cnn(digits_split):
    plan = picompile.compile(EXAMPLES / "cnn_digits.onnx",
                             calib=calibration(digits_split, "img8"), accuracy_budget=1.0)
    analysis = plan.analysis["degrees"]
    assert analysis["base_accuracy"] - analysis["achieved_accuracy"] <= 1.0
    x = model_input(digits_split["test_images"], "img8")
    exact = picompile.compile(EXAMPLES / "cnn_digits.onnx")
    labels = digits_split["test_labels"]
    test_exact = np.mean(np.argmax(picompile.run(exact, x)["logits"], 1) == labels)
    test_plan = np.mean(np.argmax(picompile.run(plan, x)["logits"], 1) == labels)
    assert 100 * (test_exact - test_plan) <= 1.0


@pytest.mark.serial  # a wall-time bound: run alone (make test runs it after the parallel part)
def test_resnet20_layerwise_plan_within_one_point_and_fast(digits_split, tmp_path):
    start = time.perf_counter()
    plan = picompile.compile(EXAMPLES / "resnet20_digits.onnx",
                             calib=calibration(digits_split, "img32x3"), accuracy_budget=1.0)
    assert time.perf_counter() - start < 60  # compile with calibration on 256 images
    polys = [s for s in plan.steps
             if s.op == "Polynomial" and s.attrs.get("method") != "composite"]
    composites = [s for s in plan.steps if s.op == "Product"]  # composite sign-based ReLUs
    assert len(polys) + len(composites) == 19
    forms = {s.attrs["degree"] for s in polys} | {"composite"} if composites else set()
    assert len(forms | {s.attrs["degree"] for s in polys}) > 1  # layerwise, not uniform
    x = model_input(digits_split["test_images"], "img32x3")
    exact = picompile.compile(EXAMPLES / "resnet20_digits.onnx")
    labels = digits_split["test_labels"]
    test_exact = np.mean(np.argmax(picompile.run(exact, x)["logits"], 1) == labels)
    # tensor level: the slot-level program computes the same values (test_bootstrap checks it
    # on this network), 50x slower on 360 images
    test_plan = np.mean(np.argmax(picompile.run(plan, x, slot_level=False)["logits"], 1)
                        == labels)
    assert 100 * (test_exact - test_plan) <= 1.0
    loaded = Plan.load(plan.save(tmp_path / "resnet.piplan"))  # polynomial plans round-trip
    np.testing.assert_array_equal(picompile.run(loaded, x[:5])["logits"],
                                  picompile.run(plan, x[:5])["logits"])


@pytest.mark.parametrize("budget", [0, 0.1, 0.5, 100, 10_000])
def test_relu_budget_is_never_exceeded(budget, digits_split):
    plan = picompile.compile(EXAMPLES / "cnn_digits.onnx", protocol="hybrid",
                             calib=calibration(digits_split, "img8"), relu_budget=budget,
                             method="quad", degree=2)
    select = plan.analysis["select"]
    kept = [s for s in plan.steps if s.op == "Relu"]
    kept_relus = sum(int(np.prod(plan.values[s.inputs[0]].shape)) for s in kept)
    assert kept_relus == select["relus_kept"]
    assert kept_relus <= relu_budget_count(budget, select["relus_total"])
    assert plan.protocol == "hybrid"


def test_relu_budget_count():
    assert relu_budget_count(0.5, 100) == 50
    assert relu_budget_count(7, 100) == 7
    assert relu_budget_count(0, 100) == 0


def test_accuracy_budget_that_cannot_be_met_fails_or_is_flagged(digits_split, tmp_path):
    """A budget the degree search cannot meet (degree ≤ 2 activations of a ResNet-20… here the
    CNN with a tiny --max-degree and a 0.5-point budget on 512 images) is a one-line error; with
    --allow-budget-miss the plan is written and both reports flag it."""
    import warnings

    from picompile.cli import main
    from picompile.errors import AccuracyBudgetError
    from picompile.passes.degrees import images_needed
    from picompile.report import render_html, render_text

    calib = calibration(digits_split, "img8")
    calib = {"input": np.concatenate([calib["input"]] * 2),
             "labels": np.concatenate([calib["labels"]] * 2)}   # 512 images: 0.5 resolvable
    assert images_needed(0.5) <= 512 < images_needed(0.4)
    # single polynomials only: composite sign-based ReLUs would meet this budget
    options = {"calib": calib, "max_degree": 2, "method": "chebyshev", "accuracy_budget": 0.5,
               "activation_form": "polynomial"}
    with pytest.raises(AccuracyBudgetError, match="cannot be met.*--allow-budget-miss"):
        picompile.compile(EXAMPLES / "cnn_digits.onnx", **options)
    plan = picompile.compile(EXAMPLES / "cnn_digits.onnx", allow_budget_miss=True, **options)
    assert plan.analysis["degrees"]["budget_met"] is False
    assert "MISSED" in render_text(plan, width=200)
    assert "ACCURACY BUDGET MISSED" in render_html(plan)
    np.savez(tmp_path / "calib.npz", **calib)
    args = ["compile", str(EXAMPLES / "cnn_digits.onnx"), "--calib", str(tmp_path / "calib.npz"),
            "--max-degree", "2", "--method", "chebyshev", "--accuracy-budget", "0.5",
            "--activation-form", "polynomial", "-o",
            str(tmp_path / "p.piplan")]
    assert main(args) != 0 and not (tmp_path / "p.piplan").exists()
    assert main(args + ["--allow-budget-miss"]) == 0 and (tmp_path / "p.piplan").exists()
    # too few images to resolve the budget: a warning naming how many are needed
    small = {"input": calib["input"][:64], "labels": calib["labels"][:64]}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        picompile.compile(EXAMPLES / "cnn_digits.onnx", calib=small, accuracy_budget=1.0)
    assert any(f"pass at least {images_needed(1.0)} images" in str(w.message) for w in caught)
