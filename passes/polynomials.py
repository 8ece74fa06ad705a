"""Recognise polynomial activations written with standard ONNX ops (part of ``canonicalize``).

Reads: the frontend IR (ONNX op names): ``Mul``, ``Add``, ``Sub``, ``Div``, ``Pow`` (constant
integer exponent), ``Neg`` over one runtime tensor and constants — ``Mul(x, x)``, ``Pow(x, 2)``,
per-channel ``Mul``/``Add`` by constants, Horner's scheme, in any order an exporter writes them
(``picompile finetune``'s export, or e.g. a torch model trained with ``x² + x`` activations).
Writes: each maximal such subgraph of degree ≥ 2 whose intermediate values nothing else reads
becomes one ``Polynomial`` node on its base tensor: attrs ``function="polynomial"``,
``method="onnx"``, ``degree``, ``basis="chebyshev"``; ``meta["coefficients"]`` (rows = 1 or
channels, the exact power coefficients re-expressed as a Chebyshev series, no fit),
``meta["interval"]`` ([-1, 1] until the ``calibrate`` pass measures the input's range — the series
is the same polynomial on any interval), ``meta["recognized"]`` (the power coefficients and the ONNX
nodes it replaces) and ``meta["onnx_input"]`` (the base tensor, for calibration).

Coefficients must be constant over every axis but the channel axis (1); otherwise the
subgraph is left alone (and canonicalize reports the product of two tensors it cannot run).

Partial ReLUs (:func:`recognize_partial_relu`, after :func:`recognize`): the form ``picompile
finetune --relu-budget`` exports for a layer where some channels keep the exact ReLU,
``relu(x) + m·(p(x) − relu(x))`` (``Add(Relu(x), Mul(Sub(P(x), Relu(x)), m))``, operands of Add
and Mul in either order) with ``m`` a constant 0/1 per channel, becomes the Polynomial node of
``p`` with ``meta["relu_channels"]`` (1 where the channel stays an exact ReLU, 0 where it is the
polynomial): one activation step, whose exact channels only the hybrid protocol can evaluate.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from picompile.approx.basis import power_to_chebyshev
from picompile.ir import Graph, Node

#: ONNX ops a polynomial expression may be written with.
ARITHMETIC = frozenset({"Mul", "Add", "Sub", "Div", "Pow", "Neg"})
#: Highest degree recognised.
MAX_DEGREE = 31
DEFAULT_INTERVAL = (-1.0, 1.0)
#: Margin on each side of a measured range (``approximate.RANGE_MARGIN``: the same rule).
RANGE_MARGIN = 0.05


@dataclass
class Expression:
    """``sum_k coefficients[k] · base^k`` and the ONNX nodes that compute it."""

    base: str
    coefficients: list[np.ndarray]
    nodes: list[str]

    @property
    def degree(self) -> int:
        return len(self.coefficients) - 1


def _add(a: Expression, b: Expression, sign: float = 1.0) -> Expression:
    size = max(len(a.coefficients), len(b.coefficients))
    zero = np.zeros(())
    coefficients = [(a.coefficients[k] if k < len(a.coefficients) else zero)
                    + sign * (b.coefficients[k] if k < len(b.coefficients) else zero)
                    for k in range(size)]
    return Expression(a.base, coefficients, a.nodes + b.nodes)


def _multiply(a: Expression, b: Expression) -> Expression:
    coefficients = [np.zeros(()) for _ in range(a.degree + b.degree + 1)]
    for i, ca in enumerate(a.coefficients):
        for j, cb in enumerate(b.coefficients):
            coefficients[i + j] = coefficients[i + j] + ca * cb
    return Expression(a.base, coefficients, a.nodes + b.nodes)


def _scale(a: Expression, factor: np.ndarray) -> Expression:
    return Expression(a.base, [c * factor for c in a.coefficients], list(a.nodes))


def _constant(value: np.ndarray, base: str) -> Expression:
    return Expression(base, [np.asarray(value, dtype=np.float64)], [])


def _combine(graph: Graph, node: Node, table: dict[str, Expression]) -> Expression | None:
    """The expression ``node`` computes, or None when it is not a polynomial of one tensor."""
    constants = [graph.constant(v) for v in node.inputs]
    variables = [table.get(v, Expression(v, [np.zeros(()), np.ones(())], []))
                 for v, c in zip(node.inputs, constants, strict=True) if c is None]
    if not variables or len({e.base for e in variables}) != 1:
        return None
    base = variables[0].base
    terms = [_constant(c, base) if c is not None else variables.pop(0) for c in constants]
    op = node.op
    result: Expression | None = None
    if op == "Neg" and len(terms) == 1:
        result = _scale(terms[0], np.asarray(-1.0))
    elif op in ("Add", "Sub") and len(terms) == 2:
        result = _add(terms[0], terms[1], 1.0 if op == "Add" else -1.0)
    elif op == "Mul" and len(terms) == 2:
        result = _multiply(terms[0], terms[1])
    elif op == "Div" and len(terms) == 2 and constants[1] is not None:
        result = _scale(terms[0], 1.0 / np.asarray(constants[1], dtype=np.float64))
    elif op == "Pow" and len(terms) == 2 and constants[1] is not None:
        exponent = np.asarray(constants[1]).reshape(-1)
        if exponent.size != 1 or exponent[0] != round(float(exponent[0])) or not (
                1 <= exponent[0] * terms[0].degree <= MAX_DEGREE):
            return None
        result = Expression(base, list(terms[0].coefficients), list(terms[0].nodes))
        for _ in range(int(exponent[0]) - 1):
            result = _multiply(result, terms[0])
        result.nodes = list(terms[0].nodes)
    if result is None or result.degree > MAX_DEGREE:
        return None
    result.nodes = list(dict.fromkeys(result.nodes + [node.name]))
    return result


def _per_channel(value: np.ndarray, shape: tuple[int, ...]) -> np.ndarray | None:
    """A constant broadcast to ``shape``: its value per channel (axis 1; one value for a rank-1
    shape), or None when it does not broadcast or varies along another axis."""
    try:
        full = np.broadcast_to(value, shape)
    except ValueError:
        return None
    if len(shape) >= 2:
        per_channel = np.moveaxis(full, 1, 0).reshape(shape[1], -1)
    else:
        per_channel = full.reshape(1, -1)
    if not np.all(per_channel == per_channel[:, :1]):
        return None
    return per_channel[:, 0]


def channel_rows(graph: Graph, expression: Expression, output: str) -> np.ndarray | None:
    """(rows, degree+1) power coefficients, one row or one per channel (axis 1), or None when
    a coefficient varies along another axis or broadcasting changes the base's shape."""
    shape = graph.shape(output)
    if graph.shape(expression.base) != shape:
        return None
    columns = []
    for coefficient in expression.coefficients:
        column = _per_channel(coefficient, shape)
        if column is None:
            return None
        columns.append(column)
    rows = np.stack(columns, axis=1).astype(np.float64)
    return rows[:1] if np.all(rows == rows[:1]) else rows


