"""HTML plan report: one self-contained page for deciding whether to pay for an encrypted run.

Reads: :class:`~picompile.report.records.ReportFacts` of a plan (see :mod:`.facts` for the plan
fields behind them), a run profile's :class:`~picompile.report.records.Profile`, and the figures
of :mod:`.figures`.
Writes: one HTML file (``write_html``, atomically: a temporary file in the same directory,
then renamed) or string (``render_html``): inline CSS, plots embedded as base64 PNG data URIs,
no scripts and no external resources.
Sections: at-a-glance verdict, summary and CKKS security with a key-size estimate, predicted
latency and accuracy, compile phases, a table per step, and plots (per-step cost, level
timeline, activation input histograms with the exact function and its polynomial,
accuracy-versus-budget). A plot the plan has no data for is replaced by a note saying why.
"""

from __future__ import annotations

import base64
import html
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from matplotlib.figure import Figure

from picompile.atomic_files import atomic_write
from picompile.plan import Plan
from picompile.report.facts import profile_facts, read_facts
from picompile.report.figures import FIGURES, png_bytes
from picompile.report.formatting import (
    MISSING,
    PROTOCOL_CHOICE_COLUMNS,
    ckks_details,
    composite_summary,
    fmt,
    fmt_accuracy,
    fmt_bytes,
    fmt_seconds,
    protocol_choice_caption,
    protocol_choice_rows,
    shapes,
    step_parameters,
    training_details,
)
from picompile.report.records import HybridStep, Profile, ReportFacts, StepFacts

CSS = """
body { font-family: -apple-system, 'Segoe UI', Helvetica, Arial, sans-serif; margin: 2em auto;
       max-width: 1500px; padding: 0 1.5em; color: #1d2430; line-height: 1.45; }
h1 { font-size: 1.7em; margin-bottom: 0.1em; }
h2 { font-size: 1.3em; border-bottom: 2px solid #d8dee8; padding-bottom: 0.2em; margin-top: 2em; }
.subtitle { color: #5a6475; margin-top: 0; }
.cards { display: flex; flex-wrap: wrap; gap: 1em; margin: 1.2em 0; }
.card { flex: 1 1 200px; border: 1px solid #d8dee8; border-radius: 8px; padding: 0.8em 1em;
        background: #f7f9fc; }
.card .label { font-size: 0.8em; text-transform: uppercase; letter-spacing: 0.04em;
               color: #5a6475; }
.card .value { font-size: 1.35em; font-weight: 600; margin-top: 0.2em; }
.card .detail { font-size: 0.85em; color: #5a6475; }
.card.bad { border-color: #d9534f; background: #fdf1f0; }
.card.bad .value { color: #b52b27; }
.card.good .value { color: #1f7a3a; }
table { border-collapse: collapse; margin: 0.6em 0; font-size: 0.88em; }
th, td { border: 1px solid #d8dee8; padding: 0.3em 0.55em; vertical-align: top; text-align: left; }
th { background: #eef2f7; }
tr:nth-child(even) td { background: #fafbfd; }
table.kv th { width: 16em; }
td.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
td.name, td.src { overflow-wrap: anywhere; min-width: 11em; max-width: 18em; }
td.params { font-family: ui-monospace, Menlo, Consolas, monospace; font-size: 0.85em;
            overflow-wrap: anywhere; min-width: 16em; max-width: 24em; }
.steps { overflow-x: auto; }
figure { margin: 1em 0 2em 0; }
figure img { max-width: 100%; border: 1px solid #e3e7ee; }
figcaption { font-size: 0.88em; color: #5a6475; margin-top: 0.3em; }
.note { background: #fff8e5; border-left: 4px solid #e0b23b; padding: 0.5em 0.8em;
        font-size: 0.9em; }
.warn { background: #fdf1f0; border-left: 4px solid #d9534f; padding: 0.5em 0.8em; }
ul.diag { margin: 0; padding-left: 1.1em; }
footer { margin-top: 3em; font-size: 0.8em; color: #8a93a3; }
"""


def esc(value: Any) -> str:
    return html.escape(fmt(value))


