"""Text plan report: a readable summary of what a plan will compute.

Reads: :class:`~picompile.report.records.ReportFacts` of a plan (and a run profile's
:class:`~picompile.report.records.Profile`).
Writes: text (rich tables) — a summary (model, protocol, head, passes with their time and
diagnostics), accuracy and cost decisions, activations, hybrid protocol per step, a table per
step (op, shapes, source ONNX nodes, parameters) and, with a profile, predicted vs measured.
"""

from __future__ import annotations

import io
from typing import Any

from rich.console import Console
from rich.table import Table

from picompile.plan import Plan
from picompile.report.facts import profile_facts, read_facts
from picompile.report.formatting import (
    PROTOCOL_CHOICE_COLUMNS,
    ckks_details,
    composite_summary,
    number,
    protocol_choice_caption,
    protocol_choice_rows,
    shapes,
    step_parameters,
    training_details,
)
from picompile.report.records import Approximation, Profile, ReportFacts


def summary_table(facts: ReportFacts) -> Table:
    summary = facts.summary
    table = Table(title="plan summary", show_header=False, box=None)
    table.add_column("field", style="bold")
    table.add_column("value")
    table.add_row("model", f"{summary.model_name} (opset {summary.opset}, "
                           f"{summary.producer or 'unknown producer'})")
    table.add_row("model sha256", str(summary.sha256))
    table.add_row("protocol", summary.protocol)
    table.add_row("activations", "" if summary.activations is None else str(summary.activations))
    table.add_row("inputs", ", ".join(f"{t.name} {t.shape}" for t in summary.inputs))
    table.add_row("encrypted output", ", ".join(f"{t.name} {t.shape}" for t in summary.outputs))
    head = "none" if summary.head is None else (
        f"{' → '.join(summary.head.ops)} (client, plaintext) → {', '.join(summary.head.outputs)}")
    table.add_row("client head", head)
    table.add_row("steps", f"{summary.step_count} ({summary.parameter_count:,} parameters)")
    return table


def training_table(facts: ReportFacts) -> Table | None:
    """The training summary of a plan compiled from a ``picompile finetune`` model."""
    training = facts.training
    if training is None:
        return None
    table = Table(title="fine-tuned model (picompile finetune)", show_header=False, box=None)
    table.add_column("field", style="bold")
    table.add_column("value")
    for field, value in training_details(training):
        table.add_row(field, value)
    return table


def protocol_choice_table(facts: ReportFacts) -> Table | None:
    """``--protocol auto``: both plans' predicted costs on the network and the choice."""
    choice = facts.protocol_choice
    if choice is None:
        return None
    table = Table(title="protocol choice (--protocol auto)",
                  caption=protocol_choice_caption(choice))
    for column in PROTOCOL_CHOICE_COLUMNS:
        table.add_column(column)
    for row in protocol_choice_rows(choice):
        table.add_row(*row)
    return table


def passes_table(facts: ReportFacts) -> Table:
    table = Table(title="compile phases")
    table.add_column("phase")
    table.add_column("seconds", justify="right")
    table.add_column("diagnostics")
    for record in facts.passes:
        table.add_row(str(record.name), f"{record.seconds:.3f}", "; ".join(record.diagnostics))
    return table


def steps_table(facts: ReportFacts) -> Table:
    table = Table(title="steps")
    for column in ("#", "step", "op", "input shapes", "output shape", "ONNX nodes", "parameters"):
        table.add_column(column, overflow="fold")
    for step in facts.steps:
        table.add_row(str(step.index), step.name, step.op, shapes(step.input_shapes),
                      shapes(step.output_shapes), ", ".join(step.source), step_parameters(step))
    return table


