"""composite_relu — composite sign-based ReLUs: the degree search's candidates and their steps.

Reads: a calibrated ReLU node (``meta["_distribution"]``: its inputs' histogram and range), the
stage count, the range margin (``--range-margin``) and the degree search's cost table.
Writes: for the degree search, :class:`CompositeForm` (the sign design, the bound ``B``, the
weighted MSE under the layer's histogram, the error bounds and the predicted seconds); for the
approximate pass, :func:`expand` rewrites the node into plan steps:

    x ─► Polynomial (sign stage 1, on [−B, B]) ─► … ─► Polynomial (last stage: h = (1+sign)/2)
    x ──────────────────────────────────────────────────────────────► Product(x, h) = ReLU(x)

Each stage is an odd polynomial of degree 7 (three levels in the power basis) or 3 (two), so a
stage always fits between two bootstraps and the levels pass places bootstraps *inside* the
activation where its levels run out. The stage steps are named ``NAME/sign1`` … and the product
keeps the node's name and output. ``B`` is the calibrated max |x| widened by the range margin;
inputs beyond ±B are the documented failure mode (the report states B and the margin).
Library side: :mod:`picompile.approx.composite`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from picompile.approx.basis import power_to_chebyshev
from picompile.approx.composite import CompositeSign, design_sign, relu_error_bounds
from picompile.cost import CostTable, activation_cost, polynomial_depth
from picompile.ir import Graph, Node, Value

#: Stage degrees the degree search may choose, cheapest first (transition width tau ≈ 16 %,
#: 2.8 %, 0.47 % of B). Designs ending in a degree-3 stage (7∘7∘3: tau 6.5 %, 7∘7∘7∘3: 1.1 %)
#: save a level each but, offered too, led the Fashion ResNet-20 search to a plan with 88
#: bootstraps instead of 77: the level-share cost model does not see the real schedule.
STAGE_DESIGNS = ((7, 7), (7, 7, 7), (7, 7, 7, 7))
#: Default widening of the calibrated input range (fraction of max |x|).
DEFAULT_RANGE_MARGIN = 0.25
#: Activation ops with a composite form (ReLU(x) = x·h(x)).
COMPOSITE_OPS = frozenset({"Relu"})


@dataclass
class CompositeForm:
    """One composite candidate of one layer."""

    sign: CompositeSign
    bound: float
    margin: float
    error: float  # weighted MSE under the layer's histogram
    cost: float   # predicted seconds (stages + product)

    @property
    def stages(self) -> int:
        return len(self.sign.degrees)

    @property
    def label(self) -> str:
        return "∘".join(str(d) for d in self.sign.degrees)

    @property
    def effective_degree(self) -> int:
        return math.prod(self.sign.degrees)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return self.sign.relu(x, self.bound)

    def record(self) -> dict:
        return {"method": "composite", "form": "composite", "stages": self.stages,
                "stage_degrees": list(self.sign.degrees), "degree": self.label,
                "effective_degree": self.effective_degree,
                "function": "relu", "range_margin": self.margin, "tau": self.sign.tau,
                "sign_error": self.sign.error, "interval": [-self.bound, self.bound],
                "weighted_mse": self.error, "estimated_seconds": self.cost,
                "per_channel": False, **relu_error_bounds(self.sign, self.bound),
                "levels": sum(polynomial_depth(d, self.bound if i == 0 else 1.0)
                              for i, d in enumerate(self.sign.degrees)) + 1,
                "max_error": relu_error_bounds(self.sign, self.bound)["max_error_in_transition"]}


def input_bound(node: Node, margin: float) -> float:
    """B: the calibrated max |x| of the node's input, widened by ``margin``."""
    distribution = node.meta["_distribution"]
    largest = max(abs(float(distribution.low)), abs(float(distribution.high)), 1e-6)
    return largest * (1.0 + margin)


def product_cost(elements: int, table: CostTable) -> float:
    """One ciphertext product (relinearized, rescaled: one level) per ciphertext."""
    return max(1, math.ceil(elements / table.slots)) * (table.multiply_seconds
                                                          + table.level_seconds)


def composite_form(node: Node, degrees: tuple[int, ...], margin: float, elements: int,
                   table: CostTable) -> CompositeForm:
    """The composite candidate with stages of ``degrees`` for ``node`` (a calibrated ReLU)."""
    sign = design_sign(tuple(degrees))
    bound = input_bound(node, margin)
    points, weights = node.meta["_distribution"].points_and_weights()
    error = float(np.sum(weights * (sign.relu(points, bound) - np.maximum(points, 0.0)) ** 2))
    cost = (activation_cost(degrees[0], elements, table, bound=bound)
            + sum(activation_cost(d, elements, table, bound=1.0) for d in degrees[1:])
            + product_cost(elements, table))
    return CompositeForm(sign, bound, margin, error, cost)


def expand(graph: Graph, node: Node, form: CompositeForm) -> None:
    """Rewrite the ReLU ``node`` into its sign stages and the product (see module docstring)."""
    source = node.inputs[0]
    shape, dtype = graph.shape(source), graph.values[source].dtype
    functions = form.sign.stage_functions()
    order = graph.dag.nodes[node.name]["order"]
    current, interval = source, (-form.bound, form.bound)
    for index, power in enumerate(functions):
        output = graph.unique_name(f"{node.name}/sign{index + 1}_output")
        graph.add_value(Value(output, shape, dtype))
        # the first stage reads x on [−B, B]: its power coefficients in t = x/B, rescaled
        scaled = power / form.bound ** np.arange(len(power)) if index == 0 else power
        stage = Node(graph.unique_name(f"{node.name}/sign{index + 1}"), "Polynomial", [current],
                     [output], attrs={"function": "sign", "method": "composite",
                                      "degree": len(power) - 1, "basis": "chebyshev",
                                      "stage": index + 1, "stages": len(functions)},
                     source=list(node.source),
                     meta={"coefficients": np.atleast_2d(power_to_chebyshev(scaled, interval)),
                           "interval": np.asarray(interval, dtype=np.float64),
                           "composite_of": node.name,
                           # the stages' outputs are bounded by design (levels reads this)
                           "_bound": 1.0 if index < len(functions) - 1
                           else 1.0 + form.sign.error / 2.0})
        graph.add_node(stage)
        # just before the product, in stage order (ties of the topological order)
        graph.dag.nodes[stage.name]["order"] = order - 1 + (index + 1) / (len(functions) + 1)
        current = output
        interval = (-1.0, 1.0)  # every stage but the last is divided into [−1, 1]
    node.meta["source_op"] = node.op
    node.meta["approximation"] = form.record()
    node.op = "Product"
    node.attrs = {"function": "relu", "form": "composite"}
    node.inputs = [source, current]
    graph.update_node(node)