# --------------------------------------------------------------------------------------------
# HTML building blocks
# --------------------------------------------------------------------------------------------


def _kv_table(rows: Iterable[tuple[str, str]]) -> str:
    """A two-column table; values are already-escaped HTML."""
    body = "".join(f"<tr><th>{html.escape(k)}</th><td>{v}</td></tr>" for k, v in rows)
    return f'<table class="kv">{body}</table>'


def _card(label: str, value: str, detail: str = "", kind: str = "") -> str:
    return (f'<div class="card {kind}"><div class="label">{html.escape(label)}</div>'
            f'<div class="value">{html.escape(value)}</div>'
            f'<div class="detail">{html.escape(detail)}</div></div>')


def _note(text: str) -> str:
    return f'<p class="note">{html.escape(text)}</p>'


def figure_html(fig: Figure, alt: str, caption: str) -> str:
    """Render ``fig`` to an embedded PNG ``<figure>``."""
    data = base64.b64encode(png_bytes(fig)).decode("ascii")
    return (f'<figure><img src="data:image/png;base64,{data}" alt="{html.escape(alt)}">'
            f"<figcaption>{html.escape(caption)}</figcaption></figure>")


# --------------------------------------------------------------------------------------------
# Sections
# --------------------------------------------------------------------------------------------


def _security_card(facts: ReportFacts) -> str:
    ckks, bfv = facts.ckks, facts.bfv
    if ckks is not None and not ckks.is_runnable:
        return _card("security", "not runnable under CKKS",
                     "" if ckks.reason is None else str(ckks.reason), "bad")
    if ckks is not None:
        secure = not ckks.insecure
        level = MISSING if ckks.security is None else str(ckks.security)
        headline = level.split("(")[0].split(":")[0].strip() or MISSING
        return _card("security", headline if secure else f"{headline} — not for real data",
                     level, "good" if secure else "bad")
    if bfv is not None:
        return _card("security", f"{bfv.security} · sigma {bfv.sigma}",
                     f"BFV N={bfv.ring_dimension}; masks hide within 2^-{bfv.sigma_hide}, "
                     f"lifts fail below 2^-{bfv.sigma_correct}", "good")
    return _card("security", MISSING, "no CKKS parameters in this plan")


def _accuracy_card(facts: ReportFacts) -> str:
    degrees, select = facts.degrees, facts.select
    if degrees is not None:
        drop = degrees.base_accuracy - degrees.achieved_accuracy
        missed = "" if degrees.budget_met else \
            "ACCURACY BUDGET MISSED (written with --allow-budget-miss): "
        return _card("predicted accuracy", f"{fmt_accuracy(degrees.achieved_accuracy)}%",
                     f"{missed}original {fmt_accuracy(degrees.base_accuracy)}%, "
                     f"drop {drop:.2f} of {degrees.accuracy_budget_points} points "
                     "allowed (calibration set)",
                     "good" if degrees.budget_met and drop <= float(
                         degrees.accuracy_budget_points) else "bad")
    if select is not None:
        return _card("predicted accuracy", f"{fmt_accuracy(select.accuracy_selected)}%",
                     f"original {fmt_accuracy(select.accuracy_exact)}% (calibration set)")
    return _card("predicted accuracy", MISSING, "not measured at compile time")


def glance_section(facts: ReportFacts) -> str:
    """Cards: security, predicted latency, predicted accuracy, key material, protocol."""
    activations = MISSING if facts.summary.activations is None else facts.summary.activations
    cards = [_card("protocol", facts.summary.protocol, f"activations: {activations}"),
             _security_card(facts)]
    seconds, source = facts.latency
    cards.append(_card("predicted latency", MISSING if seconds is None else fmt_seconds(seconds),
                       source))
    cards.append(_accuracy_card(facts))
    sizes = facts.key_sizes
    if sizes is not None:
        cards.append(_card("evaluation keys (est.)", fmt_bytes(sizes.total),
                           f"{sizes.rotation_keys} rotation keys + relinearization key"))
    return f'<div class="cards">{"".join(cards)}</div>'


