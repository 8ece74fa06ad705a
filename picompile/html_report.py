"""HTML plan report: one self-contained page for deciding whether to pay for an encrypted run.

Reads: a :class:`~picompile.plan.Plan` — ``model``, ``protocol``, ``security`` (``ckks``
parameters, ``rotation_keys``), ``analysis`` (``degrees``: accuracy budget, base and achieved
accuracy, closed-loop ``iterations``, ``noise_curve``; ``select``: hybrid ReLU choice),
``passes`` (name, seconds, diagnostics), the steps' ``meta`` (``layout``, ``level_in``,
``level_out``, ``calibration`` histograms, ``approximation`` records, ``estimated_seconds``) and
the polynomial coefficient / interval arrays.
Writes: one HTML file (``write_html``) or string (``render_html``): inline CSS, plots embedded
as base64 PNG data URIs (matplotlib, Agg backend), no scripts and no external resources.
Sections: at-a-glance verdict, summary and CKKS security with a key-size estimate, predicted
latency and accuracy, compile phases, a table per step, and plots (per-step cost, level
timeline, activation input histograms with the exact function and its polynomial,
accuracy-versus-budget). A plot the plan has no data for is replaced by a note saying why.
"""

from __future__ import annotations

import base64
import html
import io
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402  (after selecting the Agg backend)
import numpy as np  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from numpy.polynomial import chebyshev, hermite_e, polynomial  # noqa: E402

from picompile.cost import evaluation_key_bytes, key_switching_digits  # noqa: E402
from picompile.plan import Plan, Step  # noqa: E402
from picompile.report import (  # noqa: E402
    REPORTED_ACTIVATION_OPS as ACTIVATION_OPS,
)
from picompile.report import ckks_details, parameter_count, step_parameters  # noqa: E402

MISSING = "–"
#: Most activation panels drawn in the activation figure (the rest are listed in a note).
MAX_ACTIVATION_PANELS = 48
ACTIVATION_COLUMNS = 4
MIB = 1024 * 1024

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


# --------------------------------------------------------------------------------------------
# Values read from the plan
# --------------------------------------------------------------------------------------------


def fmt(value: Any, digits: int = 3) -> str:
    """A value as short text; ``None`` (missing) is an en dash."""
    if value is None:
        return MISSING
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        if math.isnan(value):
            return MISSING
        return f"{value:.{digits}g}"
    return str(value)


def fmt_accuracy(value: float | None) -> str:
    """An accuracy in percent points, as the report prints it."""
    return MISSING if value is None else f"{float(value):.2f}"


def fmt_bytes(count: float) -> str:
    if count >= 1024 * MIB:
        return f"{count / (1024 * MIB):.2f} GiB"
    return f"{count / MIB:.1f} MiB"


def fmt_seconds(seconds: float) -> str:
    if seconds >= 120:
        return f"{seconds / 60:.1f} min ({seconds:.0f} s)"
    return f"{seconds:.2f} s" if seconds < 10 else f"{seconds:.1f} s"


def esc(value: Any) -> str:
    return html.escape(fmt(value))


def step_seconds(step: Step) -> float | None:
    """A step's estimated seconds: the cost model's ``meta["estimated_seconds"]`` if present,
    otherwise its activation approximation record's estimate; ``None`` when neither exists."""
    value = step.meta.get("estimated_seconds")
    if value is None:
        value = step.meta.get("approximation", {}).get("estimated_seconds")
    return None if value is None else float(value)


def predicted_latency(plan: Plan) -> tuple[float | None, str]:
    """(seconds, what the sum covers): per-step cost estimates when the plan has them,
    otherwise the activations' estimated seconds; ``None`` when there is neither."""
    per_step = [s.meta["estimated_seconds"] for s in plan.steps if "estimated_seconds" in s.meta]
    if per_step:
        return float(sum(per_step)), (f"sum of {len(per_step)} per-step estimates from the "
                                      "operation cost table; server evaluation only")
    activations = [s.meta["approximation"]["estimated_seconds"] for s in plan.steps
                   if s.meta.get("approximation", {}).get("estimated_seconds") is not None]
    if activations:
        return float(sum(activations)), (
            f"sum of {len(activations)} activation estimates; linear layers not included")
    return None, "the plan carries no cost estimates"


def ckks_parameters(plan: Plan) -> dict[str, Any] | None:
    ckks = plan.security.get("ckks")
    return ckks if isinstance(ckks, dict) else None


