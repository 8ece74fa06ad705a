"""Pass manager and the compile pipeline: ONNX → IR → passes → Plan.

Reads: an ONNX model and :class:`CompileOptions`.
Writes: a :class:`~picompile.plan.Plan` whose ``passes`` list records, per pass, its wall time,
options and diagnostics (the frontend is recorded as the first phase).

Each pass is a module in ``picompile.passes`` exposing ``NAME`` and
``run(graph, context) -> list[str]`` (diagnostics); it reads and annotates the IR and nothing
else. :func:`picompile.lowering.lower_to_plan` turns the final IR into the plan.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from types import ModuleType
from typing import Any

import onnx

from picompile import schedule
from picompile.calibration_data import CalibrationSet, load_calibration
from picompile.frontend import FrontendResult, import_onnx
from picompile.ir import Graph
from picompile.lowering import lower_to_plan
from picompile.passes import canonicalize
from picompile.plan import Plan


@dataclass
class CompileOptions:
    """User options of a compile (the CLI flags of ``picompile compile``)."""

    protocol: str = "fhe"
    calib: Any = None
    method: str = "wls"
    degree: int | None = None
    max_degree: int = 31
    accuracy_budget: float | None = None
    relu_budget: float | None = None
    quadratic_protocol: str = "beaver"   # hybrid degree-2 activations: beaver | flash
    correlations: str = "two-party"      # hybrid MPC correlations: two-party (OT) | dealer
    network: str | None = None           # --protocol auto: BANDWIDTH,RTT (deployment.py)
    allow_budget_miss: bool = False      # write the plan when the accuracy budget is missed
    activation_form: str = "auto"        # FHE ReLUs: auto | polynomial | composite (sign-based)
    range_margin: float = 0.25           # composite ReLUs: calibrated max |x| widened by this
    batch: int = 1                       # FHE: client inputs per ciphertext (0: as many as fit)
    schedule: str = "auto"               # FHE: auto | bootstrapped | leveled (schedule.py)
    scaling_bits: int | None = None      # bootstrapped FHE: 45 | 46 | 50 (None: levels picks)
    slots: int | None = None             # FHE: most slots per ciphertext (None: ring / bootstrap)
    sensitivity_samples: int = 64
    insecure_test_params: bool = False
    seed: int = 0

    def validate(self) -> None:
        from picompile.errors import CalibrationError, OptionError

        if self.protocol not in ("fhe", "hybrid", "auto"):
            raise OptionError(f"unknown protocol {self.protocol!r}: use fhe, hybrid or auto")
        if self.network is not None:
            from picompile.deployment import Network

            if self.protocol != "auto":
                raise OptionError("--network is for --protocol auto (it weighs the predicted "
                                  "costs of both protocols)")
            Network.parse(self.network)
        if self.activation_form not in ("auto", "polynomial", "composite"):
            raise OptionError(f"unknown activation form {self.activation_form!r}: use auto, "
                              "polynomial or composite")
        if self.schedule not in ("auto", "bootstrapped", "leveled"):
            raise OptionError(f"unknown schedule {self.schedule!r}: use auto, bootstrapped or "
                              "leveled")
        if self.batch < 0 or (self.batch != 1 and self.protocol != "fhe"):
            raise OptionError("--batch is a count of inputs per ciphertext (0: as many as fit) "
                              "and needs --protocol fhe")
        if self.slots is not None and (self.slots < 8 or self.slots & (self.slots - 1)
                                       or self.protocol == "hybrid"):
            raise OptionError("--slots is a power of two ≥ 8 (slots per CKKS ciphertext) for "
                              "FHE plans")
        if self.activation_form == "composite" and self.degree is not None:
            raise OptionError("composite ReLUs are chosen by the degree search: give an "
                              "--accuracy-budget instead of a uniform --degree")
        from picompile.passes.bootstrap_placement import BOOTSTRAP_PRECISIONS

        if self.scaling_bits is not None and self.scaling_bits not in dict(BOOTSTRAP_PRECISIONS):
            raise OptionError(f"--scaling-bits must be one of "
                              f"{', '.join(str(b) for b, _ in BOOTSTRAP_PRECISIONS)}")
        if not 0.0 <= self.range_margin <= 10.0:
            raise OptionError("--range-margin must be in 0..10 (a fraction of the calibrated "
                              "max |x|)")
        from picompile.plan.contract import CORRELATIONS

        if self.correlations not in CORRELATIONS:
            raise OptionError(f"unknown correlations {self.correlations!r}: use "
                              + " or ".join(CORRELATIONS))
        if self.quadratic_protocol not in ("beaver", "flash"):
            raise OptionError(f"unknown quadratic protocol {self.quadratic_protocol!r}: use "
                              "beaver or flash")
        if self.degree is not None and self.accuracy_budget is not None:
            raise OptionError("give either a uniform --degree or an --accuracy-budget, not both")
        if self.degree is not None and not 1 <= self.degree <= self.max_degree:
            raise OptionError(f"--degree must be in 1..{self.max_degree}")
        if self.accuracy_budget is not None and self.accuracy_budget < 0:
            raise OptionError("--accuracy-budget must be >= 0 (accuracy points)")
        if self.relu_budget is not None and self.relu_budget < 0:
            raise OptionError("--relu-budget must be >= 0")
        wants_calibration = (self.degree is not None or self.accuracy_budget is not None
                             or self.relu_budget is not None)
        if self.protocol in ("hybrid", "auto") and self.calib is None:
            raise OptionError(f"{self.protocol} plans need --calib: fixed-point bits and "
                              "plaintext moduli come from the calibrated value ranges")
        if wants_calibration and self.calib is None:
            raise CalibrationError("polynomial activations need calibration data: pass --calib "
                                   "DATA.npy|.npz")

    def summary(self) -> dict[str, Any]:
        """JSON-able view (calibration data described, not embedded)."""
        doc = asdict(self)
        calib = doc.pop("calib")
        doc["calib"] = None if calib is None else (
            str(calib) if isinstance(calib, str | Path) else "in-memory arrays")
        return doc


@dataclass
class CompileContext:
    """What passes share besides the graph: options, calibration data, plan-level analysis."""

    options: CompileOptions
    reference_model: bytes = b""
    calibration: CalibrationSet | None = None
    analysis: dict[str, Any] = field(default_factory=dict)
    progress: Callable[[str], None] | None = None


@dataclass
class PassRecord:
    name: str
    seconds: float
    diagnostics: list[str] = field(default_factory=list)


class PassManager:
    """Runs passes in order over a graph, timing each and collecting diagnostics."""

    def __init__(self, passes: Sequence[ModuleType]) -> None:
        self.passes = list(passes)

    def run(self, graph: Graph, context: CompileContext) -> list[PassRecord]:
        records = []
        for module in self.passes:
            if context.progress is not None:
                context.progress(module.NAME)
            start = time.perf_counter()
            diagnostics = module.run(graph, context) or []
            records.append(PassRecord(module.NAME, time.perf_counter() - start, diagnostics))
        return records


def default_passes(options: CompileOptions) -> list[ModuleType]:
    """The pass pipeline the options ask for (docs/architecture.md, "The pipeline")."""
    from picompile.passes import approximate, calibrate, degrees, select

    passes: list[ModuleType] = [canonicalize]
    if options.calib is None:
        return passes  # exact activations: a plan for the plain backend and inspection
    passes.append(calibrate)
    if options.relu_budget is not None:
        passes.append(select)
    hybrid = options.protocol == "hybrid"
    if options.degree is None and not hybrid:
        passes.append(degrees)
    if not hybrid or options.degree is not None or options.relu_budget is not None:
        passes.append(approximate)  # hybrid without --degree/--relu-budget: all ReLUs exact
    if options.protocol == "fhe":
        from picompile.passes import cost, fold_squares, layout, levels, precision

        passes += [fold_squares, levels, precision, layout, cost]
    else:
        from picompile.passes import hybrid_parameters, layout

        passes += [hybrid_parameters, layout]
    return passes


def front(model: str | Path | bytes | onnx.ModelProto, options: CompileOptions,
          on_pass: Callable[[str], None] | None = None
          ) -> tuple[FrontendResult, CompileContext, PassRecord]:
    """The frontend and the calibration data: the IR, the context the passes share, and the
    frontend's record."""
    start = time.perf_counter()
    if on_pass is not None:
        on_pass("frontend")
    frontend = import_onnx(model)
    context = CompileContext(options, frontend.reference_model, progress=on_pass)
    if options.calib is not None:
        shapes = {name: frontend.graph.shape(name) for name in frontend.graph.inputs}
        context.calibration = load_calibration(options.calib, shapes)
    record = PassRecord("frontend", time.perf_counter() - start,
                        [f"{len(frontend.graph)} server ops, head: "
                         f"{', '.join(frontend.head_ops) or 'none'}"])
    return frontend, context, record


