"""Plan report: a readable summary of what a plan will compute.

Reads: a :class:`~picompile.plan.Plan`.
Writes: text (rich tables) — a summary (model, protocol, head, passes with their time and
diagnostics) and a table per step: op, shapes, source ONNX nodes, parameters.
"""

from __future__ import annotations

import io
from typing import Any

import numpy as np
from rich.console import Console
from rich.table import Table

from picompile.plan import ACTIVATION_OPS, Plan, Step


def _format_attr(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, list):
        return "[" + ",".join(_format_attr(v) for v in value) + "]"
    return str(value)


def step_parameters(plan: Plan, step: Step) -> str:
    """Attributes and parameter array shapes of one step, as short text."""
    parts = [f"{k}={_format_attr(v)}" for k, v in step.attrs.items()]
    for role, key in step.params.items():
        array = plan.arrays[key]
        shape = "x".join(str(d) for d in array.shape) or "scalar"
        parts.append(f"{role}:{shape}")
    return " ".join(parts)


def parameter_count(plan: Plan) -> int:
    keys = {key for step in plan.steps for key in step.params.values()}
    return int(sum(np.size(plan.arrays[k]) for k in keys))


def summary_table(plan: Plan) -> Table:
    table = Table(title="plan summary", show_header=False, box=None)
    table.add_column("field", style="bold")
    table.add_column("value")
    table.add_row("model", f"{plan.model.get('name')} (opset {plan.model.get('opset')}, "
                           f"{plan.model.get('producer') or 'unknown producer'})")
    table.add_row("model sha256", str(plan.model.get("sha256")))
    table.add_row("protocol", plan.protocol)
    table.add_row("activations", str(plan.security.get("activations", "")))
    table.add_row("inputs", ", ".join(f"{t.name} {tuple(t.shape)}" for t in plan.inputs))
    table.add_row("encrypted output", ", ".join(f"{t.name} {tuple(t.shape)}"
                                                for t in plan.outputs))
    head = "none" if plan.head is None else (
        f"{' → '.join(plan.head.ops)} (client, plaintext) → {', '.join(plan.head.outputs)}")
    table.add_row("client head", head)
    table.add_row("steps", f"{len(plan.steps)} ({parameter_count(plan):,} parameters)")
    return table


def passes_table(plan: Plan) -> Table:
    table = Table(title="compile phases")
    table.add_column("phase")
    table.add_column("seconds", justify="right")
    table.add_column("diagnostics")
    for record in plan.passes:
        table.add_row(record["name"], f"{record['seconds']:.3f}",
                      "; ".join(record.get("diagnostics", [])))
    return table


def steps_table(plan: Plan) -> Table:
    table = Table(title="steps")
    for column in ("#", "step", "op", "input shapes", "output shape", "ONNX nodes", "parameters"):
        table.add_column(column, overflow="fold")
    for index, step in enumerate(plan.steps):
        in_shapes = " ".join(str(tuple(plan.values[v].shape)) for v in step.inputs)
        out_shape = " ".join(str(tuple(plan.values[v].shape)) for v in step.outputs)
        table.add_row(str(index), step.name, step.op, in_shapes, out_shape,
                      ", ".join(step.source), step_parameters(plan, step))
    return table


REPORTED_ACTIVATION_OPS = ACTIVATION_OPS | {"Polynomial"}


def _number(value: Any, digits: int = 3) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}g}"
    return str(value)


