"""Report facts: every value the plan reports show, read from the plan in this one place.

Reads: a :class:`~picompile.plan.Plan` — ``model`` (with ``finetune``, the training summary of
a fine-tuned model), ``protocol``, ``schema_version``, inputs,
outputs, head, ``passes``, ``arrays`` (parameter shapes, polynomial coefficients and
intervals), the typed records ``ckks``, ``bfv`` and ``layout``, ``security``
(``activations``), ``analysis`` (``cost``, ``degrees``, ``select``, ``calibration``) and per
step its ``attrs``, its ``fhe`` record (levels, linear layout) and ``hybrid`` record, and
``meta`` (``approximation``, ``calibration`` histogram, ``sensitivity``,
``estimated_seconds``, ``folded_square``); and a run profile document (:mod:`picompile.profile`).
Writes: nothing — the frozen dataclasses of :mod:`.records` (plain values: no HTML, rich or
number formatting) that :mod:`.figures`, :mod:`.html` and :mod:`.text` present. When the plan
changes how it stores a value, this module is the only report module to change.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from typing import Any

import numpy as np

from picompile.cost import evaluation_key_bytes, key_switching_digits
from picompile.plan import Plan, Step
from picompile.plan.activations import BY_NAME, OP_NAMES, exact_activation
from picompile.report.records import (
    REPORTED_ACTIVATION_OPS,
    Approximation,
    Bfv,
    Bootstrapping,
    CalibrationSet,
    Ckks,
    Communication,
    Cost,
    Curve,
    DegreeSearch,
    Head,
    Histogram,
    HybridStep,
    Iteration,
    KeySizes,
    Layout,
    Memory,
    NoiseCurve,
    PassRecord,
    PolynomialSeries,
    Profile,
    ProfileRow,
    ProtocolChoice,
    ReluSelection,
    ReportFacts,
    Shape,
    StepFacts,
    Summary,
    Tensor,
    Training,
)

# --------------------------------------------------------------------------------------------
# Reading the plan
# --------------------------------------------------------------------------------------------


def parameter_count(plan: Plan) -> int:
    """Number of parameters (array elements) the steps reference, each array once."""
    keys = {key for step in plan.steps for key in step.params.values()}
    return int(sum(np.size(plan.arrays[k]) for k in keys))


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


def rotation_key_count(plan: Plan) -> int:
    return len(plan.rotation_keys)


def ckks_parameters(plan: Plan) -> Ckks | None:
    """The plan's CKKS parameters; ``None`` when it has none."""
    ckks = plan.ckks
    if ckks is None:
        return None
    boot = ckks.bootstrapping
    bootstrapping = None if boot is None else Bootstrapping(
        boot.count, boot.greedy_count, boot.slots, boot.level_budget,
        boot.levels_after_bootstrap, boot.correction_factor or None, boot.scaled_values,
        boot.upscaled_values)
    return Ckks(
        scheme=ckks.scheme or None, security=ckks.security or None,
        ring_dimension=ckks.ring_dimension or None, slots=ckks.slots or None,
        multiplicative_depth=ckks.multiplicative_depth,
        scaling_mod_bits=ckks.scaling_mod_bits or None,
        first_mod_bits=ckks.first_mod_bits or None,
        log2_q_without_special_primes=ckks.log2_q_without_special_primes or None,
        runnable=ckks.runnable, reason=ckks.reason or None,
        insecure=ckks.insecure, bootstrapping=bootstrapping)


def key_sizes(plan: Plan) -> KeySizes | None:
    """An estimate of the evaluation keys' size; ``None`` without CKKS parameters."""
    ckks = ckks_parameters(plan)
    if ckks is None or ckks.ring_dimension is None or ckks.multiplicative_depth is None:
        return None
    depth = ckks.multiplicative_depth
    return KeySizes(depth + 1, key_switching_digits(depth),
                    evaluation_key_bytes(ckks.ring_dimension, depth), rotation_key_count(plan))



def _optional_float(value: Any) -> float | None:
    return None if value is None else float(value)


def _layout(plan: Plan) -> Layout:
    layout = plan.layout
    if layout is None:
        return Layout((), None, None)
    return Layout(tuple(layout.packing.items()),
                  layout.diagonals_per_inference if plan.protocol == "fhe" else None,
                  layout.rotations_per_inference, layout.ciphertexts, layout.slots)