@dataclass(frozen=True)
class KeySizes:
    """Estimated CKKS evaluation key sizes in bytes (``picompile.cost.evaluation_key_bytes``)."""

    towers: int
    digits: int
    per_key: int
    rotation_keys: int

    @property
    def rotation_total(self) -> int:
        return self.per_key * self.rotation_keys

    @property
    def total(self) -> int:
        """Relinearization key plus every rotation key."""
        return self.per_key * (self.rotation_keys + 1)


def key_sizes(plan: Plan) -> KeySizes | None:
    """An estimate of the evaluation keys' size; ``None`` without CKKS parameters."""
    ckks = ckks_parameters(plan)
    if not ckks or "ring_dimension" not in ckks or "multiplicative_depth" not in ckks:
        return None
    depth = int(ckks["multiplicative_depth"])
    per_key = evaluation_key_bytes(int(ckks["ring_dimension"]), depth)
    return KeySizes(depth + 1, key_switching_digits(depth), per_key,
                    len(plan.security.get("rotation_keys", [])))


def step_levels(step: Step) -> tuple[int, int] | None:
    if "level_in" in step.meta and "level_out" in step.meta:
        return int(step.meta["level_in"]), int(step.meta["level_out"])
    return None


def activation_function(step: Step) -> str:
    return str(step.attrs.get("function", step.op)).lower()


def _gelu(x: np.ndarray) -> np.ndarray:
    erf = np.vectorize(math.erf, otypes=[float])
    return 0.5 * x * (1.0 + erf(x / math.sqrt(2.0)))


def exact_function(step: Step) -> Callable[[np.ndarray], np.ndarray] | None:
    """The function an activation step computes (or approximates); ``None`` if unknown."""
    name = activation_function(step).replace("leakyrelu", "leaky_relu")
    attrs = step.attrs
    if name == "relu":
        return lambda x: np.maximum(x, 0.0)
    if name in ("clip", "relu6"):
        lo = float(attrs.get("lo", attrs.get("min", 0.0)))
        hi = float(attrs.get("hi", attrs.get("max", 6.0)))
        return lambda x: np.clip(x, lo, hi)
    if name == "leaky_relu":
        alpha = float(attrs.get("alpha", 0.01))
        return lambda x: np.where(x >= 0.0, x, alpha * x)
    if name == "sigmoid":
        return lambda x: 1.0 / (1.0 + np.exp(-x))
    if name == "tanh":
        return np.tanh
    if name == "gelu":
        return _gelu
    if name == "abs":
        return np.abs
    return None


def polynomial_curves(plan: Plan, step: Step, x: np.ndarray) -> list[np.ndarray]:
    """Values of a ``Polynomial`` step's series on ``x`` (within its interval): one per row."""
    if step.op != "Polynomial" or "coefficients" not in step.params \
            or "interval" not in step.params:
        return []
    coefficients = np.atleast_2d(np.asarray(plan.arrays[step.params["coefficients"]], float))
    a, b = (float(v) for v in np.asarray(plan.arrays[step.params["interval"]]).ravel()[:2])
    basis = str(step.attrs.get("basis", "chebyshev")).lower()
    if basis == "chebyshev":
        t = (2.0 * x - a - b) / (b - a)
        return [chebyshev.chebval(t, row) for row in coefficients]
    if basis in ("hermite_e", "hermitee", "hermite"):
        return [hermite_e.hermeval(x, row) for row in coefficients]
    if basis in ("power", "monomial"):
        return [polynomial.polyval(x, row) for row in coefficients]
    return []


def polynomial_interval(plan: Plan, step: Step) -> tuple[float, float] | None:
    if "interval" not in step.params:
        return None
    a, b = (float(v) for v in np.asarray(plan.arrays[step.params["interval"]]).ravel()[:2])
    return a, b


def calibrated_activations(plan: Plan) -> list[tuple[int, Step]]:
    """Activation steps with a calibration histogram, with their step index."""
    return [(i, s) for i, s in enumerate(plan.steps)
            if s.op in ACTIVATION_OPS and "histogram" in s.meta.get("calibration", {})]


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
    """Render ``fig`` to an embedded PNG ``<figure>`` and close it."""
    buffer = io.BytesIO()
    try:
        fig.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
    finally:
        plt.close(fig)
    data = base64.b64encode(buffer.getvalue()).decode("ascii")
    return (f'<figure><img src="data:image/png;base64,{data}" alt="{html.escape(alt)}">'
            f"<figcaption>{html.escape(caption)}</figcaption></figure>")


# --------------------------------------------------------------------------------------------
# Sections
# --------------------------------------------------------------------------------------------


