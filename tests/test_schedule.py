"""Bootstrapped or leveled schedule of a deep degree-2 plan (``--schedule``)."""

from __future__ import annotations

import numpy as np
import pytest
from test_bootstrap import deep_residual_model

import picompile
from picompile.errors import OptionError
from picompile.report import render_text
from picompile.runtime import run_plan
from picompile.schedule import ScheduleRow, choose_schedule


def _compile(blocks: int, **options):
    x = np.random.default_rng(2).uniform(-1, 1, (64, 16)).astype(np.float32)
    return picompile.compile(deep_residual_model(blocks=blocks), calib=x, degree=2,
                             insecure_test_params=True, **options), x


def test_deep_degree_2_plan_compares_both_schedules_and_keeps_the_cheaper():
    plan, x = _compile(12)
    choice = plan.analysis["schedule_choice"]
    rows = {row["schedule"]: row for row in choice["rows"]}
    assert set(rows) == {"bootstrapped", "leveled"}
    assert rows["bootstrapped"]["bootstraps"] >= 1 and rows["leveled"]["bootstraps"] == 0
    assert rows["leveled"]["depth"] > 40  # deeper than the levels pass would run leveled
    cheaper = min(rows.values(), key=lambda r: r["predicted_seconds"])["schedule"]
    assert choice["chosen"] == cheaper
    assert (plan.ckks.bootstrapping is None) == (cheaper == "leveled")
    assert "schedule choice" in render_text(plan, width=200)
    # the chosen plan runs encrypted and equals its slot-level model
    key = plan.outputs[0].name
    encrypted = run_plan(plan, x[:1], backend="ckks").server_outputs[key]
    plain = run_plan(plan, x[:1], backend="plain").server_outputs[key]
    assert np.max(np.abs(encrypted - plain)) < 1e-2 * max(1.0, float(np.max(np.abs(plain))))


def test_forced_schedules_are_measurable_both_ways():
    leveled, _ = _compile(12, schedule="leveled")
    assert leveled.ckks.bootstrapping is None and "schedule_choice" not in leveled.analysis
    bootstrapped, _ = _compile(2, schedule="bootstrapped")  # shallow: leveled by default
    assert bootstrapped.ckks.bootstrapping is not None
    assert _compile(2)[0].ckks.bootstrapping is None
    with pytest.raises(OptionError, match="schedule"):
        _compile(2, schedule="sometimes")


def test_a_schedule_that_does_not_fit_memory_is_not_chosen():
    rows = [ScheduleRow("bootstrapped", True, 65536, 61, 8, 200.0, 8 << 30),
            ScheduleRow("leveled", True, 262144, 61, 0, 100.0, 40 << 30)]
    choice = choose_schedule(rows, limit_bytes=16 << 30)
    assert choice.chosen == "bootstrapped" and "exceeds" in choice.rows[1].reason
    assert choose_schedule(rows, limit_bytes=64 << 30).chosen == "leveled"
