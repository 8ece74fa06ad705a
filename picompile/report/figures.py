"""Report figures: the plots of the HTML report, drawn with matplotlib from report facts.

Reads: :class:`~picompile.report.records.ReportFacts` (per-step estimated seconds, CKKS levels and
depth, activation histograms with their exact function and polynomial series, the degree
search's closed-loop evaluations and noise curve).
Writes: :class:`matplotlib.figure.Figure` objects (built directly, not through pyplot, so no
backend is selected and no global figure registry is touched) and their PNG bytes (Agg canvas).
A plot the facts have no data for is ``None`` with a sentence saying why.
"""

from __future__ import annotations

import io
import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from picompile.report.records import ReportFacts, StepFacts

#: Most activation panels drawn in the activation figure (the rest are listed in a note).
MAX_ACTIVATION_PANELS = 48
ACTIVATION_COLUMNS = 4

#: A figure with its caption, or ``None`` with why it is left out.
Drawn = tuple[Figure | None, str]


def png_bytes(fig: Figure) -> bytes:
    """``fig`` rendered to PNG (100 dpi, tight bounding box)."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
    return buffer.getvalue()


def cost_figure(facts: ReportFacts) -> Drawn:
    costs = [(s, s.seconds) for s in facts.steps if s.seconds is not None]
    if not costs:
        return None, "Per-step cost: the plan carries no cost estimates."
    labels = [f"{s.index}: {s.name}" for s, _ in costs]
    values = [c for _, c in costs]
    colors = ["#d9822b" if s.is_activation else "#3b6fb6" for s, _ in costs]
    fig = Figure(figsize=(10, 0.45 * len(costs) + 1.4))
    ax = fig.subplots()
    y = np.arange(len(costs))
    ax.barh(y, values, color=colors)
    ax.set_yticks(y, labels, fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("estimated seconds")
    for yi, value in zip(y, values, strict=True):
        ax.text(value, yi, f" {value:.2f} s", va="center", fontsize=8)
    ax.set_xlim(0, max(values) * 1.18 if max(values) > 0 else 1)
    total = sum(values)
    ax.set_title(f"Estimated cost per step (total {total:.2f} s; orange: activations)")
    fig.tight_layout()
    return fig, (f"Estimated seconds per step, {len(costs)} of {len(facts.steps)} steps have an "
                 "estimate; steps without one are not drawn.")


def level_figure(facts: ReportFacts) -> Drawn:
    levels = [(s.index, s.levels) for s in facts.steps if s.levels is not None]
    if not levels:
        return None, "Level timeline: the plan carries no CKKS levels (no levels pass)."
    xs: list[float] = []
    ys: list[int] = []
    for i, (level_in, level_out) in levels:
        xs += [i - 0.5, i]
        ys += [level_in, level_out]
    xs.append(levels[-1][0] + 0.5)
    ys.append(levels[-1][1][1])
    depth = None if facts.ckks is None else facts.ckks.multiplicative_depth
    fig = Figure(figsize=(10, 3.8))
    ax = fig.subplots()
    ax.step(xs, ys, where="post", color="#3b6fb6", linewidth=2, label="level consumed")
    ax.plot([i for i, _ in levels], [lv[1] for _, lv in levels], "o", color="#3b6fb6",
            markersize=4)
    peak_index, (_, peak) = max(levels, key=lambda item: item[1][1])
    if depth is not None:
        ax.axhline(depth, color="#d9534f", linestyle="--", label=f"multiplicative depth {depth}")
    ax.annotate(f"max level {peak} at step {peak_index}", (peak_index, peak),
                textcoords="offset points", xytext=(-10, 8), ha="right", fontsize=9)
    ax.set_xticks([i for i, _ in levels])
    ax.set_xlabel("step index")
    ax.set_ylabel("level (multiplications consumed)")
    top = max(peak, depth if depth is not None else peak)
    ax.set_ylim(-0.5, top + 1.5)
    ax.grid(alpha=0.3)
    ax.legend(loc="upper left", fontsize=8)
    ax.set_title("Level timeline: level in → level out per step")
    fig.tight_layout()
    return fig, ("Levels each step consumes (steps at the same level cost no depth). "
                 "The dashed line is the chain's multiplicative depth.")


def _activation_panel(ax: Any, step: StepFacts) -> None:
    histogram = step.histogram
    assert histogram is not None
    edges, counts = histogram.edges, histogram.counts
    interval = step.fit_interval
    lo, hi = float(edges[0]), float(edges[-1])
    if interval is not None:
        lo, hi = min(lo, interval[0]), max(hi, interval[1])
    hist_ax = ax.twinx()
    hist_ax.bar(edges[:-1], counts, width=np.diff(edges), align="edge", color="#9aa5b5",
                alpha=0.45, linewidth=0)
    hist_ax.set_yticks([])
    ax.set_zorder(hist_ax.get_zorder() + 1)
    ax.patch.set_visible(False)
    x = np.linspace(lo, hi, 400)
    if step.exact is not None:
        ax.plot(x, step.exact(x), color="#1d2430", linewidth=1.4, label="exact")
    if interval is not None:
        inside = np.linspace(interval[0], interval[1], 400)
        curves = [] if step.series is None else step.series.values(inside)
        for row, curve in enumerate(curves):
            thin = len(curves) > 1
            ax.plot(inside, curve, color="#d9822b", linewidth=0.6 if thin else 1.6,
                    alpha=0.5 if thin else 1.0,
                    label=("polynomial" if not thin else "per-channel") if row == 0 else None)
    degree = step.attrs.get("degree")
    title = f"{step.index}: {step.name}"
    if len(title) > 38:
        title = "…" + title[-37:]
    ax.set_title(f"{title}\n{step.function}" + (f", degree {degree}" if degree is not None
                                                 else ""), fontsize=8)
    ax.tick_params(labelsize=7)
    ax.axvline(histogram.mean, color="#1f7a3a", linewidth=0.8, linestyle=":")
    ax.legend(fontsize=6, loc="upper left")


def activation_figure(facts: ReportFacts) -> Drawn:
    steps = [s for s in facts.steps if s.is_activation and s.histogram is not None]
    if not steps:
        return None, ("Activation fits: the plan has no calibration histograms (compiled "
                      "without --calib).")
    shown = steps[:MAX_ACTIVATION_PANELS]
    columns = min(ACTIVATION_COLUMNS, len(shown))
    rows = math.ceil(len(shown) / columns)
    fig = Figure(figsize=(3.6 * columns, 2.9 * rows))
    axes = fig.subplots(rows, columns, squeeze=False)
    for ax, step in zip(axes.ravel(), shown, strict=False):
        _activation_panel(ax, step)
    for ax in axes.ravel()[len(shown):]:
        ax.set_visible(False)
    fig.tight_layout()
    caption = ("Per activation: calibrated input histogram (grey, right axis, unscaled), the "
               "exact function (black), the polynomial on its fit interval (orange; thin lines: "
               "one per channel), the input mean (dotted green).")
    if len(steps) > len(shown):
        caption += f" Only the first {len(shown)} of {len(steps)} activations are drawn."
    return fig, caption


def _iterations_panel(ax: Any, facts: ReportFacts) -> None:
    degrees = facts.degrees
    assert degrees is not None
    iterations = degrees.iterations
    budget, base = degrees.accuracy_budget_points, degrees.base_accuracy
    costs = [it.cost for it in iterations]
    accuracies = [it.accuracy for it in iterations]
    ax.plot(costs, accuracies, color="#9aa5b5", linewidth=0.8, zorder=1)
    ax.scatter(costs, accuracies, c=["#1f7a3a" if it.holds else "#d9534f" for it in iterations],
               zorder=2, s=36)
    for it in iterations:
        ax.annotate(str(it.degrees), (it.cost, it.accuracy), textcoords="offset points",
                    xytext=(4, 4), fontsize=7)
    ax.axhline(base, color="#1d2430", linestyle=":", label="original model")
    references = [*accuracies, base]
    if budget is not None:
        ax.axhline(base - float(budget), color="#d9534f", linestyle="--",
                   label=f"budget ({budget} points)")
        references.append(base - float(budget))
    low, high = min(references), max(references)
    pad = max((high - low) * 0.2, 0.5)
    ax.set_ylim(low - pad, high + pad)
    ax.set_xlabel("estimated activation cost (s)")
    ax.set_ylabel("calibration accuracy (%)")
    ax.set_title("Closed-loop evaluations (green: within budget)", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)


def _noise_panel(ax: Any, facts: ReportFacts) -> None:
    degrees = facts.degrees
    assert degrees is not None and degrees.noise_curve is not None
    budget = degrees.accuracy_budget_points
    ax.semilogx(degrees.noise_curve.variances, degrees.noise_curve.accuracy_drops,
                color="#3b6fb6", marker=".", label="measured drop")
    if budget is not None:
        ax.axhline(float(budget), color="#d9534f", linestyle="--",
                   label=f"budget ({budget} points)")
    for it in degrees.iterations:
        if it.noise_budget:
            ax.axvline(float(it.noise_budget), color="#9aa5b5", linewidth=0.8)
    ax.set_xlabel("logit noise variance")
    ax.set_ylabel("accuracy drop (points)")
    ax.set_title("Accuracy drop under injected noise (grey: noise budgets tried)", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)


def accuracy_figure(facts: ReportFacts) -> Drawn:
    degrees = facts.degrees
    iterations = () if degrees is None else degrees.iterations
    has_curve = degrees is not None and degrees.noise_curve is not None
    if not iterations and not has_curve:
        return None, ("Accuracy versus budget: the compile recorded no accuracy-budget search "
                      "(use --accuracy-budget with labelled calibration data).")
    panels = [draw for draw, present in ((_iterations_panel, bool(iterations)),
                                         (_noise_panel, has_curve)) if present]
    fig = Figure(figsize=(6 * len(panels), 4))
    axes = fig.subplots(1, len(panels), squeeze=False)
    for ax, draw in zip(axes[0], panels, strict=True):
        draw(ax, facts)
    fig.tight_layout()
    return fig, ("Left: each closed-loop evaluation of the degree search — cost against the "
                 "measured calibration accuracy (labels: degrees per activation). Right: the "
                 "accuracy model — drop in accuracy caused by Gaussian noise on the logits.")


#: (alt text, builder) of every plot, in report order.
FIGURES: Sequence[tuple[str, Callable[[ReportFacts], Drawn]]] = (
    ("per-step cost", cost_figure),
    ("level timeline", level_figure),
    ("activation fits", activation_figure),
    ("accuracy versus budget", accuracy_figure),
)