def glance_section(plan: Plan) -> str:
    """Cards: security, predicted latency, predicted accuracy, key material, protocol."""
    cards = [_card("protocol", plan.protocol,
                   f"activations: {plan.security.get('activations', MISSING)}")]
    ckks = ckks_parameters(plan)
    if ckks and not ckks.get("runnable", True):
        cards.append(_card("security", "not runnable under CKKS",
                           str(ckks.get("reason", "")), "bad"))
    elif ckks:
        secure = not ckks.get("insecure")
        level = str(ckks.get("security", MISSING))
        headline = level.split("(")[0].split(":")[0].strip() or MISSING
        cards.append(_card("security", headline if secure else f"{headline} — not for real data",
                           level if ckks.get("runnable", True) else
                           f"{level}; not runnable: {ckks.get('reason', '')}",
                           "good" if secure else "bad"))
    elif isinstance(plan.security.get("bfv"), dict):
        bfv = plan.security["bfv"]
        cards.append(_card("security", f"{bfv['security']} · sigma {bfv['sigma']}",
                           f"BFV N={bfv['ring_dimension']}; masks hide within "
                           f"2^-{bfv['sigma_hide']}, lifts fail below 2^-{bfv['sigma_correct']}",
                           "good"))
    else:
        cards.append(_card("security", MISSING, "no CKKS parameters in this plan"))
    seconds, source = predicted_latency(plan)
    cards.append(_card("predicted latency", MISSING if seconds is None else fmt_seconds(seconds),
                       source))
    degrees = plan.analysis.get("degrees")
    select = plan.analysis.get("select")
    if degrees:
        drop = float(degrees["base_accuracy"]) - float(degrees["achieved_accuracy"])
        cards.append(_card("predicted accuracy", f"{fmt_accuracy(degrees['achieved_accuracy'])}%",
                           f"original {fmt_accuracy(degrees['base_accuracy'])}%, "
                           f"drop {drop:.2f} of {degrees['accuracy_budget_points']} points "
                           "allowed (calibration set)",
                           "good" if drop <= float(degrees["accuracy_budget_points"]) else "bad"))
    elif select:
        cards.append(_card("predicted accuracy", f"{fmt_accuracy(select['accuracy_selected'])}%",
                           f"original {fmt_accuracy(select['accuracy_exact'])}% "
                           "(calibration set)"))
    else:
        cards.append(_card("predicted accuracy", MISSING, "not measured at compile time"))
    sizes = key_sizes(plan)
    if sizes is not None:
        cards.append(_card("evaluation keys (est.)", fmt_bytes(sizes.total),
                           f"{sizes.rotation_keys} rotation keys + relinearization key"))
    return f'<div class="cards">{"".join(cards)}</div>'


def summary_section(plan: Plan) -> str:
    model = plan.model
    head = "none" if plan.head is None else (
        f"{' → '.join(plan.head.ops)} (client, plaintext) → {', '.join(plan.head.outputs)}")
    rows = [
        ("model", esc(model.get("name"))),
        ("model sha256", f"<code>{esc(model.get('sha256'))}</code>"),
        ("opset", esc(model.get("opset"))),
        ("producer", esc(model.get("producer") or "unknown")),
        ("protocol", esc(plan.protocol)),
        ("activations", esc(plan.security.get("activations"))),
        ("inputs", esc(", ".join(f"{t.name} {tuple(t.shape)}" for t in plan.inputs))),
        ("encrypted outputs", esc(", ".join(f"{t.name} {tuple(t.shape)}"
                                            for t in plan.outputs))),
        ("client head", esc(head)),
        ("steps", esc(f"{len(plan.steps)} ({parameter_count(plan):,} parameters)")),
    ]
    return "<h2>Summary</h2>" + _kv_table(rows)