def _replace(graph: Graph, expression: Expression, output: str, rows: np.ndarray) -> Node:
    nodes = [graph.node(n) for n in expression.nodes]
    for node in nodes:
        graph.remove_node(node.name)
    degree = rows.shape[1] - 1
    while degree > 0 and np.all(rows[:, degree] == 0):
        degree -= 1
    rows = rows[:, :degree + 1]
    polynomial = Node(nodes[-1].name, "Polynomial", [expression.base], [output],
                      {"function": "polynomial", "method": "onnx", "degree": degree,
                       "basis": "chebyshev"},
                      source=[s for n in nodes for s in n.source],
                      meta={"onnx_input": expression.base})
    set_power_coefficients(polynomial, rows, DEFAULT_INTERVAL)
    polynomial.meta["recognized"] = {"power_coefficients": rows.tolist(),
                                     "onnx_nodes": [n.name for n in nodes]}
    graph.add_node(polynomial)
    return polynomial


def set_power_coefficients(node: Node, rows: np.ndarray, interval: tuple[float, float]) -> None:
    """Store power-basis ``rows`` as the node's Chebyshev series on ``interval`` (exact up to
    round-off: the same polynomial, no fit)."""
    node.meta["coefficients"] = power_to_chebyshev(rows, interval)
    node.meta["interval"] = np.asarray(interval, dtype=np.float64)


