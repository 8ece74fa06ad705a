"""level_schedule — the degree DP solved jointly with bootstrap placement (FHE plans).

Reads: per activation (in topological order) its candidate forms as *segments* (levels, seconds
at a freshly refreshed ciphertext's level: one polynomial, or a composite ReLU's sign stages
and product), the levels its linear steps consume since the previous activation (the *gap*),
the seconds of one refresh of its value (every ciphertext), and the error units of each
candidate (``degrees``' knapsack discretization).
Writes: nothing; returns the chosen candidate per layer (:func:`assign_scheduled`) and the
cost of a choice (:func:`schedule_cost`), which ``degrees`` uses instead of the level-share
knapsack when the plan will bootstrap.

Model (``LevelChain``): the plan is the chain gap₀, activation₀, gap₁, …, activationₙ₋₁,
final gap. A fresh input has ``initial`` usable levels, a refreshed value ``levels``
(``activation_level_limit``: the context's levels after a bootstrap less the one a bootstrap
input keeps). Each segment runs where it fits; when it does not, the value is refreshed just
before it (on a chain with equal refresh costs, refreshing as late as possible is optimal) and
the segment runs at the top. A segment's time scales with the RNS limbs left where it runs
(OLA's layerwise modulus chain: lower levels are cheaper). The DP's state is (error units
spent, levels left), so the objective is the schedule's real bootstrap count and op levels, not
a continuous share of a bootstrap per level. On a residual network the chain follows the
longest path; the ``levels`` pass then places the bootstraps on the real graph.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Segment:
    """A piece of an activation evaluated at one go: its levels and its seconds at the top
    level (a freshly refreshed ciphertext)."""

    depth: int
    seconds: float


@dataclass(frozen=True)
class LevelChain:
    """The plan as the joint DP sees it (see the module docstring)."""

    levels: int                   # usable levels after a refresh
    initial: int                  # usable levels of a fresh input
    gaps: tuple[int, ...]         # levels of the linear steps before each activation
    final_gap: int                # levels of the linear steps after the last activation
    refresh_seconds: tuple[float, ...]  # one refresh of each activation's value

    def run(self, level: int, segments: Sequence[Segment], refresh: float
            ) -> tuple[int, float, int] | None:
        """(levels left, seconds, refreshes) of ``segments`` from ``level``; None when one is
        deeper than a refresh provides."""
        seconds, refreshes = 0.0, 0
        for segment in segments:
            if segment.depth > self.levels:
                return None
            if level < segment.depth:
                seconds += refresh
                refreshes += 1
                level = self.levels
            seconds += segment.seconds * (level + 1) / (self.levels + 1)
            level -= segment.depth
        return level, seconds, refreshes

    def layer(self, index: int, segments: Sequence[Segment]) -> list[Segment]:
        """Activation ``index``'s segments behind its gap."""
        return [Segment(self.gaps[index], 0.0), *segments]


def schedule_cost(chain: LevelChain, chosen: Sequence[Sequence[Segment]]
                  ) -> tuple[float, int] | None:
    """(seconds, refreshes) of one choice of segments per activation; None if infeasible."""
    level, seconds, refreshes = chain.initial, 0.0, 0
    for index, segments in enumerate(chosen):
        result = chain.run(level, chain.layer(index, segments), chain.refresh_seconds[index])
        if result is None:
            return None
        level, spent, count = result
        seconds, refreshes = seconds + spent, refreshes + count
    tail = chain.run(level, [Segment(chain.final_gap, 0.0)], chain.refresh_seconds[-1])
    if tail is None:
        return None
    return seconds + tail[1], refreshes + tail[2]


def assign_scheduled(chain: LevelChain, segments: Sequence[Sequence[Sequence[Segment]]],
                     units: Sequence[Sequence[float]], error_units: int) -> list[int] | None:
    """Minimize the schedule's seconds with Σ units ≤ ``error_units``: ``segments[l][k]`` and
    ``units[l][k]`` are candidate k of activation l. Returns the candidate per layer, or None
    when nothing fits."""
    top = max(chain.initial, chain.levels)
    best = np.full((error_units + 1, top + 1), np.inf)
    best[:, chain.initial] = 0.0  # min seconds so far using ≤ j units, ending at level ℓ
    picks, origins = [], []
    for layer, options in enumerate(segments):
        new = np.full_like(best, np.inf)
        pick = np.full(best.shape, -1)
        origin = np.full(best.shape, -1)
        for index, candidate in enumerate(options):
            cost_units = units[layer][index]
            if not np.isfinite(cost_units) or cost_units > error_units:
                continue
            shift = int(math.ceil(cost_units))
            for level in range(top + 1):
                if not np.isfinite(best[:, level]).any():
                    continue
                result = chain.run(level, chain.layer(layer, candidate),
                                   chain.refresh_seconds[layer])
                if result is None:
                    continue
                after, seconds, _ = result
                total = np.full(error_units + 1, np.inf)
                total[shift:] = best[:error_units + 1 - shift, level] + seconds
                better = total < new[:, after]
                new[better, after] = total[better]
                pick[better, after] = index
                origin[better, after] = level
        picks.append(pick)
        origins.append(origin)
        best = new
    finals = np.full(top + 1, np.inf)
    for level in range(top + 1):
        tail = chain.run(level, [Segment(chain.final_gap, 0.0)], chain.refresh_seconds[-1])
        if tail is not None:
            finals[level] = best[error_units, level] + tail[1]
    if not np.isfinite(finals).any():
        return None
    level, j = int(np.argmin(finals)), error_units
    chosen = []
    for layer in range(len(segments) - 1, -1, -1):
        index = int(picks[layer][j, level])
        chosen.append(index)
        level = int(origins[layer][j, level])
        j -= int(math.ceil(units[layer][index]))
    return chosen[::-1]