def hybrid_section(plan: Plan) -> str:
    """Hybrid plans: BFV parameters, the statistical parameter, and per step its protocol."""
    bfv = plan.security.get("bfv")
    rows = [
        ("scheme", "BFV (linear layers) + 2-party additive shares over Z_2^64 (activations)"),
        ("security level", esc(f"{bfv['security']} ({bfv['security_bits']}-bit)")),
        ("ring dimension N / slots per row", esc(f"{bfv['ring_dimension']:,} / "
                                                  f"{bfv['slots']:,}")),
        ("plaintext primes", esc(" · ".join(str(t) for t in bfv["primes"])
                                 + f" (log2 T = {bfv['modulus_bits']})")),
        ("fractional bits f", esc(bfv["fractional_bits"])),
        ("statistical parameter sigma", esc(bfv["sigma"])),
        ("masks hide within", esc(f"2^-{bfv['sigma_hide']} per element")),
        ("boundary lift fails with probability", esc(f"< 2^-{bfv['sigma_correct']} per element")),
        ("Beaver truncation fails with probability",
         esc(f"< 2^-{bfv['truncation_failure_bits']} per element")),
        ("circuit privacy", esc(bfv["circuit_privacy"])),
        ("rotation keys (per prime)", esc(len(plan.security.get("rotation_keys", [])))),
    ]
    predicted = bfv.get("predicted", {})
    if predicted:
        rows.append(("predicted communication per inference",
                     esc(f"online {fmt_bytes(predicted['online_bytes'])} in "
                         f"{predicted['online_rounds']} MPC rounds; offline "
                         f"{fmt_bytes(predicted['offline_bytes'])}")))
    steps = ["<table><tr><th>step</th><th>op</th><th>protocol</th><th>sigma hide</th>"
             "<th>sigma correct</th><th>online bytes</th><th>offline bytes</th></tr>"]
    for step in plan.steps:
        info = step.meta.get("hybrid", {})
        steps.append(
            f"<tr><td>{esc(step.name)}</td><td>{esc(step.op)}</td>"
            f"<td>{esc(info.get('protocol'))}</td><td>{esc(fmt(info.get('sigma_hide')))}</td>"
            f"<td>{esc(fmt(info.get('sigma_correct')))}</td>"
            f"<td>{esc(fmt(info.get('online_bytes')))}</td>"
            f"<td>{esc(fmt(info.get('offline_bytes')))}</td></tr>")
    steps.append("</table>")
    return ("<h2>Security and protocol (hybrid)</h2>" + _kv_table(rows) + "".join(steps))


def security_section(plan: Plan) -> str:
    if isinstance(plan.security.get("bfv"), dict):
        return hybrid_section(plan)
    ckks = ckks_parameters(plan)
    if not ckks:
        return ("<h2>Security and keys</h2>" + _note(
            "No CKKS parameters in this plan: the levels pass did not run (exact activations "
            "without --calib, or a hybrid plan), so there are no CKKS levels or keys to report."))
    ring = ckks.get("ring_dimension")
    ring_text = MISSING if ring is None else f"{int(ring):,} (2^{int(ring).bit_length() - 1})"
    runnable = ckks.get("runnable")
    rows = [
        ("scheme", esc(ckks.get("scheme"))),
        ("security level", esc(ckks.get("security"))),
        ("ring dimension N", esc(ring_text)),
        ("slots", esc(f"{int(ckks['slots']):,}" if "slots" in ckks else None)),
        ("multiplicative depth", esc(ckks.get("multiplicative_depth"))),
        ("scaling modulus bits", esc(ckks.get("scaling_mod_bits"))),
        ("first modulus bits", esc(ckks.get("first_mod_bits"))),
        ("log2 q (without special primes)", esc(ckks.get("log2_q_without_special_primes"))),
        ("runnable", esc(runnable if runnable is not None else None)
         + (f" — {esc(ckks['reason'])}" if ckks.get("reason") else "")),
        ("rotation keys", esc(len(plan.security.get("rotation_keys", [])))),
    ]
    rotations = plan.analysis.get("layout", {}).get("rotations_per_inference")
    if rotations is not None:
        rows.append(("rotations per inference", esc(rotations)))
    rows += [(field, esc(value)) for field, value in ckks_details(plan)]
    sizes = key_sizes(plan)
    if sizes is not None:
        rows += [
            ("relinearization key (est.)", esc(fmt_bytes(sizes.per_key))),
            ("one rotation key (est.)", esc(fmt_bytes(sizes.per_key))),
            ("all rotation keys (est.)", esc(f"{fmt_bytes(sizes.rotation_total)} "
                                             f"({sizes.rotation_keys} keys)")),
        ]
    warning = ""
    if ckks.get("insecure") or runnable is False:
        warning = (f'<p class="warn">{esc(ckks.get("security"))}'
                   f'{" — not runnable: " + esc(ckks.get("reason")) if runnable is False else ""}'
                   "</p>")
    estimate = ""
    if sizes is not None:
        estimate = _note(
            f"Key sizes are an estimate: 2 × N × towers × 8 bytes × digits per key, with towers "
            f"= depth + 1 = {sizes.towers} and digits = {sizes.digits} (OpenFHE's default "
            "hybrid key switching for this depth). Serialized keys carry some overhead.")
    return "<h2>Security and keys</h2>" + warning + _kv_table(rows) + estimate