def calibrated_graph(model: str | Path | bytes | onnx.ModelProto, calib: Any
                     ) -> tuple[FrontendResult, CompileContext]:
    """The canonical IR with every activation calibrated on ``calib``, as ``compile`` builds
    it before approximating (what ``picompile finetune`` trains)."""
    from picompile.passes import calibrate

    options = CompileOptions(calib=calib)
    frontend, context, _ = front(model, options)
    PassManager([canonicalize, calibrate]).run(frontend.graph, context)
    return frontend, context


def compile_model(model: str | Path | bytes | onnx.ModelProto,
                  options: CompileOptions | None = None,
                  on_pass: Callable[[str], None] | None = None) -> Plan:
    """Compile an ONNX model into a plan (the pipeline behind ``picompile.compile``)."""
    options = options or CompileOptions()
    options.validate()
    if options.protocol == "auto":
        return compile_auto(model, options, on_pass)
    if isinstance(model, onnx.ModelProto):
        model = model.SerializeToString()
    frontend, context, record = front(model, options, on_pass)
    records = [record]
    records += PassManager(default_passes(options)).run(frontend.graph, context)
    plan = lower_to_plan(frontend.graph, frontend, protocol=options.protocol,
                         options=options.summary(), analysis=context.analysis,
                         records=[asdict(r) for r in records])
    if options.protocol == "fhe" and options.schedule == "auto" and schedule.applies(plan):
        plan = compile_leveled_alternative(model, options, plan, on_pass)
    return plan