def _bfv(plan: Plan) -> Bfv | None:
    bfv = plan.bfv
    if bfv is None:
        return None
    predicted = bfv.predicted or None
    return Bfv(
        ring_dimension=bfv.ring_dimension, slots=bfv.slots,
        primes=tuple(bfv.primes), modulus_bits=bfv.modulus_bits,
        security=bfv.security, security_bits=bfv.security_bits,
        fractional_bits=bfv.fractional_bits, sigma=bfv.sigma,
        sigma_hide=bfv.sigma_hide, sigma_correct=bfv.sigma_correct,
        truncation_failure_bits=bfv.truncation_failure_bits,
        circuit_privacy=bfv.circuit_privacy,
        predicted=None if predicted is None else Communication(
            predicted["online_bytes"], predicted["online_rounds"], predicted["offline_bytes"]),
        correlations=_correlations(plan))


def _correlations(plan: Plan) -> str:
    """Who produces a hybrid plan's MPC correlations (OT between the parties or the dealer),
    under which assumption, and for which kinds of steps."""
    steps = plan.dealer_steps()
    if not steps:
        return ("two-party, no dealer: HE linear layers, Flash quadratics and local steps "
                "only")
    kinds = Counter("partial ReLU" if "relu_channels" in s.params else
                    {"relu": "exact ReLU", "max_pool": "MaxPool"}.get(
                        s.hybrid.protocol, "Beaver polynomial") for s in steps)
    listed = ", ".join(f"{count} {kind}" for kind, count in sorted(kinds.items())) + " step(s)"
    if plan.bfv is not None and plan.bfv.correlations == "two-party":
        return ("two-party, no dealer: oblivious transfer between client and server "
                "(Chou–Orlandi base OTs on Ed25519 + IKNP extension; semi-honest, CDH on "
                "Ed25519 and correlation-robust fixed-key AES, 128-bit) for " + listed)
    return "dealer (a third party trusted not to collude) for " + listed


def _cost(plan: Plan) -> Cost | None:
    cost = plan.analysis.get("cost")
    if not cost:
        return None
    memory = cost.get("predicted_server_memory_bytes") or None
    return Cost(
        predicted_seconds=_optional_float(cost.get("predicted_seconds")),
        table=cost.get("table"), ring_dimension=cost.get("ring_dimension"),
        memory=None if memory is None else Memory(
            memory["total"], memory["evaluation_keys"], memory["encoded_plaintexts"],
            memory.get("ciphertexts")),
        scale_out=tuple((int(row["workers"]), float(row["predicted_seconds"]),
                         float(row["speedup"])) for row in cost.get("scale_out") or ()))


def _degrees(plan: Plan) -> DegreeSearch | None:
    degrees = plan.analysis.get("degrees")
    if not degrees:
        return None
    curve = degrees.get("noise_curve") or {}
    noise_curve = None
    if curve.get("variances") and curve.get("accuracy_drops"):
        noise_curve = NoiseCurve(np.asarray(curve["variances"], float),
                                 np.asarray(curve["accuracy_drops"], float))
    iterations = tuple(
        Iteration(float(it["cost"]), float(it["accuracy"]), bool(it.get("holds")),
                  it.get("degrees", ""), it.get("noise_budget"))
        for it in degrees.get("iterations") or [])
    return DegreeSearch(
        accuracy_budget_points=degrees["accuracy_budget_points"],
        base_accuracy=float(degrees["base_accuracy"]),
        achieved_accuracy=float(degrees["achieved_accuracy"]), labels=degrees.get("labels"),
        estimated_activation_seconds=_optional_float(degrees.get("estimated_activation_seconds")),
        iterations=iterations, noise_curve=noise_curve,
        budget_met=bool(degrees.get("budget_met", True)),
        composite_layers=int(degrees.get("composite_layers", 0)),
        range_margin=_optional_float(degrees.get("range_margin")))


def _select(plan: Plan) -> ReluSelection | None:
    select = plan.analysis.get("select")
    if not select:
        return None
    return ReluSelection(
        select["relu_budget"], select.get("relus_total"), select.get("relus_kept"),
        _optional_float(select.get("accuracy_all_polynomial")),
        _optional_float(select.get("accuracy_selected")),
        _optional_float(select.get("accuracy_exact")))


def _calibration(plan: Plan) -> CalibrationSet | None:
    calibration = plan.analysis.get("calibration")
    if not calibration:
        return None
    return CalibrationSet(calibration.get("samples"), bool(calibration.get("labels")))


def _summary(plan: Plan) -> Summary:
    model = plan.model
    head = None if plan.head is None else Head(tuple(plan.head.ops), tuple(plan.head.outputs))
    return Summary(
        model_name=model.get("name"), sha256=model.get("sha256"), opset=model.get("opset"),
        producer=model.get("producer"), protocol=plan.protocol,
        schema_version=plan.schema_version, activations=plan.security.get("activations"),
        inputs=tuple(Tensor(t.name, tuple(t.shape)) for t in plan.inputs),
        outputs=tuple(Tensor(t.name, tuple(t.shape)) for t in plan.outputs),
        head=head, step_count=len(plan.steps), parameter_count=parameter_count(plan))