def summary_section(facts: ReportFacts) -> str:
    summary = facts.summary
    head = "none" if summary.head is None else (
        f"{' → '.join(summary.head.ops)} (client, plaintext) → {', '.join(summary.head.outputs)}")
    rows = [
        ("model", esc(summary.model_name)),
        ("model sha256", f"<code>{esc(summary.sha256)}</code>"),
        ("opset", esc(summary.opset)),
        ("producer", esc(summary.producer or "unknown")),
        ("protocol", esc(summary.protocol)),
        ("activations", esc(summary.activations)),
        ("inputs", esc(", ".join(f"{t.name} {t.shape}" for t in summary.inputs))),
        ("encrypted outputs", esc(", ".join(f"{t.name} {t.shape}" for t in summary.outputs))),
        ("client head", esc(head)),
        ("steps", esc(f"{summary.step_count} ({summary.parameter_count:,} parameters)")),
    ]
    if facts.training is not None:
        rows += [(f"fine-tuned: {field}", esc(value))
                 for field, value in training_details(facts.training)]
    return "<h2>Summary</h2>" + _kv_table(rows)


def protocol_choice_section(facts: ReportFacts) -> str:
    """``--protocol auto``: the predicted costs of both plans and the choice."""
    choice = facts.protocol_choice
    if choice is None:
        return ""
    head = "".join(f"<th>{esc(column)}</th>" for column in PROTOCOL_CHOICE_COLUMNS)
    body = "".join("<tr>" + "".join(f"<td>{esc(cell)}</td>" for cell in row) + "</tr>"
                   for row in protocol_choice_rows(choice))
    return (f"<h2>Protocol choice (--protocol auto)</h2><p>{esc(protocol_choice_caption(choice))}"
            f"</p><table><tr>{head}</tr>{body}</table>")


def hybrid_section(facts: ReportFacts) -> str:
    """Hybrid plans: BFV parameters, the statistical parameter, and per step its protocol."""
    bfv = facts.bfv
    assert bfv is not None
    rows = [
        ("scheme", "BFV (linear layers) + 2-party additive shares over Z_2^64 (activations)"),
        ("security level", esc(f"{bfv.security} ({bfv.security_bits}-bit)")),
        ("ring dimension N / slots per row", esc(f"{bfv.ring_dimension:,} / {bfv.slots:,}")),
        ("plaintext primes", esc(" · ".join(str(t) for t in bfv.primes)
                                 + f" (log2 T = {bfv.modulus_bits})")),
        ("fractional bits f", esc(bfv.fractional_bits)),
        ("statistical parameter sigma", esc(bfv.sigma)),
        ("masks hide within", esc(f"2^-{bfv.sigma_hide} per element")),
        ("boundary lift fails with probability", esc(f"< 2^-{bfv.sigma_correct} per element")),
        ("Beaver truncation fails with probability",
         esc(f"< 2^-{bfv.truncation_failure_bits} per element")),
        ("circuit privacy", esc(bfv.circuit_privacy)),
        ("correlated randomness", esc(bfv.correlations)),
        ("rotation keys (per prime)", esc(facts.rotation_key_count)),
    ]
    predicted = bfv.predicted
    if predicted is not None:
        rows.append(("predicted communication per inference",
                     esc(f"online {fmt_bytes(predicted.online_bytes)} in "
                         f"{predicted.online_rounds} MPC rounds; offline "
                         f"{fmt_bytes(predicted.offline_bytes)}")))
    steps = ["<table><tr><th>step</th><th>op</th><th>protocol</th><th>sigma hide</th>"
             "<th>sigma correct</th><th>online bytes</th><th>offline bytes</th></tr>"]
    for step in facts.steps:
        info = step.hybrid or HybridStep()
        steps.append(
            f"<tr><td>{esc(step.name)}</td><td>{esc(step.op)}</td>"
            f"<td>{esc(info.protocol)}</td><td>{esc(fmt(info.sigma_hide))}</td>"
            f"<td>{esc(fmt(info.sigma_correct))}</td>"
            f"<td>{esc(fmt(info.online_bytes))}</td>"
            f"<td>{esc(fmt(info.offline_bytes))}</td></tr>")
    steps.append("</table>")
    return ("<h2>Security and protocol (hybrid)</h2>" + _kv_table(rows) + "".join(steps))


