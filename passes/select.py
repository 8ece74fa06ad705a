"""select — AutoReP-style choice of which activations stay exact ReLU under a ReLU budget.

Reads: calibrated activation nodes, the calibration set, ``--relu-budget`` (a count of scalar
ReLUs when ≥ 1, a fraction of all of them when < 1), ``--method`` and ``--degree`` (the
polynomial the other layers get; degree 2 by default, as in hybrid protocols).
Writes: ``meta["keep_exact"] = True`` on the chosen layers, ``meta["exact_gain"]`` (measured
reduction of output error from keeping the layer exact) on every candidate, and
``context.analysis["select"]`` (budget, ReLUs kept, calibration accuracy with and without the
selection).

Method (post-training, no retraining): per ReLU layer, the output sensitivity ``s_l`` is
measured by injecting Gaussian noise of known variance after the layer (as in the degrees pass)
and multiplied by the polynomial's weighted MSE ``e_l`` under the layer's measured input
distribution: ``s_l·e_l`` predicts the output error the polynomial would add. Layers are ranked
by predicted error removed per ReLU kept and kept greedily while the budget allows; the
resulting plan's calibration accuracy is then measured (closed loop) and recorded. Exact layers
are only ReLUs (secure comparison in the hybrid protocol). The budget is never exceeded.
"""

from __future__ import annotations

import numpy as np

from picompile.ir import Graph
from picompile.passes.approximate import elements, layer_error, polynomial_substitution
from picompile.passes.calibrate import activation_nodes
from picompile.passes.degrees import accuracy, measure_sensitivity
from picompile.simulate import GraphSimulator

NAME = "select"
DEFAULT_HYBRID_DEGREE = 2


def relu_budget_count(budget: float, total: int) -> int:
    """Budget as a number of scalar ReLUs: counts are taken as is, fractions of ``total``."""
    if budget >= 1:
        return int(budget)
    return int(np.floor(budget * total))


def run(graph: Graph, context) -> list[str]:
    options = context.options
    nodes = [n for n in activation_nodes(graph) if n.op == "Relu"]
    if not nodes:
        return ["no ReLU layers to select from"]
    total = sum(elements(graph, n) for n in nodes)
    budget = relu_budget_count(options.relu_budget, total)
    degree = options.degree or DEFAULT_HYBRID_DEGREE
    calibration = context.calibration
    subset = calibration.subset(min(options.sensitivity_samples, calibration.size))
    simulator = GraphSimulator(graph, dtype=np.float32)
    rng = np.random.default_rng(options.seed)
    sensitivity = measure_sensitivity(simulator, nodes, subset.inputs, rng)
    polynomials, gains = {}, {}
    for node in nodes:
        substitution, fit, _, _ = polynomial_substitution(node, options.method, degree)
        polynomials[node.name] = substitution
        gains[node.name] = sensitivity[node.name] * layer_error(node, fit)
        node.meta["sensitivity"] = sensitivity[node.name]
        node.meta["exact_gain"] = gains[node.name]
    ranked = sorted(nodes, key=lambda n: gains[n.name] / elements(graph, n), reverse=True)
    kept, used = [], 0
    for node in ranked:
        size = elements(graph, node)
        if used + size <= budget:
            node.meta["keep_exact"] = True
            kept.append(node.name)
            used += size
    labels = calibration.labels
    full_exact = simulator.run(calibration.inputs)
    if labels is None:
        labels = np.argmax(full_exact.reshape(calibration.size, -1), axis=1)
    chosen = {k: v for k, v in polynomials.items() if k not in kept}
    context.analysis["select"] = {
        "relu_budget": budget, "relus_total": total, "relus_kept": used,
        "layers_kept": kept,
        "accuracy_all_polynomial": accuracy(simulator.run(calibration.inputs, polynomials),
                                            labels),
        "accuracy_selected": accuracy(simulator.run(calibration.inputs, chosen), labels),
        "accuracy_exact": accuracy(full_exact, labels),
    }
    return [f"kept {len(kept)} ReLU layers exact ({used} of {total} ReLUs, budget {budget})"]