def activations_table(plan: Plan) -> Table | None:
    """Per activation: method, degree (and whether it is folded into its producer), CKKS
    levels it consumes, range, fit error, predicted effect, ReLU kept."""
    rows = [s for s in plan.steps if s.op in REPORTED_ACTIVATION_OPS and (
        "approximation" in s.meta or "calibration" in s.meta)]
    if not rows:
        return None
    table = Table(title="activations")
    for column in ("step", "function", "method", "degree", "levels", "range", "max error",
                   "weighted MSE", "sensitivity", "predicted drop (pts)", "est. seconds",
                   "exact ReLU kept"):
        table.add_column(column, overflow="fold")
    for step in rows:
        record = step.meta.get("approximation", {})
        kept = record.get("kept_exact", step.op != "Polynomial")
        interval = record.get("interval")
        table.add_row(
            step.name, str(step.attrs.get("function", step.op)).lower(),
            "exact" if kept else str(record.get("method")),
            "-" if kept else str(record.get("degree")) + (
                " (folded into producer)" if record.get("folded_square") else ""),
            str(step.meta["level_out"] - step.meta["level_in"])
            if "level_in" in step.meta and not kept else "-",
            "-" if interval is None else f"[{interval[0]:.3g}, {interval[1]:.3g}]",
            "-" if kept else _number(record.get("max_error")),
            "-" if kept else _number(record.get("weighted_mse")),
            _number(step.meta.get("sensitivity", record.get("sensitivity"))),
            _number(record.get("predicted_accuracy_drop")),
            _number(record.get("estimated_seconds")),
            "yes" if kept else "no",
        )
    return table


def ckks_details(plan: Plan) -> list[tuple[str, str]]:
    """Bootstrapping and packing lines of an FHE plan (shared by the text and HTML reports)."""
    ckks = plan.security.get("ckks") or {}
    rows = []
    boot = ckks.get("bootstrapping")
    if boot and ckks.get("runnable", True):
        rows.append(("bootstrapping", f"{boot['count']} per inference (greedy placement "
                     f"{boot.get('greedy_count')}), {boot['slots']} sparse slots, level budget "
                     f"{boot['level_budget']}, {boot['levels_after_bootstrap']} levels after each"))
    layout = plan.analysis.get("layout") or {}
    if layout.get("packing") and plan.protocol == "fhe":
        inputs = "; ".join(f"{name}: {text}" for name, text in layout["packing"].items())
        rows.append(("packing", f"{inputs}; strided convolutions keep their grid with channels "
                     f"multiplexed into the gaps; {layout.get('diagonals_per_inference', '?')} "
                     f"diagonals and {layout['rotations_per_inference']} rotations per inference"))
    return rows


def analysis_table(plan: Plan) -> Table | None:
    degrees = plan.analysis.get("degrees")
    select = plan.analysis.get("select")
    cost = plan.analysis.get("cost")
    ckks = plan.security.get("ckks")
    bfv = plan.security.get("bfv")
    if not degrees and not select and not cost and not ckks and not bfv:
        return None
    table = Table(title="accuracy and cost decisions", show_header=False, box=None)
    table.add_column("field", style="bold")
    table.add_column("value")
    if ckks:
        if ckks.get("runnable", True):
            table.add_row("CKKS", f"ring dimension {ckks['ring_dimension']}, "
                          f"{ckks['slots']} slots, depth {ckks['multiplicative_depth']}, "
                          f"{len(plan.security.get('rotation_keys', []))} rotation keys; "
                          f"security: {ckks['security']}")
        else:
            table.add_row("CKKS", f"not runnable: {ckks.get('reason')}")
        for field, value in ckks_details(plan):
            table.add_row(field, value)
    if bfv:
        predicted = bfv["predicted"]
        table.add_row("hybrid HE (BFV)", f"ring dimension {bfv['ring_dimension']}, "
                      f"{bfv['slots']} slots, plaintext primes "
                      f"{' · '.join(str(t) for t in bfv['primes'])} (log2 T = "
                      f"{bfv['modulus_bits']}), {len(plan.security.get('rotation_keys', []))} "
                      f"rotation keys; security: {bfv['security']} ({bfv['security_bits']}-bit)")
        table.add_row("hybrid MPC", f"additive shares over Z_2^64, f = {bfv['fractional_bits']} "
                      f"fractional bits; statistical parameter sigma = {bfv['sigma']}: masks hide "
                      f"within 2^-{bfv['sigma_hide']}, boundary lifts fail with probability "
                      f"< 2^-{bfv['sigma_correct']} per element, Beaver truncation < "
                      f"2^-{bfv['truncation_failure_bits']}")
        table.add_row("circuit privacy", bfv["circuit_privacy"])
        table.add_row("predicted communication", f"online {predicted['online_bytes'] / 1024:.1f} "
                      f"KiB in {predicted['online_rounds']} MPC rounds + one flight per linear "
                      f"step; offline {predicted['offline_bytes'] / 2**20:.1f} MiB per inference")
    if cost:
        memory = cost.get("predicted_server_memory_bytes", {})
        table.add_row("predicted latency", f"{cost['predicted_seconds']:.2f} s per encrypted "
                      f"inference (server; table: {cost.get('table')})")
        if memory:
            table.add_row("predicted server memory", f"{memory['total'] / 2**30:.2f} GiB "
                          f"(keys {memory['evaluation_keys'] / 2**30:.2f}, encoded diagonals "
                          f"{memory['encoded_plaintexts'] / 2**30:.2f})")
    if degrees:
        table.add_row("accuracy budget", f"{degrees['accuracy_budget_points']} points")
        table.add_row("calibration accuracy", f"{degrees['achieved_accuracy']:.2f} (exact model "
                      f"{degrees['base_accuracy']:.2f}; labels: {degrees['labels']})")
        table.add_row("estimated activation cost",
                      f"{degrees['estimated_activation_seconds']:.1f} s")
        table.add_row("closed-loop evaluations", str(len(degrees["iterations"])))
    if select:
        table.add_row("ReLU budget", f"{select['relu_budget']} of {select['relus_total']} "
                      f"(kept {select['relus_kept']})")
        table.add_row("accuracy: all-polynomial / selected / exact",
                      f"{select['accuracy_all_polynomial']:.2f} / "
                      f"{select['accuracy_selected']:.2f} / {select['accuracy_exact']:.2f}")
    return table