def security_section(facts: ReportFacts) -> str:
    if facts.bfv is not None:
        return hybrid_section(facts)
    ckks = facts.ckks
    if ckks is None:
        return ("<h2>Security and keys</h2>" + _note(
            "No CKKS parameters in this plan: the levels pass did not run (exact activations "
            "without --calib, or a hybrid plan), so there are no CKKS levels or keys to report."))
    ring = ckks.ring_dimension
    ring_text = MISSING if ring is None else f"{ring:,} (2^{ring.bit_length() - 1})"
    rows = [
        ("scheme", esc(ckks.scheme)),
        ("security level", esc(ckks.security)),
        ("ring dimension N", esc(ring_text)),
        ("slots", esc(None if ckks.slots is None else f"{ckks.slots:,}")),
        ("multiplicative depth", esc(ckks.multiplicative_depth)),
        ("scaling modulus bits", esc(ckks.scaling_mod_bits)),
        ("first modulus bits", esc(ckks.first_mod_bits)),
        ("log2 q (without special primes)", esc(ckks.log2_q_without_special_primes)),
        ("runnable", esc(ckks.runnable) + (f" — {esc(ckks.reason)}" if ckks.reason else "")),
        ("rotation keys", esc(facts.rotation_key_count)),
    ]
    if facts.layout.rotations_per_inference is not None:
        rows.append(("rotations per inference", esc(facts.layout.rotations_per_inference)))
    rows += [(field, esc(value))
             for field, value in ckks_details(ckks, facts.layout, facts.summary.protocol)]
    sizes = facts.key_sizes
    if sizes is not None:
        rows += [
            ("relinearization key (est.)", esc(fmt_bytes(sizes.per_key))),
            ("one rotation key (est.)", esc(fmt_bytes(sizes.per_key))),
            ("all rotation keys (est.)", esc(f"{fmt_bytes(sizes.rotation_total)} "
                                             f"({sizes.rotation_keys} keys)")),
        ]
    warning = ""
    if ckks.insecure or ckks.runnable is False:
        warning = (f'<p class="warn">{esc(ckks.security)}'
                   f'{" — not runnable: " + esc(ckks.reason) if ckks.runnable is False else ""}'
                   "</p>")
    estimate = ""
    if sizes is not None:
        estimate = _note(
            f"Key sizes are an estimate: 2 × N × towers × 8 bytes × digits per key, with towers "
            f"= depth + 1 = {sizes.towers} and digits = {sizes.digits} (OpenFHE's default "
            "hybrid key switching for this depth). Serialized keys carry some overhead.")
    return "<h2>Security and keys</h2>" + warning + _kv_table(rows) + estimate


def _cost_rows(facts: ReportFacts) -> list[tuple[str, str]]:
    cost = facts.cost
    if cost is None:
        return []
    rows = [("cost table", esc(f"{MISSING if cost.table is None else cost.table}, measured at "
                                f"ring dimension {fmt(cost.ring_dimension)}"))]
    memory = cost.memory
    if memory is not None:
        rows.append(("predicted server memory", esc(
            f"{fmt_bytes(memory.total)} (evaluation keys {fmt_bytes(memory.evaluation_keys)}, "
            f"encoded diagonals {fmt_bytes(memory.encoded_plaintexts)}, ciphertexts "
            f"{MISSING if memory.ciphertexts is None else fmt_bytes(memory.ciphertexts)})")))
    if cost.scale_out_text() is not None:
        rows.append(("predicted scale-out", esc(
            "serve --ray --workers W (linear steps' giant steps split): "
            + cost.scale_out_text())))
    rows.append(("predicted communication", esc(
        "one input ciphertext up, one output ciphertext down per inference (FHE-only)"
        if facts.summary.protocol == "fhe" else MISSING)))
    return rows