def prediction_section(plan: Plan) -> str:
    seconds, source = predicted_latency(plan)
    rows = [("predicted latency", esc(MISSING if seconds is None else fmt_seconds(seconds))
             + f" <small>({esc(source)})</small>")]
    cost = plan.analysis.get("cost")
    if cost:
        rows.append(("cost table", esc(f"{cost.get('table', MISSING)}, measured at ring "
                                       f"dimension {fmt(cost.get('ring_dimension'))}")))
        memory = cost.get("predicted_server_memory_bytes")
        if memory:
            rows.append(("predicted server memory", esc(
                f"{fmt_bytes(memory['total'])} (evaluation keys "
                f"{fmt_bytes(memory['evaluation_keys'])}, encoded diagonals "
                f"{fmt_bytes(memory['encoded_plaintexts'])}, ciphertexts "
                f"{fmt_bytes(memory['ciphertexts'])})")))
        rows.append(("predicted communication", esc(
            "one input ciphertext up, one output ciphertext down per inference (FHE-only)"
            if plan.protocol == "fhe" else MISSING)))
    degrees = plan.analysis.get("degrees")
    if degrees:
        rows += [
            ("accuracy budget", esc(f"{degrees['accuracy_budget_points']} points")),
            ("original model accuracy", esc(fmt_accuracy(degrees["base_accuracy"]))),
            ("predicted accuracy (this plan)", esc(fmt_accuracy(degrees["achieved_accuracy"]))),
            ("accuracy labels", esc(degrees.get("labels"))),
            ("activation cost used by the degree search", esc(
                fmt_seconds(float(degrees["estimated_activation_seconds"]))
                if "estimated_activation_seconds" in degrees else None)),
            ("closed-loop evaluations", esc(len(degrees.get("iterations", [])))),
        ]
    select = plan.analysis.get("select")
    if select:
        rows += [
            ("ReLU budget", esc(f"{select['relu_budget']} of {select.get('relus_total', '?')}")),
            ("ReLUs kept exact", esc(select.get("relus_kept"))),
            ("accuracy: all polynomial", esc(fmt_accuracy(select.get("accuracy_all_polynomial")))),
            ("accuracy: selected (this plan)", esc(fmt_accuracy(select.get("accuracy_selected")))),
            ("accuracy: exact", esc(fmt_accuracy(select.get("accuracy_exact")))),
        ]
    calibration = plan.analysis.get("calibration")
    if calibration:
        rows.append(("calibration set", esc(
            f"{calibration.get('samples')} samples, labels: "
            f"{'yes' if calibration.get('labels') else 'no'}")))
    note = ""
    if not degrees and not select:
        note = _note("Accuracy was not predicted at compile time (no --accuracy-budget search "
                     "or ReLU selection ran); accuracies are in percent on the calibration set "
                     "when present.")
    return "<h2>Predicted cost and accuracy</h2>" + _kv_table(rows) + note


def passes_section(plan: Plan) -> str:
    if not plan.passes:
        return "<h2>Compile phases</h2>" + _note("The plan records no compile phases.")
    rows = []
    for record in plan.passes:
        items = "".join(f"<li>{html.escape(str(d))}</li>" for d in record.get("diagnostics", []))
        rows.append(f"<tr><td>{esc(record.get('name'))}</td>"
                    f"<td class=\"num\">{float(record.get('seconds', 0.0)):.3f}</td>"
                    f'<td><ul class="diag">{items}</ul></td></tr>')
    total = sum(float(r.get("seconds", 0.0)) for r in plan.passes)
    rows.append(f'<tr><th>total</th><th class="num">{total:.3f}</th><th></th></tr>')
    return ("<h2>Compile phases</h2><table><tr><th>phase</th><th>seconds</th>"
            f"<th>diagnostics</th></tr>{''.join(rows)}</table>")


STEP_COLUMNS = ("#", "step", "op", "input shapes", "output shape", "ONNX nodes", "diagonals",
                "rotations", "baby step", "level in", "level out", "degree", "method",
                "max error", "weighted MSE", "est. seconds", "parameters")