def _training(plan: Plan) -> Training | None:
    summary = plan.model.get("finetune")
    if not isinstance(summary, Mapping):
        return None
    return Training(*(summary.get(k) for k in (
        "method", "degree", "epochs", "relu_accuracy", "accuracy_before", "accuracy_after",
        "seconds", "relu_channels_kept", "relu_channels", "source_model")))


def _passes(plan: Plan) -> tuple[PassRecord, ...]:
    return tuple(PassRecord(r.get("name"), float(r.get("seconds", 0.0)),
                            tuple(str(d) for d in r.get("diagnostics", [])))
                 for r in plan.passes)


# --------------------------------------------------------------------------------------------
# Reading one step
# --------------------------------------------------------------------------------------------

#: Keyword parameters each library activation takes from a ``Polynomial`` step's attributes.
_FUNCTION_PARAMETERS = {"clip": ("lo", "hi"), "leaky_relu": ("alpha",), "gelu": ("approximate",)}


def activation_name(step: Step) -> str:
    """The activation a step computes or approximates: ``attrs["function"]`` or its op."""
    return str(step.attrs.get("function", step.op)).lower()


def exact_curve(step: Step) -> Curve | None:
    """The exact function an activation step computes (or approximates), from
    :mod:`picompile.plan.activations`; ``None`` when unknown (or a per-channel ``PRelu``)."""
    if step.op in OP_NAMES:
        if step.op == "PRelu":
            return None
        try:
            return exact_activation(step.op, step.attrs)
        except (KeyError, ValueError):
            return None
    name = activation_name(step).replace("leakyrelu", "leaky_relu")
    function = BY_NAME.get(name)
    if function is None:
        return None
    wanted = _FUNCTION_PARAMETERS.get(name, ())
    parameters = {k: (str(step.attrs[k]) if k == "approximate" else float(step.attrs[k]))
                  for k in wanted if k in step.attrs}
    if name == "clip" and len(parameters) < 2:
        return None
    return (lambda x: function(x, **parameters)) if parameters else function


def _interval(plan: Plan, step: Step) -> tuple[float, float] | None:
    if "interval" not in step.params:
        return None
    a, b = (float(v) for v in np.asarray(plan.arrays[step.params["interval"]]).ravel()[:2])
    return a, b


def _series(plan: Plan, step: Step) -> PolynomialSeries | None:
    interval = _interval(plan, step)
    if step.op != "Polynomial" or "coefficients" not in step.params or interval is None:
        return None
    coefficients = np.atleast_2d(np.asarray(plan.arrays[step.params["coefficients"]], float))
    return PolynomialSeries(coefficients, interval,
                            str(step.attrs.get("basis", "chebyshev")).lower())


def _approximation(step: Step) -> Approximation:
    record = step.meta.get("approximation", {})
    interval = record.get("interval")
    return Approximation(
        kept_exact=bool(record.get("kept_exact", step.op != "Polynomial")),
        method=record.get("method"), degree=record.get("degree"),
        folded_square=bool(record.get("folded_square")),
        interval=None if interval is None else (float(interval[0]), float(interval[1])),
        max_error=record.get("max_error"), weighted_mse=record.get("weighted_mse"),
        sensitivity=record.get("sensitivity"),
        predicted_accuracy_drop=record.get("predicted_accuracy_drop"),
        estimated_seconds=record.get("estimated_seconds"), levels=record.get("levels"))


def _histogram(step: Step) -> Histogram | None:
    calibration = step.meta.get("calibration", {})
    if "histogram" not in calibration:
        return None
    return Histogram(np.asarray(calibration["histogram"]["edges"], float),
                     np.asarray(calibration["histogram"]["counts"], float),
                     float(calibration.get("mean", np.nan)))


def _hybrid(step: Step) -> HybridStep | None:
    info = step.hybrid
    if info is None:
        return None
    return HybridStep(info.protocol, info.sigma_hide, info.sigma_correct, info.weight_bits,
                      info.online_bytes, info.online_rounds, info.offline_bytes)


def _shapes(plan: Plan, names: list[str]) -> tuple[Shape, ...]:
    return tuple(tuple(plan.values[v].shape) for v in names if v in plan.values)