def _accuracy_rows(facts: ReportFacts) -> list[tuple[str, str]]:
    rows = []
    degrees, select, calibration = facts.degrees, facts.select, facts.calibration
    if degrees is not None:
        seconds = degrees.estimated_activation_seconds
        rows += [
            ("accuracy budget", esc(f"{degrees.accuracy_budget_points} points")),
            ("original model accuracy", esc(fmt_accuracy(degrees.base_accuracy))),
            ("predicted accuracy (this plan)", esc(fmt_accuracy(degrees.achieved_accuracy))),
            ("accuracy labels", esc(degrees.labels)),
            ("activation cost used by the degree search",
             esc(None if seconds is None else fmt_seconds(seconds))),
            ("closed-loop evaluations", esc(len(degrees.iterations))),
        ]
        if degrees.composite_layers:
            rows.append(("composite ReLUs", esc(composite_summary(degrees))))
    rows += [("schedule choice", esc(line)) for line in facts.schedule_choice]
    if facts.bootstrap_precision is not None:
        rows.append(("bootstrap precision", esc(facts.bootstrap_precision)))
    if select is not None:
        rows += [
            ("ReLU budget", esc(f"{select.relu_budget} of "
                                f"{'?' if select.relus_total is None else select.relus_total}")),
            ("ReLUs kept exact", esc(select.relus_kept)),
            ("accuracy: all polynomial", esc(fmt_accuracy(select.accuracy_all_polynomial))),
            ("accuracy: selected (this plan)", esc(fmt_accuracy(select.accuracy_selected))),
            ("accuracy: exact", esc(fmt_accuracy(select.accuracy_exact))),
        ]
    if calibration is not None:
        rows.append(("calibration set", esc(
            f"{calibration.samples} samples, labels: {'yes' if calibration.labels else 'no'}")))
    return rows


def prediction_section(facts: ReportFacts) -> str:
    seconds, source = facts.latency
    rows = [("predicted latency", esc(MISSING if seconds is None else fmt_seconds(seconds))
             + f" <small>({esc(source)})</small>")]
    rows += _cost_rows(facts) + _accuracy_rows(facts)
    note = ""
    if facts.degrees is None and facts.select is None:
        note = _note("Accuracy was not predicted at compile time (no --accuracy-budget search "
                     "or ReLU selection ran); accuracies are in percent on the calibration set "
                     "when present.")
    return "<h2>Predicted cost and accuracy</h2>" + _kv_table(rows) + note


def passes_section(facts: ReportFacts) -> str:
    if not facts.passes:
        return "<h2>Compile phases</h2>" + _note("The plan records no compile phases.")
    rows = []
    for record in facts.passes:
        items = "".join(f"<li>{html.escape(d)}</li>" for d in record.diagnostics)
        rows.append(f"<tr><td>{esc(record.name)}</td>"
                    f"<td class=\"num\">{record.seconds:.3f}</td>"
                    f'<td><ul class="diag">{items}</ul></td></tr>')
    total = sum(r.seconds for r in facts.passes)
    rows.append(f'<tr><th>total</th><th class="num">{total:.3f}</th><th></th></tr>')
    return ("<h2>Compile phases</h2><table><tr><th>phase</th><th>seconds</th>"
            f"<th>diagnostics</th></tr>{''.join(rows)}</table>")


STEP_COLUMNS = ("#", "step", "op", "input shapes", "output shape", "ONNX nodes", "diagonals",
                "rotations", "baby step", "level in", "level out", "degree", "method",
                "max error", "weighted MSE", "est. seconds", "parameters")


def step_row(step: StepFacts) -> list[tuple[str, str]]:
    """(css class, escaped cell) per column of the step table."""
    approximation = step.approximation
    polynomial_step = step.op == "Polynomial"
    op = step.op if not polynomial_step else f"Polynomial ({step.function})"
    method = None
    if polynomial_step:
        method = str(step.attrs.get("method")) + (
            ", square folded into producer" if step.folded_square else "")
    return [
        ("num", esc(step.index)), ("name", esc(step.name)), ("", esc(op)),
        ("", esc(shapes(step.input_shapes))), ("", esc(shapes(step.output_shapes))),
        ("src", esc(", ".join(step.source))),
        ("num", esc(step.diagonal_count)), ("num", esc(step.rotations)),
        ("num", esc(step.baby_step)),
        ("num", esc(step.level_in)), ("num", esc(step.level_out)),
        ("num", esc(step.attrs.get("degree") if polynomial_step else None)),
        ("", esc(method)),
        ("num", esc(approximation.max_error)),
        ("num", esc(approximation.weighted_mse)),
        ("num", esc(step.seconds)),
        ("params", esc(step_parameters(step))),
    ]