def _activation_row(record: Approximation, levels: tuple[int, int] | None) -> list[str]:
    """Method, degree, levels, range, max error, weighted MSE of one activation."""
    kept = record.kept_exact
    interval = record.interval
    return [
        "exact" if kept else str(record.method),
        "-" if kept else str(record.degree) + (
            " (folded into producer)" if record.folded_square else ""),
        "-" if kept or levels is None and record.levels is None else
        str(record.levels) if record.levels is not None
        else str(levels[1] - levels[0]),
        "-" if interval is None else f"[{interval[0]:.3g}, {interval[1]:.3g}]",
        "-" if kept else number(record.max_error),
        "-" if kept else number(record.weighted_mse),
    ]


def activations_table(facts: ReportFacts) -> Table | None:
    """Per activation: method, degree (and whether it is folded into its producer), CKKS
    levels it consumes, range, fit error, predicted effect, ReLU kept."""
    rows = [s for s in facts.steps if s.is_activation and (s.has_approximation or s.calibrated)]
    if not rows:
        return None
    table = Table(title="activations")
    for column in ("step", "function", "method", "degree", "levels", "range", "max error",
                   "weighted MSE", "sensitivity", "predicted drop (pts)", "est. seconds",
                   "exact ReLU kept"):
        table.add_column(column, overflow="fold")
    for step in rows:
        record = step.approximation
        table.add_row(step.name, step.function, *_activation_row(record, step.levels),
                      number(step.sensitivity), number(record.predicted_accuracy_drop),
                      number(record.estimated_seconds), "yes" if record.kept_exact else "no")
    return table


def _ckks_rows(facts: ReportFacts) -> list[tuple[str, str]]:
    ckks = facts.ckks
    if ckks is None:
        return []
    if ckks.is_runnable:
        rows = [("CKKS", f"ring dimension {ckks.ring_dimension}, {ckks.slots} slots, depth "
                 f"{ckks.multiplicative_depth}, {facts.rotation_key_count} rotation keys; "
                 f"security: {ckks.security}")]
    else:
        rows = [("CKKS", f"not runnable: {ckks.reason}")]
    return rows + ckks_details(ckks, facts.layout, facts.summary.protocol)


def _bfv_rows(facts: ReportFacts) -> list[tuple[str, str]]:
    bfv = facts.bfv
    if bfv is None:
        return []
    rows = [
        ("hybrid HE (BFV)", f"ring dimension {bfv.ring_dimension}, {bfv.slots} slots, plaintext "
         f"primes {' · '.join(str(t) for t in bfv.primes)} (log2 T = {bfv.modulus_bits}), "
         f"{facts.rotation_key_count} rotation keys; security: {bfv.security} "
         f"({bfv.security_bits}-bit)"),
        ("hybrid MPC", f"additive shares over Z_2^64, f = {bfv.fractional_bits} fractional "
         f"bits; statistical parameter sigma = {bfv.sigma}: masks hide within "
         f"2^-{bfv.sigma_hide}, boundary lifts fail with probability < 2^-{bfv.sigma_correct} "
         f"per element, Beaver truncation < 2^-{bfv.truncation_failure_bits}"),
        ("circuit privacy", str(bfv.circuit_privacy)),
        ("correlations", bfv.correlations),
    ]
    predicted = bfv.predicted
    if predicted is not None:
        rows.append(("predicted communication", f"online {predicted.online_bytes / 1024:.1f} "
                     f"KiB in {predicted.online_rounds} MPC rounds + one flight per linear "
                     f"step; offline {predicted.offline_bytes / 2**20:.1f} MiB per inference"))
    return rows