def compile_leveled_alternative(model: str | Path | bytes, options: CompileOptions,
                                bootstrapped: Plan,
                                on_pass: Callable[[str], None] | None = None) -> Plan:
    """``--schedule auto`` on a bootstrapped degree-2 plan: compile it leveled too (no
    bootstrap) and return the plan with the lower predicted latency that fits this machine,
    the comparison in its ``analysis["schedule_choice"]``."""
    from picompile.errors import PicompileError

    floor = schedule.leveled_key_floor(bootstrapped, options.insecure_test_params)
    leveled = None
    if floor > schedule.memory_limit():  # not even compiled: its layout alone is gigabytes
        leveled_row = schedule.schedule_row(
            "leveled", None, f"not compiled: its minimum key set alone needs {floor / 2**30:.1f} "
            f"GiB, above {schedule.memory_limit() / 2**30:.1f} GiB of this machine")
    else:
        try:
            leveled = compile_model(model, replace(options, schedule="leveled"),
                                    on_pass=None if on_pass is None else
                                    (lambda name: on_pass(f"leveled: {name}")))
            leveled_row = schedule.schedule_row("leveled", leveled)
        except PicompileError as exc:
            leveled_row = schedule.schedule_row("leveled", None, str(exc))
    choice = schedule.choose_schedule([schedule.schedule_row("bootstrapped", bootstrapped),
                                       leveled_row])
    plan = leveled if choice.chosen == "leveled" and leveled is not None else bootstrapped
    plan.analysis["schedule_choice"] = choice.to_json()
    return plan


def compile_auto(model: str | Path | bytes | onnx.ModelProto, options: CompileOptions,
                 on_pass: Callable[[str], None] | None = None) -> Plan:
    """``--protocol auto``: compile an FHE and a hybrid plan with the same options, predict
    each one's cost on the network (:mod:`picompile.deployment`) and return the cheaper plan,
    the comparison in its ``analysis["protocol_choice"]``."""
    from picompile.deployment import (
        DEFAULT_NETWORK,
        Network,
        choose_protocol,
        fhe_cost,
        hybrid_cost,
    )
    from picompile.errors import PicompileError

    network = Network.parse(options.network or DEFAULT_NETWORK)
    if isinstance(model, onnx.ModelProto):
        model = model.SerializeToString()
    plans: dict[str, Plan] = {}
    costs: dict[str, Any] = {}
    for protocol, cost in (("fhe", fhe_cost), ("hybrid", hybrid_cost)):
        single = replace(options, protocol=protocol, network=None)
        try:
            plans[protocol] = compile_model(
                model, single, on_pass=None if on_pass is None else
                (lambda name, p=protocol: on_pass(f"{p}: {name}")))
            costs[protocol] = cost(plans[protocol])
        except PicompileError as exc:
            costs[protocol] = str(exc)
    choice = choose_protocol(costs, network)
    plan = plans[choice.chosen]
    plan.analysis["protocol_choice"] = {**choice.to_json(),
                                        "assumed_default_network": options.network is None}
    return plan
