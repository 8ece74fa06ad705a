"""The cost model's scale-out prediction (linear steps' giant steps split over Ray workers) and
the session memory `serve --ray` requests; no Ray needed."""

from __future__ import annotations

import pytest

import picompile
from conftest import EXAMPLES, model_input
from picompile.cost import (
    DEFAULT_OPERATION_COSTS,
    ScaleOutAssumptions,
    StepCost,
    operation_costs_for,
    plan_server_memory_bytes,
    scale_out,
    split_step_seconds,
    step_seconds,
)
from picompile.report import render_text


def _layout(giants: int, baby: int) -> dict:
    offsets = list(range(giants * baby))
    return {"offsets": offsets, "baby_step": baby,
            "baby_rotations": list(range(baby)),
            "giant_rotations": [g * baby for g in range(giants)],
            "diagonal_count": len(offsets)}


def test_split_prediction_follows_the_partition_and_its_overheads():
    costs = operation_costs_for(DEFAULT_OPERATION_COSTS, 4096)
    layout = _layout(32, 32)  # 1,024 diagonals in 32 giant steps
    alone = step_seconds("Linear", {}, layout, 12, costs)
    assert split_step_seconds(layout, 12, costs, 1, 4096) == alone
    two, four = (split_step_seconds(layout, 12, costs, w, 4096) for w in (2, 4))
    assert alone > two > four
    # every worker hoists all baby rotations: the split cannot beat that floor
    floor = costs["hoisted_precompute"] + 31 * costs["hoisted_rotate"]
    assert split_step_seconds(layout, 12, costs, 64, 4096) > floor
    # a slow network makes the split pay for moving ciphertexts
    slow = ScaleOutAssumptions(bandwidth_bytes_per_second=1e6)
    assert split_step_seconds(layout, 12, costs, 4, 4096, assumptions=slow) > alone
    # one giant step: nothing to split
    single = _layout(1, 16)
    assert split_step_seconds(single, 12, costs, 8, 4096) == step_seconds(
        "Linear", {}, single, 12, costs)


def test_scale_out_is_amdahl_bound_by_what_stays_on_the_session():
    costs = operation_costs_for(DEFAULT_OPERATION_COSTS, 4096)
    layout = _layout(32, 32)
    linear = step_seconds("Linear", {}, layout, 12, costs)
    steps = [StepCost(layout, 12, linear), StepCost(None, 12, 0.5, refresh=2.0)]
    rows = scale_out(steps, costs, 4096, key_bytes=1 << 30, workers=(1, 4))
    assert rows[0]["predicted_seconds"] == linear + 2.5 and rows[0]["speedup"] == 1.0
    assert rows[0]["key_shipping_seconds"] == 0.0
    assert 1.0 < rows[1]["speedup"] < (linear + 2.5) / 2.5
    assert rows[1]["key_shipping_seconds"] == 3 * (1 << 30) / 1.25e9


def test_compiled_plan_records_and_reports_scale_out(digits_split):
    calib = {"input": model_input(digits_split["calib_images"], "img8")}
    plan = picompile.compile(EXAMPLES / "cnn_digits.onnx", calib=calib, degree=3,
                             insecure_test_params=True)
    rows = plan.analysis["cost"]["scale_out"]
    assert [row["workers"] for row in rows] == [1, 2, 4, 16, 64]
    assert rows[0]["predicted_seconds"] == pytest.approx(plan.analysis["cost"]["predicted_seconds"])
    assert "predicted scale-out" in render_text(plan, width=220)
    memory = plan.analysis["cost"]["predicted_server_memory_bytes"]["total"]
    assert plan_server_memory_bytes(plan) >= memory
