"""Lowering: the final IR and the passes' annotations → a :class:`~picompile.plan.Plan`.

Reads: an IR :class:`~picompile.ir.Graph` whose nodes carry the passes' annotations in
``node.meta`` (parameter arrays, ``level_in``/``level_out``/``bootstrap_after`` from ``levels``,
``layout``/``period``/slot vectors from ``layout``, ``hybrid``/``hybrid_layout``/
``public_matrix`` from ``hybrid_parameters`` and ``layout``), the plan-level analysis
(``ckks``, ``bfv``, ``layout``, ``cost``), the frontend's result and the pass records.
Writes: a Plan. This is the one place where compiler annotations become the typed contract
(:mod:`picompile.plan.contract`): parameter arrays go to ``Plan.arrays``, what the runtime
reads goes to ``Plan.ckks``/``bfv``/``layout`` and ``Step.fhe``/``hybrid``, and the evaluation
basis of every CKKS polynomial is decided here (power-basis coefficients are stored, so the
runtime never converts bases). Everything else stays in ``Step.meta``/``Plan.analysis`` for
reports. Keys starting with ``_`` are compile-time only and are dropped.

A graph lowered without the plan-level analysis (:class:`picompile.simulate.GraphSimulator`
during compilation) keeps every annotation in ``Step.meta``: the passes that measure on such a
plan read their own annotations there.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Protocol

import numpy as np

from picompile.approx.basis import chebyshev_to_power
from picompile.cost import power_basis_applies, scales_for_free
from picompile.ir import Graph, Node
from picompile.plan import HEAD_ARRAY, HeadSpec, Plan, Step, TensorSpec
from picompile.plan.contract import (
    CHEBYSHEV_BASIS,
    POWER_BASIS,
    BfvParameters,
    BlockedLinear,
    CkksParameters,
    FheStep,
    HybridStep,
    LinearLayout,
    Refresh,
    SlotLayout,
    build,
)

#: Node meta keys that hold parameter arrays (lowered into the plan's arrays).
PARAMETER_KEYS = ("weight", "bias", "scale", "shift", "slope", "coefficients", "interval",
                  "diagonals", "bias_slots", "constant_slots", "coefficient_slots",
                  "relu_channels", "input_slots", "output_slots")
#: Plan-level analysis entries that become typed records (and leave ``analysis``).
CONTRACT_ANALYSIS = ("ckks", "bfv", "layout")


class FrontendFacts(Protocol):
    """What lowering reads of the frontend's result (:class:`picompile.frontend.FrontendResult`)."""

    model_name: str
    model_sha256: str
    opset: int
    producer: str
    head_model: bytes | None
    head_outputs: Sequence[str]
    head_ops: Sequence[str]
    model_outputs: Sequence[str]
    finetune: Mapping[str, Any] | None


def lower_to_plan(graph: Graph, frontend: FrontendFacts | None = None, *,
                  protocol: str = "fhe", options: Mapping[str, Any] | None = None,
                  analysis: Mapping[str, Any] | None = None,
                  records: Sequence[Mapping[str, Any]] = ()) -> Plan:
    """Turn the final IR into plan steps, tensor specs, parameter arrays and typed records."""
    analysis = dict(analysis or {})
    fhe_plan = protocol == "fhe" and "ckks" in analysis
    hybrid_plan = protocol == "hybrid" and "bfv" in analysis
    arrays: dict[str, np.ndarray] = {}
    steps = [_lower_node(graph, node, arrays, fhe_plan, hybrid_plan) for node in graph.nodes()]
    runtime_values = {v for n in graph.nodes() for v in n.inputs + n.outputs}
    runtime_values |= set(graph.inputs) | set(graph.outputs)
    values = {
        name: TensorSpec(name, list(v.shape), v.dtype)
        for name, v in graph.values.items()
        if name in runtime_values and not v.is_constant
    }
    head = None
    if frontend is not None and frontend.head_model is not None:
        arrays[HEAD_ARRAY] = np.frombuffer(frontend.head_model, dtype=np.uint8)
        head = HeadSpec(graph.outputs[0], list(frontend.head_outputs), list(frontend.head_ops))
    model = {} if frontend is None else {
        "name": frontend.model_name, "sha256": frontend.model_sha256, "opset": frontend.opset,
        "producer": frontend.producer}
    if frontend is not None and frontend.finetune:
        model["finetune"] = dict(frontend.finetune)
    approximated = any(s.op == "Polynomial" for s in steps)
    return Plan(
        model=model,
        protocol=protocol,
        inputs=[values[name] for name in graph.inputs],
        outputs=[values[name] for name in graph.outputs],
        values=values,
        steps=steps,
        arrays=arrays,
        head=head,
        model_outputs=[] if frontend is None else list(frontend.model_outputs),
        passes=[dict(r) for r in records],
        security={"activations": "polynomial" if approximated else "exact",
                  "options": dict(options or {})},
        analysis=json_ready({k: v for k, v in analysis.items() if k not in CONTRACT_ANALYSIS}),
        ckks=_ckks_parameters(analysis) if fhe_plan else None,
        bfv=(build(BfvParameters, json_ready(analysis["bfv"]), "bfv parameters")
             if hybrid_plan else None),
        layout=(build(SlotLayout, json_ready(analysis["layout"]), "layout")
                if "layout" in analysis else None),
    )


