"""select — AutoReP-style choice of which activations stay exact ReLU under a ReLU budget.

Reads: calibrated activation nodes, the calibration set, ``--relu-budget`` (a count of scalar
ReLUs when ≥ 1, a fraction of all of them when < 1), ``--method`` and ``--degree`` (the
polynomial the other layers get; degree 2 by default, as in hybrid protocols).
Writes: ``meta["keep_exact"] = True`` on the chosen layers, ``meta["exact_gain"]`` (measured
reduction of output error from keeping the layer exact) on every candidate, and
``context.analysis["select"]`` (budget, ReLUs kept, calibration accuracy with and without the
selection).

Method (post-training, no retraining): start from the all-polynomial plan; for each layer
measure, on the calibration subset, how much the output error (MSE to the exact model's
logits) drops when that layer alone is kept exact; rank layers by error reduction per ReLU and
keep them greedily while the budget allows. Exact layers are only ReLUs (secure comparison in
the hybrid protocol). The budget is never exceeded.
"""

from __future__ import annotations

import numpy as np

from picompile.ir import Graph
from picompile.passes.approximate import elements, polynomial_substitution
from picompile.passes.calibrate import activation_nodes
from picompile.passes.degrees import accuracy
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
    simulator = GraphSimulator(graph)
    exact = simulator.run(subset.inputs)
    polynomials = {n.name: polynomial_substitution(n, options.method, degree)[0] for n in nodes}
    base_error = float(np.mean((simulator.run(subset.inputs, polynomials) - exact) ** 2))
    gains = {}
    for node in nodes:
        others = {k: v for k, v in polynomials.items() if k != node.name}
        error = float(np.mean((simulator.run(subset.inputs, others) - exact) ** 2))
        gains[node.name] = base_error - error
        node.meta["exact_gain"] = gains[node.name]
    ranked = sorted(nodes, key=lambda n: gains[n.name] / elements(graph, n), reverse=True)
    kept, used = [], 0
    for node in ranked:
        size = elements(graph, node)
        if gains[node.name] > 0 and used + size <= budget:
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
