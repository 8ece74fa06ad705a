"""Pass manager and the compile pipeline: ONNX → IR → passes → Plan.

Reads: an ONNX model and :class:`CompileOptions`.
Writes: a :class:`~picompile.plan.Plan` whose ``passes`` list records, per pass, its wall time,
options and diagnostics (the frontend is recorded as the first phase).

Each pass is a module in ``picompile.passes`` exposing ``NAME`` and
``run(graph, options) -> list[str]`` (diagnostics); it reads and annotates the IR and nothing
else. :func:`lower_to_plan` turns the final IR into plan steps and arrays.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import onnx

from picompile.frontend import FrontendResult, import_onnx
from picompile.ir import Graph
from picompile.passes import canonicalize
from picompile.plan import HEAD_ARRAY, HeadSpec, Plan, Step, TensorSpec

#: Node meta keys that hold parameter arrays (lowered into the plan's arrays).
PARAMETER_KEYS = ("weight", "bias", "scale", "shift", "slope")


@dataclass
class CompileOptions:
    """Options shared by the passes (later issues add approximation/layout/level options)."""

    protocol: str = "fhe"
    insecure_test_params: bool = False
    progress: bool = False


@dataclass
class PassRecord:
    name: str
    seconds: float
    diagnostics: list[str] = field(default_factory=list)


class PassManager:
    """Runs passes in order over a graph, timing each and collecting diagnostics."""

    def __init__(self, passes: Sequence[ModuleType]) -> None:
        self.passes = list(passes)

    def run(self, graph: Graph, options: CompileOptions,
            on_pass: Callable[[str], None] | None = None) -> list[PassRecord]:
        records = []
        for module in self.passes:
            if on_pass is not None:
                on_pass(module.NAME)
            start = time.perf_counter()
            diagnostics = module.run(graph, options) or []
            records.append(PassRecord(module.NAME, time.perf_counter() - start, diagnostics))
        return records


def default_passes(options: CompileOptions) -> list[ModuleType]:
    return [canonicalize]


def lower_to_plan(graph: Graph, frontend: FrontendResult, options: CompileOptions,
                  records: list[PassRecord]) -> Plan:
    """Turn the final IR into plan steps, tensor specs and parameter arrays."""
    arrays: dict[str, np.ndarray] = {}
    steps: list[Step] = []
    for node in graph.nodes():
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
        meta = {k: v for k, v in node.meta.items() if k not in PARAMETER_KEYS}
        steps.append(Step(node.name, node.op, inputs, list(node.outputs), dict(node.attrs),
                          params, list(node.source), meta))
    runtime_values = {v for n in graph.nodes() for v in n.inputs + n.outputs}
    runtime_values |= set(graph.inputs) | set(graph.outputs)
    values = {
        name: TensorSpec(name, list(v.shape), v.dtype)
        for name, v in graph.values.items()
        if name in runtime_values and not v.is_constant
    }
    head = None
    if frontend.head_model is not None:
        arrays[HEAD_ARRAY] = np.frombuffer(frontend.head_model, dtype=np.uint8)
        head = HeadSpec(graph.outputs[0], list(frontend.head_outputs), list(frontend.head_ops))
    return Plan(
        model={"name": frontend.model_name, "sha256": frontend.model_sha256,
               "opset": frontend.opset, "producer": frontend.producer},
        protocol=options.protocol,
        inputs=[values[name] for name in graph.inputs],
        outputs=[values[name] for name in graph.outputs],
        values=values,
        steps=steps,
        arrays=arrays,
        head=head,
        model_outputs=list(frontend.model_outputs),
        passes=[asdict(r) for r in records],
        security={"activations": "exact", "options": asdict(options)},
    )


def compile_model(model: str | Path | bytes | onnx.ModelProto,
                  options: CompileOptions | None = None,
                  on_pass: Callable[[str], None] | None = None) -> Plan:
    """Compile an ONNX model into a plan (the pipeline behind ``picompile.compile``)."""
    options = options or CompileOptions()
    start = time.perf_counter()
    if on_pass is not None:
        on_pass("frontend")
    frontend = import_onnx(model)
    records = [PassRecord("frontend", time.perf_counter() - start,
                          [f"{len(frontend.graph)} server ops, head: "
                           f"{', '.join(frontend.head_ops) or 'none'}"])]
    records += PassManager(default_passes(options)).run(frontend.graph, options, on_pass)
    return lower_to_plan(frontend.graph, frontend, options, records)


def option_dict(options: CompileOptions) -> dict[str, Any]:
    return asdict(options)