def steps_section(facts: ReportFacts) -> str:
    header = "".join(f"<th>{html.escape(c)}</th>" for c in STEP_COLUMNS)
    rows = []
    for step in facts.steps:
        cells = "".join(f'<td class="{cls}">{text}</td>' if cls else f"<td>{text}</td>"
                        for cls, text in step_row(step))
        rows.append(f"<tr>{cells}</tr>")
    return (f"<h2>Steps ({len(facts.steps)})</h2><div class=\"steps\"><table><tr>{header}</tr>"
            f"{''.join(rows)}</table></div>")


def plots_section(facts: ReportFacts) -> str:
    parts = ["<h2>Plots</h2>"]
    for alt, build in FIGURES:
        fig, caption = build(facts)
        parts.append(_note(caption) if fig is None else figure_html(fig, alt, caption))
    return "".join(parts)


def profile_section(profile: Profile | None) -> str:
    """Predicted vs measured seconds per step, when a run profile is given."""
    if profile is None:
        return ""
    body = "".join(
        f"<tr><td>{esc(r.step)}</td><td>{esc(r.op)}</td><td>{fmt(r.predicted)}</td>"
        f"<td>{fmt(r.measured)}</td><td>"
        f"{fmt(r.measured / r.predicted) if r.predicted else MISSING}</td></tr>"
        for r in profile.rows)
    predicted, measured = profile.predicted_total, profile.measured_total
    return (f"<h2>Predicted vs measured ({esc(profile.backend)})</h2><table><thead><tr>"
            "<th>step</th><th>op</th><th>predicted s</th><th>measured s</th>"
            f"<th>measured / predicted</th></tr></thead><tbody>{body}<tr><td>total</td><td></td>"
            f"<td>{fmt(predicted)}</td><td>{fmt(measured)}</td><td>"
            f"{fmt(measured / predicted) if predicted else MISSING}</td></tr></tbody></table>")


# --------------------------------------------------------------------------------------------
# Entry points
# --------------------------------------------------------------------------------------------


def render_html(plan: Plan, profile: dict[str, Any] | None = None) -> str:
    """The whole report as one self-contained HTML document."""
    facts = read_facts(plan)
    name = facts.summary.model_name
    title = f"picompile plan report — {'model' if name is None else name}"
    body = "".join((
        f"<h1>{html.escape(title)}</h1>",
        f'<p class="subtitle">{esc(facts.summary.protocol)} plan, {len(facts.steps)} steps, '
        f"schema v{esc(facts.summary.schema_version)}</p>",
        glance_section(facts),
        summary_section(facts),
        protocol_choice_section(facts),
        security_section(facts),
        prediction_section(facts),
        passes_section(facts),
        profile_section(None if profile is None else profile_facts(plan, profile)),
        plots_section(facts),
        steps_section(facts),
        "<footer>Generated by picompile from the plan file alone; estimates are the "
        "compiler's predictions, not measurements of an encrypted run.</footer>",
    ))
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            f"<title>{html.escape(title)}</title><style>{CSS}</style></head>"
            f"<body>{body}</body></html>\n")


def write_html(plan: Plan, path: str | Path, profile: dict[str, Any] | None = None) -> Path:
    """Write :func:`render_html` of ``plan`` to ``path`` (UTF-8) and return the path.

    The page goes to a temporary file in the same directory first and replaces ``path`` in
    one rename, so a reader never sees a half-written report."""
    document = render_html(plan, profile)
    return atomic_write(path, lambda file: file.write(document.encode("utf-8")))