def hybrid_table(plan: Plan) -> Table | None:
    """Per step of a hybrid plan: protocol, statistical exponents, predicted traffic."""
    rows = [(s, s.meta["hybrid"]) for s in plan.steps if "hybrid" in s.meta]
    if not rows:
        return None
    table = Table(title="hybrid protocol per step")
    for column in ("step", "op", "protocol", "sigma hide", "sigma correct", "weight bits",
                   "online bytes", "rounds", "offline bytes"):
        table.add_column(column)
    for step, info in rows:
        table.add_row(step.name, step.op, info["protocol"], _number(info.get("sigma_hide")),
                      _number(info.get("sigma_correct")), _number(info.get("weight_bits")),
                      _number(info.get("online_bytes")), _number(info.get("online_rounds")),
                      _number(info.get("offline_bytes")))
    return table


def profile_table(plan: Plan, profile: dict[str, Any]) -> Table:
    """Predicted vs measured seconds per step of a recorded run."""
    from picompile.profile import compare

    rows = compare(plan, profile)
    table = Table(title=f"predicted vs measured ({profile['backend']}, last of "
                        f"{profile['samples']} samples)")
    for column in ("step", "op", "predicted s", "measured s", "measured/predicted"):
        table.add_column(column)
    for row in rows:
        ratio = (f"{row.measured / row.predicted:.2f}" if row.predicted else "-")
        table.add_row(row.step, row.op, _number(row.predicted), f"{row.measured:.4g}", ratio)
    predicted = sum(r.predicted or 0.0 for r in rows)
    measured = sum(r.measured for r in rows)
    table.add_row("total", "", f"{predicted:.4g}", f"{measured:.4g}",
                  f"{measured / predicted:.2f}" if predicted else "-")
    return table


def render_text(plan: Plan, width: int = 160, profile: dict[str, Any] | None = None) -> str:
    """The whole text report (with predicted vs measured times when a profile is given)."""
    buffer = io.StringIO()
    console = Console(file=buffer, width=width, force_terminal=False, color_system=None)
    tables = (summary_table(plan), passes_table(plan), analysis_table(plan),
              activations_table(plan), hybrid_table(plan), steps_table(plan),
              None if profile is None else profile_table(plan, profile))
    for table in tables:
        if table is not None:
            console.print(table)
    return buffer.getvalue()