def _lower_node(graph: Graph, node: Node, arrays: dict[str, np.ndarray], fhe_plan: bool,
                hybrid_plan: bool) -> Step:
    params: dict[str, str] = {}
    for key in PARAMETER_KEYS:
        if key in node.meta:
            arrays[f"{node.name}.{key}"] = np.asarray(node.meta[key], dtype=np.float64)
            params[key] = f"{node.name}.{key}"
    inputs = []
    for value in node.inputs:
        data = graph.constant(value)
        if data is None:
            inputs.append(value)
        else:
            arrays[f"{node.name}.constant"] = np.asarray(data, dtype=np.float64)
            params["constant"] = f"{node.name}.constant"
    fhe = hybrid = None
    converted: set[str] = set()
    if fhe_plan:
        converted |= {"level_in", "level_out", "period", "layout", "bootstrap_after",
                      "blocked", "ciphertexts"}
        fhe = _fhe_step(node)
        if fhe.basis == POWER_BASIS and "coefficient_slots" not in params:
            arrays[f"{node.name}.power_coefficients"] = chebyshev_to_power(
                node.meta["coefficients"], node.meta["interval"], snap=True)
            params["power_coefficients"] = f"{node.name}.power_coefficients"
    if hybrid_plan and "hybrid" in node.meta:
        converted |= {"hybrid", "hybrid_layout", "public_matrix"}
        hybrid = _hybrid_step(node)
        if node.op == "Polynomial":
            arrays[f"{node.name}.power_coefficients"] = chebyshev_to_power(
                node.meta["coefficients"], node.meta["interval"])
            params["power_coefficients"] = f"{node.name}.power_coefficients"
    meta = {k: json_ready(v) for k, v in node.meta.items()
            if k not in PARAMETER_KEYS and k not in converted and not k.startswith("_")}
    return Step(node.name, node.op, inputs, list(node.outputs), dict(node.attrs), params,
                list(node.source), meta, fhe=fhe, hybrid=hybrid)


def _fhe_step(node: Node) -> FheStep:
    meta = node.meta
    basis = None
    if node.op == "Polynomial":
        a, b = (float(v) for v in np.asarray(meta["interval"]).ravel()[:2])
        per_channel = np.asarray(meta["coefficients"]).shape[0] > 1
        basis = POWER_BASIS if per_channel or power_basis_applies(
            int(node.attrs["degree"]), max(abs(a), abs(b))) else CHEBYSHEV_BASIS
    refresh = meta.get("bootstrap_after")
    layout = meta.get("layout")
    return FheStep(
        level_in=_optional_int(meta.get("level_in")),
        level_out=_optional_int(meta.get("level_out")),
        period=_optional_int(meta.get("period")),
        linear=None if layout is None else build(LinearLayout, json_ready(layout),
                                                 f"step {node.name!r} layout"),
        basis=basis,
        scales_for_free=scales_for_free(node.op, meta),
        bootstrap_after=None if refresh is None else Refresh(
            int(refresh["level_in"]), int(refresh["level_out"]),
            float(refresh.get("scale", 1.0))),
        blocks=int(meta.get("ciphertexts", 1)),
        blocked=None if "blocked" not in meta else build(
            BlockedLinear, json_ready(meta["blocked"]), f"step {node.name!r} blocked layout"),
    )


def _hybrid_step(node: Node) -> HybridStep:
    info = dict(json_ready(node.meta["hybrid"]))
    info["public_matrix"] = bool(node.meta.get("public_matrix", False))
    if "hybrid_layout" in node.meta:
        info["layout"] = json_ready(node.meta["hybrid_layout"])
    return build(HybridStep, info, f"step {node.name!r} hybrid")


def _ckks_parameters(analysis: Mapping[str, Any]) -> CkksParameters:
    doc = dict(json_ready(analysis["ckks"]))
    predicted = analysis.get("cost", {}).get("predicted_seconds")
    if predicted is not None:
        doc["predicted_seconds"] = float(predicted)
    return build(CkksParameters, doc, "ckks parameters")


def _optional_int(value: Any) -> int | None:
    return None if value is None else int(value)


def json_ready(value: Any) -> Any:
    """Plan-level analysis as JSON-able values (arrays become lists)."""
    if isinstance(value, dict):
        return {str(k): json_ready(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_ready(v) for v in value]
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    return value


