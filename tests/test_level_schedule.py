"""The joint degree/bootstrap DP (``passes/level_schedule.py``) against brute force on small
chains, its schedule model, and its use by the degree search of a bootstrapped plan."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from test_bootstrap import deep_residual_model

import picompile
from picompile.passes.level_schedule import (
    LevelChain,
    Segment,
    assign_scheduled,
    schedule_cost,
)


def random_chain(rng: np.random.Generator, layers: int) -> tuple[LevelChain, list, list]:
    levels = int(rng.integers(3, 7))
    chain = LevelChain(levels=levels, initial=int(rng.integers(levels, 2 * levels + 3)),
                       gaps=tuple(int(g) for g in rng.integers(0, 3, layers)),
                       final_gap=int(rng.integers(0, 3)),
                       refresh_seconds=tuple(float(r) for r in rng.uniform(5, 20, layers)))
    segments, units = [], []
    for _ in range(layers):
        options, costs = [], []
        for _ in range(int(rng.integers(2, 4))):
            pieces = int(rng.integers(1, 3))
            options.append(tuple(Segment(int(rng.integers(1, levels + 1)),
                                         float(rng.uniform(0.1, 3.0))) for _ in range(pieces)))
            costs.append(float(rng.uniform(0, 60)))
        segments.append(options)
        units.append(costs)
    return chain, segments, units


@pytest.mark.parametrize("seed", range(40))
def test_joint_dp_equals_brute_force_on_small_chains(seed):
    """Every assignment of up to 3 forms to 4–5 activations is enumerated: the DP's choice
    fits the error budget and costs exactly the cheapest feasible schedule."""
    rng = np.random.default_rng(seed)
    chain, segments, units = random_chain(rng, int(rng.integers(4, 6)))
    budget = int(rng.integers(40, 200))
    best = math.inf
    for choice in itertools.product(*(range(len(o)) for o in segments)):
        spent = sum(math.ceil(units[i][k]) for i, k in enumerate(choice))
        found = schedule_cost(chain, [segments[i][k] for i, k in enumerate(choice)])
        if spent <= budget and found is not None:
            best = min(best, found[0])
    chosen = assign_scheduled(chain, segments, units, budget)
    if not math.isfinite(best):
        assert chosen is None
        return
    assert chosen is not None
    assert sum(math.ceil(units[i][k]) for i, k in enumerate(chosen)) <= budget
    cost = schedule_cost(chain, [segments[i][k] for i, k in enumerate(chosen)])[0]
    assert cost == pytest.approx(best, rel=1e-12)


def test_schedule_refreshes_as_late_as_possible():
    """Gap 1 + activation, 3 levels after a refresh: degree 3 (2 levels) needs one refresh per
    layer, degree 7 (3 levels) two (its gap and itself never share a refresh) — where the
    level-share model charged degree 7 only 1.5× degree 3; with 6 levels, degree 3 layers
    share refreshes two by two."""
    chain = LevelChain(levels=3, initial=3, gaps=(1, 1, 1), final_gap=1,
                       refresh_seconds=(20.0, 20.0, 20.0))
    deg3, deg7 = (Segment(2, 1.0),), (Segment(3, 1.5),)
    assert schedule_cost(chain, [deg3] * 3)[1] == 3  # the last for the final gap
    assert schedule_cost(chain, [deg7] * 3)[1] == 6
    wide = LevelChain(levels=6, initial=6, gaps=(1, 1, 1, 1), final_gap=1,
                      refresh_seconds=(20.0,) * 4)
    assert schedule_cost(wide, [deg3] * 4)[1] == 2
    assert schedule_cost(wide, [deg7] * 4)[1] == 3
    # a segment deeper than a refresh provides is infeasible
    assert schedule_cost(chain, [(Segment(4, 1.0),)] * 3) is None
    # lower levels are cheaper: the same op after one level costs 3/4 of the top
    assert chain.run(3, [Segment(1, 0.0), Segment(1, 4.0)], 20.0) == (1, 3.0, 0)


def test_degree_search_of_a_bootstrapped_plan_uses_the_schedule():
    x = np.random.default_rng(2).uniform(-1, 1, (128, 16)).astype(np.float32)
    plan = picompile.compile(deep_residual_model(), calib=x, accuracy_budget=5.0,
                             insecure_test_params=True, allow_budget_miss=True)
    degrees = plan.analysis["degrees"]
    assert degrees["cost_model"] == "joint degree/bootstrap schedule"
    assert plan.ckks.bootstrapping is not None
    shallow = picompile.compile(deep_residual_model(blocks=2), calib=x, accuracy_budget=5.0,
                                insecure_test_params=True, allow_budget_miss=True)
    assert shallow.analysis["degrees"]["cost_model"] == "level share"