def _decision_rows(facts: ReportFacts) -> list[tuple[str, str]]:
    """Cost, degree search and ReLU selection rows."""
    rows = []
    cost, degrees, select = facts.cost, facts.degrees, facts.select
    if cost is not None:
        rows.append(("predicted latency", f"{cost.predicted_seconds:.2f} s per encrypted "
                     f"inference (server; table: {cost.table})"))
        memory = cost.memory
        if memory is not None:
            rows.append(("predicted server memory", f"{memory.total / 2**30:.2f} GiB (keys "
                         f"{memory.evaluation_keys / 2**30:.2f}, encoded diagonals "
                         f"{memory.encoded_plaintexts / 2**30:.2f})"))
        if cost.scale_out_text() is not None:
            rows.append(("predicted scale-out", "serve --ray --workers W (linear steps' giant "
                         "steps split): " + cost.scale_out_text()))
    if degrees is not None:
        rows += [
            ("accuracy budget", f"{degrees.accuracy_budget_points} points" + (
                "" if degrees.budget_met else " — MISSED (written with --allow-budget-miss)")),
            ("calibration accuracy", f"{degrees.achieved_accuracy:.2f} (exact model "
             f"{degrees.base_accuracy:.2f}; labels: {degrees.labels})"),
            ("estimated activation cost", f"{degrees.estimated_activation_seconds:.1f} s"),
            ("closed-loop evaluations", str(len(degrees.iterations))),
        ]
        if degrees.composite_layers:
            rows.append(("composite ReLUs", composite_summary(degrees)))
    rows += [("schedule choice", line) for line in facts.schedule_choice]
    if facts.bootstrap_precision is not None:
        rows.append(("bootstrap precision", facts.bootstrap_precision))
    if select is not None:
        rows += [
            ("ReLU budget", f"{select.relu_budget} of {select.relus_total} "
             f"(kept {select.relus_kept})"),
            ("accuracy: all-polynomial / selected / exact",
             f"{select.accuracy_all_polynomial:.2f} / {select.accuracy_selected:.2f} / "
             f"{select.accuracy_exact:.2f}"),
        ]
    return rows


def analysis_table(facts: ReportFacts) -> Table | None:
    rows = _ckks_rows(facts) + _bfv_rows(facts) + _decision_rows(facts)
    if not rows:
        return None
    table = Table(title="accuracy and cost decisions", show_header=False, box=None)
    table.add_column("field", style="bold")
    table.add_column("value")
    for field, value in rows:
        table.add_row(field, value)
    return table


def hybrid_table(facts: ReportFacts) -> Table | None:
    """Per step of a hybrid plan: protocol, statistical exponents, predicted traffic."""
    rows = [(s, s.hybrid) for s in facts.steps if s.hybrid is not None]
    if not rows:
        return None
    table = Table(title="hybrid protocol per step")
    for column in ("step", "op", "protocol", "sigma hide", "sigma correct", "weight bits",
                   "online bytes", "rounds", "offline bytes"):
        table.add_column(column)
    for step, info in rows:
        table.add_row(step.name, step.op, str(info.protocol), number(info.sigma_hide),
                      number(info.sigma_correct), number(info.weight_bits),
                      number(info.online_bytes), number(info.online_rounds),
                      number(info.offline_bytes))
    return table


def profile_table(profile: Profile) -> Table:
    """Predicted vs measured seconds per step of a recorded run."""
    table = Table(title=f"predicted vs measured ({profile.backend}, last of "
                        f"{profile.samples} samples)")
    for column in ("step", "op", "predicted s", "measured s", "measured/predicted"):
        table.add_column(column)
    for row in profile.rows:
        ratio = (f"{row.measured / row.predicted:.2f}" if row.predicted else "-")
        table.add_row(row.step, row.op, number(row.predicted), f"{row.measured:.4g}", ratio)
    predicted, measured = profile.predicted_total, profile.measured_total
    table.add_row("total", "", f"{predicted:.4g}", f"{measured:.4g}",
                  f"{measured / predicted:.2f}" if predicted else "-")
    return table


def render_text(plan: Plan, width: int = 160, profile: dict[str, Any] | None = None) -> str:
    """The whole text report (with predicted vs measured times when a profile is given)."""
    facts = read_facts(plan)
    buffer = io.StringIO()
    console = Console(file=buffer, width=width, force_terminal=False, color_system=None)
    tables = (summary_table(facts), training_table(facts), protocol_choice_table(facts),
              passes_table(facts),
              analysis_table(facts), activations_table(facts), hybrid_table(facts),
              steps_table(facts),
              None if profile is None else profile_table(profile_facts(plan, profile)))
    for table in tables:
        if table is not None:
            console.print(table)
    return buffer.getvalue()
