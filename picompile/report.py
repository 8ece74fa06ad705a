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

from picompile.plan import Plan, Step


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


def render_text(plan: Plan, width: int = 160) -> str:
    """The whole text report."""
    buffer = io.StringIO()
    console = Console(file=buffer, width=width, force_terminal=False, color_system=None)
    for table in (summary_table(plan), passes_table(plan), steps_table(plan)):
        console.print(table)
    return buffer.getvalue()