def calibrate_interval(node: Node, low: float, high: float) -> None:
    """Re-express a recognised polynomial on its measured input range [low, high] plus the
    margin the ``approximate`` pass gives its fits (the polynomial itself is unchanged)."""
    if high - low < 1e-9:
        low, high = low - 1.0, high + 1.0
    margin = RANGE_MARGIN * (high - low)
    rows = np.asarray(node.meta["recognized"]["power_coefficients"], dtype=np.float64)
    set_power_coefficients(node, rows, (low - margin, high + margin))


def recognize(graph: Graph) -> int:
    """Replace every polynomial subgraph of degree ≥ 2 by a Polynomial node; returns how many."""
    table: dict[str, Expression] = {}
    order = graph.nodes()
    for node in order:
        if node.op in ARITHMETIC and len(node.outputs) == 1:
            expression = _combine(graph, node, table)
            if expression is not None:
                table[node.outputs[0]] = expression
    replaced: set[str] = set()
    count = 0
    for node in reversed(order):
        output = node.outputs[0] if node.outputs else None
        expression = table.get(output) if output is not None else None
        if expression is None or expression.degree < 2 or replaced & set(expression.nodes):
            continue
        region = set(expression.nodes)
        inner = {v for n in expression.nodes for v in graph.node(n).outputs} - {output}
        if inner & set(graph.outputs) or any(
                c.name not in region for v in inner for c in graph.consumers(v)):
            continue
        rows = channel_rows(graph, expression, output)
        if rows is None:
            continue
        replaced |= region
        _replace(graph, expression, output, rows)
        count += 1
    return count


def _single_consumer(graph: Graph, value: str) -> Node | None:
    consumers = graph.consumers(value)
    if len(consumers) != 1 or value in graph.outputs:
        return None
    return consumers[0]


def _partial_relu(graph: Graph, polynomial: Node) -> tuple[list[Node], np.ndarray] | None:
    """(nodes replaced, 0/1 ReLU mask per channel) when ``polynomial`` is the p of
    ``relu(x) + m·(p(x) − relu(x))``, else None."""
    base, value = polynomial.inputs[0], polynomial.outputs[0]
    sub = _single_consumer(graph, value)
    if sub is None or sub.op != "Sub" or sub.inputs[0] != value:
        return None
    relu = graph.producer(sub.inputs[1])
    if relu is None or relu.op != "Relu" or relu.inputs != [base]:
        return None
    mul = _single_consumer(graph, sub.outputs[0])
    if mul is None or mul.op != "Mul" or len(mul.inputs) != 2:
        return None
    mask = graph.constant(mul.inputs[1] if mul.inputs[0] == sub.outputs[0] else mul.inputs[0])
    add = _single_consumer(graph, mul.outputs[0])
    if mask is None or add is None or add.op != "Add" or \
            sorted(add.inputs) != sorted([relu.outputs[0], mul.outputs[0]]):
        return None
    if {n.name for n in graph.consumers(relu.outputs[0])} != {sub.name, add.name} or \
            relu.outputs[0] in graph.outputs:
        return None
    shape = graph.shape(base)
    mask = np.asarray(mask, dtype=np.float64)
    if len(shape) < 2:
        return None
    channels = _per_channel(mask, shape)
    if channels is None or not np.all(np.isin(channels, (0.0, 1.0))):
        return None
    return [relu, sub, mul, add], (channels == 0.0).astype(np.float64)


def recognize_partial_relu(graph: Graph) -> int:
    """Fold every ``relu(x) + m·(p(x) − relu(x))`` into its Polynomial node (``meta
    ["relu_channels"]``); returns how many."""
    count = 0
    for node in graph.nodes():
        if node.op != "Polynomial" or "recognized" not in node.meta:
            continue
        found = _partial_relu(graph, node)
        if found is None:
            continue
        replaced, relu_channels = found
        output = replaced[-1].outputs[0]
        for other in replaced:
            graph.remove_node(other.name)
        graph.remove_node(node.name)
        node.outputs = [output]
        node.source = node.source + [s for n in replaced for s in n.source]
        node.meta["relu_channels"] = relu_channels
        node.meta["recognized"]["onnx_nodes"] += [n.name for n in replaced]
        graph.add_node(node)
        count += 1
    return count