def step_row(plan: Plan, index: int, step: Step) -> list[tuple[str, str]]:
    """(css class, escaped cell) per column of the step table."""
    layout = step.meta.get("layout", {})
    approximation = step.meta.get("approximation", {})
    polynomial_step = step.op == "Polynomial"
    in_shapes = " ".join(str(tuple(plan.values[v].shape)) for v in step.inputs
                         if v in plan.values)
    out_shapes = " ".join(str(tuple(plan.values[v].shape)) for v in step.outputs
                          if v in plan.values)
    op = step.op if not polynomial_step else f"Polynomial ({activation_function(step)})"
    return [
        ("num", esc(index)), ("name", esc(step.name)), ("", esc(op)),
        ("", esc(in_shapes)), ("", esc(out_shapes)), ("src", esc(", ".join(step.source))),
        ("num", esc(layout.get("diagonal_count"))), ("num", esc(layout.get("rotations"))),
        ("num", esc(layout.get("baby_step"))),
        ("num", esc(step.meta.get("level_in"))), ("num", esc(step.meta.get("level_out"))),
        ("num", esc(step.attrs.get("degree") if polynomial_step else None)),
        ("", esc((str(step.attrs.get("method")) + (", square folded into producer"
                                                     if step.meta.get("folded_square") else ""))
                 if polynomial_step else None)),
        ("num", esc(approximation.get("max_error"))),
        ("num", esc(approximation.get("weighted_mse"))),
        ("num", esc(step_seconds(step))),
        ("params", esc(step_parameters(plan, step))),
    ]


def steps_section(plan: Plan) -> str:
    header = "".join(f"<th>{html.escape(c)}</th>" for c in STEP_COLUMNS)
    rows = []
    for index, step in enumerate(plan.steps):
        cells = "".join(f'<td class="{cls}">{text}</td>' if cls else f"<td>{text}</td>"
                        for cls, text in step_row(plan, index, step))
        rows.append(f"<tr>{cells}</tr>")
    return (f"<h2>Steps ({len(plan.steps)})</h2><div class=\"steps\"><table><tr>{header}</tr>"
            f"{''.join(rows)}</table></div>")


# --------------------------------------------------------------------------------------------
# Plots: each returns (figure, caption) or (None, why it is left out)
# --------------------------------------------------------------------------------------------


def cost_figure(plan: Plan) -> tuple[Figure | None, str]:
    costs = [(i, s, step_seconds(s)) for i, s in enumerate(plan.steps)]
    costs = [(i, s, c) for i, s, c in costs if c is not None]
    if not costs:
        return None, "Per-step cost: the plan carries no cost estimates."
    labels = [f"{i}: {s.name}" for i, s, _ in costs]
    values = [c for _, _, c in costs]
    colors = ["#d9822b" if s.op in ACTIVATION_OPS else "#3b6fb6" for _, s, _ in costs]
    fig, ax = plt.subplots(figsize=(10, 0.45 * len(costs) + 1.4))
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
    return fig, (f"Estimated seconds per step, {len(costs)} of {len(plan.steps)} steps have an "
                 "estimate; steps without one are not drawn.")


def level_figure(plan: Plan) -> tuple[Figure | None, str]:
    levels = [(i, step_levels(s)) for i, s in enumerate(plan.steps)]
    levels = [(i, lv) for i, lv in levels if lv is not None]
    if not levels:
        return None, "Level timeline: the plan carries no CKKS levels (no levels pass)."
    xs: list[float] = []
    ys: list[int] = []
    for i, (level_in, level_out) in levels:
        xs += [i - 0.5, i]
        ys += [level_in, level_out]
    xs.append(levels[-1][0] + 0.5)
    ys.append(levels[-1][1][1])
    ckks = ckks_parameters(plan) or {}
    depth = ckks.get("multiplicative_depth")
    fig, ax = plt.subplots(figsize=(10, 3.8))
    ax.step(xs, ys, where="post", color="#3b6fb6", linewidth=2, label="level consumed")
    ax.plot([i for i, _ in levels], [lv[1] for _, lv in levels], "o", color="#3b6fb6",
            markersize=4)
    peak_index, (_, peak) = max(levels, key=lambda item: item[1][1])
    if depth is not None:
        ax.axhline(int(depth), color="#d9534f", linestyle="--",
                   label=f"multiplicative depth {int(depth)}")
    ax.annotate(f"max level {peak} at step {peak_index}", (peak_index, peak),
                textcoords="offset points", xytext=(-10, 8), ha="right", fontsize=9)
    ax.set_xticks([i for i, _ in levels])
    ax.set_xlabel("step index")
    ax.set_ylabel("level (multiplications consumed)")
    top = max(peak, int(depth) if depth is not None else peak)
    ax.set_ylim(-0.5, top + 1.5)
    ax.grid(alpha=0.3)
    ax.legend(loc="upper left", fontsize=8)
    ax.set_title("Level timeline: level in → level out per step")
    fig.tight_layout()
    return fig, ("Levels each step consumes (steps at the same level cost no depth). "
                 "The dashed line is the chain's multiplicative depth.")