def step_facts(plan: Plan, index: int, step: Step) -> StepFacts:
    fhe = step.fhe
    linear = fhe.linear if fhe is not None else None
    approximation = _approximation(step)
    estimated = step.meta.get("estimated_seconds")
    return StepFacts(
        index=index, name=step.name, op=step.op, function=activation_name(step),
        source=tuple(step.source), input_shapes=_shapes(plan, step.inputs),
        output_shapes=_shapes(plan, step.outputs), attrs=dict(step.attrs),
        parameter_shapes=tuple((role, tuple(np.shape(plan.arrays[key])))
                               for role, key in step.params.items()),
        level_in=fhe.level_in if fhe is not None else None,
        level_out=fhe.level_out if fhe is not None else None,
        diagonal_count=linear.diagonal_count if linear is not None else None,
        rotations=linear.rotations if linear is not None else None,
        baby_step=linear.baby_step if linear is not None else None,
        folded_square=bool(step.meta.get("folded_square")),
        estimated_seconds=_optional_float(estimated), seconds=step_seconds(step),
        has_approximation="approximation" in step.meta, approximation=approximation,
        sensitivity=step.meta.get("sensitivity", approximation.sensitivity),
        calibrated="calibration" in step.meta, histogram=_histogram(step),
        fit_interval=_interval(plan, step), series=_series(plan, step),
        exact=exact_curve(step) if step.op in REPORTED_ACTIVATION_OPS else None,
        hybrid=_hybrid(step))


def read_facts(plan: Plan) -> ReportFacts:
    """Every value the text and HTML reports show, read once from ``plan``."""
    return ReportFacts(
        summary=_summary(plan), passes=_passes(plan), ckks=ckks_parameters(plan),
        bfv=_bfv(plan), rotation_key_count=rotation_key_count(plan), key_sizes=key_sizes(plan),
        layout=_layout(plan), cost=_cost(plan), latency=predicted_latency(plan),
        degrees=_degrees(plan), select=_select(plan), calibration=_calibration(plan),
        steps=tuple(step_facts(plan, i, s) for i, s in enumerate(plan.steps)),
        training=_training(plan), protocol_choice=_protocol_choice(plan),
        schedule_choice=_schedule_choice(plan), bootstrap_precision=_precision(plan))


def _precision(plan: Plan) -> str | None:
    """The precision pass's finding in one line (``passes/precision.py``)."""
    found = plan.analysis.get("precision")
    if not isinstance(found, Mapping):
        return None
    line = (f"refresh error ≤ {found['refresh_max_error']:.2g} (Gaussian sigma "
            f"{found['sigma']:.2g}): top-1 kept on {found['agreement']:.2f} % of "
            f"{found['images']} calibration images (required {found['required_agreement']:g} "
            f"%), mean |Δ logit| {found['mean_logit_change']:.2g}, max "
            f"{found['max_logit_change']:.2g}, imaginary std "
            f"{found.get('imaginary_std', 0.0):.2g}")
    return line if found["holds"] else f"INSUFFICIENT: {line}"


def _protocol_choice(plan: Plan) -> ProtocolChoice | None:
    choice = plan.analysis.get("protocol_choice")
    if not isinstance(choice, Mapping):
        return None
    return ProtocolChoice(str(choice.get("network")), str(choice.get("objective")),
                          tuple(choice.get("rows", ())), str(choice.get("chosen")),
                          str(choice.get("reason")),
                          bool(choice.get("assumed_default_network")))


def profile_facts(plan: Plan, profile: Mapping[str, Any]) -> Profile:
    """Predicted (the cost pass's ``estimated_seconds``) vs measured seconds per step of a
    recorded run (:func:`picompile.profile.load_profile`)."""
    predicted = {s.name: s.meta.get("estimated_seconds") for s in plan.steps}
    rows = tuple(ProfileRow(row["step"], row["op"], predicted.get(row["step"]), row["seconds"])
                 for row in profile["steps"])
    return Profile(profile["backend"], profile["samples"], rows)


def _schedule_choice(plan: Plan) -> tuple[str, ...]:
    """One line per schedule the compiler compared (``picompile/schedule.py``)."""
    choice = plan.analysis.get("schedule_choice")
    if not choice:
        return ()
    lines = []
    for row in choice["rows"]:
        mark = "chosen" if row["schedule"] == choice["chosen"] else "not chosen"
        if not row["runnable"]:
            lines.append(f"{row['schedule']}: not runnable ({row['reason']})")
            continue
        memory = row["predicted_memory_bytes"]
        lines.append(
            f"{row['schedule']} ({mark}): ring 2^{int(row['ring_dimension']).bit_length() - 1}, "
            f"depth {row['depth']}, {row['bootstraps']} bootstraps, predicted "
            f"{row['predicted_seconds']:.1f} s"
            + ("" if memory is None else f", {memory / 2**30:.1f} GiB")
            + (f" — {row['reason']}" if row.get("reason") else ""))
    return tuple(lines)