def _activation_panel(ax: Any, plan: Plan, index: int, step: Step) -> None:
    calibration = step.meta["calibration"]
    edges = np.asarray(calibration["histogram"]["edges"], float)
    counts = np.asarray(calibration["histogram"]["counts"], float)
    interval = polynomial_interval(plan, step)
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
    function = exact_function(step)
    if function is not None:
        ax.plot(x, function(x), color="#1d2430", linewidth=1.4, label="exact")
    if interval is not None:
        inside = np.linspace(interval[0], interval[1], 400)
        curves = polynomial_curves(plan, step, inside)
        for row, curve in enumerate(curves):
            thin = len(curves) > 1
            ax.plot(inside, curve, color="#d9822b", linewidth=0.6 if thin else 1.6,
                    alpha=0.5 if thin else 1.0,
                    label=("polynomial" if not thin else "per-channel") if row == 0 else None)
    name = activation_function(step)
    degree = step.attrs.get("degree")
    title = f"{index}: {step.name}"
    if len(title) > 38:
        title = "…" + title[-37:]
    ax.set_title(f"{title}\n{name}" + (f", degree {degree}" if degree is not None else ""),
                 fontsize=8)
    ax.tick_params(labelsize=7)
    ax.axvline(float(calibration.get("mean", np.nan)), color="#1f7a3a", linewidth=0.8,
               linestyle=":")
    ax.legend(fontsize=6, loc="upper left")


def activation_figure(plan: Plan) -> tuple[Figure | None, str]:
    steps = calibrated_activations(plan)
    if not steps:
        return None, ("Activation fits: the plan has no calibration histograms (compiled "
                      "without --calib).")
    shown = steps[:MAX_ACTIVATION_PANELS]
    columns = min(ACTIVATION_COLUMNS, len(shown))
    rows = math.ceil(len(shown) / columns)
    fig, axes = plt.subplots(rows, columns, figsize=(3.6 * columns, 2.9 * rows), squeeze=False)
    for ax, (index, step) in zip(axes.ravel(), shown, strict=False):
        _activation_panel(ax, plan, index, step)
    for ax in axes.ravel()[len(shown):]:
        ax.set_visible(False)
    fig.tight_layout()
    caption = ("Per activation: calibrated input histogram (grey, right axis, unscaled), the "
               "exact function (black), the polynomial on its fit interval (orange; thin lines: "
               "one per channel), the input mean (dotted green).")
    if len(steps) > len(shown):
        caption += f" Only the first {len(shown)} of {len(steps)} activations are drawn."
    return fig, caption


def accuracy_figure(plan: Plan) -> tuple[Figure | None, str]:
    degrees = plan.analysis.get("degrees") or {}
    iterations = degrees.get("iterations") or []
    curve = degrees.get("noise_curve") or {}
    has_curve = bool(curve.get("variances")) and bool(curve.get("accuracy_drops"))
    if not iterations and not has_curve:
        return None, ("Accuracy versus budget: the compile recorded no accuracy-budget search "
                      "(use --accuracy-budget with labelled calibration data).")
    panels = int(bool(iterations)) + int(has_curve)
    fig, axes = plt.subplots(1, panels, figsize=(6 * panels, 4), squeeze=False)
    position = 0
    budget = degrees.get("accuracy_budget_points")
    base = degrees.get("base_accuracy")
    if iterations:
        ax = axes[0, position]
        position += 1
        costs = [float(it["cost"]) for it in iterations]
        accuracies = [float(it["accuracy"]) for it in iterations]
        holds = [bool(it.get("holds")) for it in iterations]
        ax.plot(costs, accuracies, color="#9aa5b5", linewidth=0.8, zorder=1)
        ax.scatter(costs, accuracies, c=["#1f7a3a" if h else "#d9534f" for h in holds],
                   zorder=2, s=36)
        for it, c, a in zip(iterations, costs, accuracies, strict=True):
            ax.annotate(str(it.get("degrees", "")), (c, a), textcoords="offset points",
                        xytext=(4, 4), fontsize=7)
        if base is not None:
            ax.axhline(float(base), color="#1d2430", linestyle=":", label="original model")
            if budget is not None:
                ax.axhline(float(base) - float(budget), color="#d9534f", linestyle="--",
                           label=f"budget ({budget} points)")
        references = list(accuracies)
        if base is not None:
            references.append(float(base))
            if budget is not None:
                references.append(float(base) - float(budget))
        low, high = min(references), max(references)
        pad = max((high - low) * 0.2, 0.5)
        ax.set_ylim(low - pad, high + pad)
        ax.set_xlabel("estimated activation cost (s)")
        ax.set_ylabel("calibration accuracy (%)")
        ax.set_title("Closed-loop evaluations (green: within budget)", fontsize=10)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    if has_curve:
        ax = axes[0, position]
        variances = np.asarray(curve["variances"], float)
        drops = np.asarray(curve["accuracy_drops"], float)
        ax.semilogx(variances, drops, color="#3b6fb6", marker=".", label="measured drop")
        if budget is not None:
            ax.axhline(float(budget), color="#d9534f", linestyle="--",
                       label=f"budget ({budget} points)")
        for it in iterations:
            if it.get("noise_budget"):
                ax.axvline(float(it["noise_budget"]), color="#9aa5b5", linewidth=0.8)
        ax.set_xlabel("logit noise variance")
        ax.set_ylabel("accuracy drop (points)")
        ax.set_title("Accuracy drop under injected noise (grey: noise budgets tried)",
                     fontsize=10)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    return fig, ("Left: each closed-loop evaluation of the degree search — cost against the "
                 "measured calibration accuracy (labels: degrees per activation). Right: the "
                 "accuracy model — drop in accuracy caused by Gaussian noise on the logits.")


FIGURES: Sequence[tuple[str, Callable[[Plan], tuple[Figure | None, str]]]] = (
    ("per-step cost", cost_figure),
    ("level timeline", level_figure),
    ("activation fits", activation_figure),
    ("accuracy versus budget", accuracy_figure),
)


def plots_section(plan: Plan) -> str:
    parts = ["<h2>Plots</h2>"]
    for alt, build in FIGURES:
        fig, caption = build(plan)
        parts.append(_note(caption) if fig is None else figure_html(fig, alt, caption))
    return "".join(parts)


# --------------------------------------------------------------------------------------------
# Entry points
# --------------------------------------------------------------------------------------------


def profile_section(plan: Plan, profile: dict[str, Any] | None) -> str:
    """Predicted vs measured seconds per step, when a run profile is given."""
    if profile is None:
        return ""
    from picompile.profile import compare

    rows = compare(plan, profile)
    body = "".join(
        f"<tr><td>{esc(r.step)}</td><td>{esc(r.op)}</td><td>{fmt(r.predicted)}</td>"
        f"<td>{fmt(r.measured)}</td><td>"
        f"{fmt(r.measured / r.predicted) if r.predicted else '–'}</td></tr>" for r in rows)
    predicted = sum(r.predicted or 0.0 for r in rows)
    measured = sum(r.measured for r in rows)
    return (f"<h2>Predicted vs measured ({esc(profile['backend'])})</h2><table><thead><tr>"
            "<th>step</th><th>op</th><th>predicted s</th><th>measured s</th>"
            f"<th>measured / predicted</th></tr></thead><tbody>{body}<tr><td>total</td><td></td>"
            f"<td>{fmt(predicted)}</td><td>{fmt(measured)}</td><td>"
            f"{fmt(measured / predicted) if predicted else '–'}</td></tr></tbody></table>")


def render_html(plan: Plan, profile: dict[str, Any] | None = None) -> str:
    """The whole report as one self-contained HTML document."""
    title = f"picompile plan report — {plan.model.get('name', 'model')}"
    body = "".join((
        f"<h1>{html.escape(title)}</h1>",
        f'<p class="subtitle">{esc(plan.protocol)} plan, {len(plan.steps)} steps, schema '
        f"v{esc(plan.schema_version)}</p>",
        glance_section(plan),
        summary_section(plan),
        security_section(plan),
        prediction_section(plan),
        passes_section(plan),
        profile_section(plan, profile),
        plots_section(plan),
        steps_section(plan),
        "<footer>Generated by picompile from the plan file alone; estimates are the "
        "compiler's predictions, not measurements of an encrypted run.</footer>",
    ))
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            f"<title>{html.escape(title)}</title><style>{CSS}</style></head>"
            f"<body>{body}</body></html>\n")


def write_html(plan: Plan, path: str | Path, profile: dict[str, Any] | None = None) -> Path:
    """Write :func:`render_html` of ``plan`` to ``path`` (UTF-8) and return the path."""
    path = Path(path)
    path.write_text(render_html(plan, profile), encoding="utf-8")
    return path
