"""approximate — replace each activation by its polynomial (or keep it exact).

Reads: activation nodes with calibration (``meta["_distribution"]``,
``meta["_channel_distributions"]``), the chosen ``meta["degree"]`` (from the degrees pass) or
the uniform ``--degree``, ``meta["keep_exact"]`` (from the select pass), and ``--method``.
Writes: each approximated node becomes op ``Polynomial`` with attrs (function, method, degree,
basis "chebyshev", the activation's parameters) and parameters ``coefficients``
(channels or 1, degree+1 Chebyshev coefficients) and ``interval`` ([a, b] of the basis);
``meta["approximation"]`` records the fit's range, max error, weighted MSE and cost. A ReLU
the degree search gave a composite sign form (``meta["_composite"]``) becomes its sign stages
(``Polynomial`` steps ``NAME/sign1``…) and a ``Product`` step (``passes/composite_relu.py``).

Methods: ``wls`` (OLA, per layer, under the measured histogram), ``minimax`` and ``chebyshev``
(on the calibrated range), ``hermite`` (AESPA, per channel from channel mean/std), ``quad``
(Flash, per channel a·x²+b·x+c; degree 2). Per-channel fits are re-expressed in the Chebyshev
basis on the layer's range so that every plan evaluates one kind of series.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from picompile import approx
from picompile.cost import DEFAULT_COST_TABLE, CostTable, activation_cost
from picompile.errors import UnsupportedOpError
from picompile.ir import Graph, Node
from picompile.passes import composite_relu, fold_squares
from picompile.passes.calibrate import activation_nodes
from picompile.plan import activations
from picompile.runtime.interface import polynomial_values

NAME = "approximate"
METHODS = ("wls", "minimax", "chebyshev", "hermite", "quad")
#: Activation ops replaced by polynomials (PRelu's per-channel slope is not).
APPROXIMATED_OPS = frozenset({"Relu", "Clip", "LeakyRelu", "Sigmoid", "Tanh", "Gelu"})
#: Margin added on each side of the calibrated range (fraction of its width).
RANGE_MARGIN = 0.05
#: Weight of the uniform component mixed into the measured histogram for WLS fits.
WLS_UNIFORM_FLOOR = 0.02


def activation_target(node: Node) -> tuple[str, dict[str, float | str]]:
    """The library's name and parameters of the function an activation node computes.

    From the one exact table (``picompile.plan.activations``); Gelu's default
    ``approximate="none"`` stays implicit, its ``"tanh"`` form is a parameter."""
    if node.op not in APPROXIMATED_OPS:
        raise UnsupportedOpError(f"node {node.name!r}: no polynomial approximation for {node.op}")
    function, params = activations.name_and_parameters(node.op, node.attrs)
    if params.get("approximate") == "none":
        del params["approximate"]
    return function, params


def fit_range(node: Node) -> tuple[float, float]:
    distribution = node.meta["_distribution"]
    low, high = float(distribution.low), float(distribution.high)
    if high - low < 1e-9:
        low, high = low - 1.0, high + 1.0
    margin = RANGE_MARGIN * (high - low)
    return low - margin, high + margin


def fitting_distribution(node: Node, floor: float | None = None
                         ) -> approx.EmpiricalDistribution:
    """The layer's histogram mixed with a uniform floor of weight ``floor``.

    Pure WLS leaves a high-degree polynomial unconstrained where the calibration data is sparse
    (the tails); values that errors of earlier layers push there would then be amplified. A
    small uniform component bounds the error over the whole range at little cost in weighted
    MSE where the data is.
    """
    floor = WLS_UNIFORM_FLOOR if floor is None else floor
    distribution = node.meta["_distribution"]
    counts = distribution.counts / distribution.counts.sum()
    mixed = (1 - floor) * counts + floor / counts.size
    return approx.EmpiricalDistribution(distribution.edges, mixed, distribution.mean,
                                        distribution.std, distribution.low, distribution.high)


def fit_activation(node: Node, method: str, degree: int) -> approx.PolynomialFit:
    """Fit the node's activation with ``method`` at ``degree`` under its calibration data."""
    function, params = activation_target(node)
    interval = fit_range(node)
    distribution = fitting_distribution(node)
    if method == "wls":
        return approx.fit("wls", function, degree, distribution=distribution,
                          interval=interval, **params)
    if method in ("minimax", "chebyshev"):
        return approx.fit(method, function, degree, interval=interval, **params)
    calibration = node.meta["calibration"]
    mean = np.asarray(calibration["channel_mean"])
    std = np.maximum(np.asarray(calibration["channel_std"]), 1e-6)
    if method == "hermite":
        return approx.fit("hermite", function, degree, mean=mean, std=std, **params)
    if method == "quad":
        if degree != 2:
            raise UnsupportedOpError(f"node {node.name!r}: method quad is degree 2 only")
        return approx.fit("quad", function, 2,
                          distribution=node.meta["_channel_distributions"], **params)
    raise ValueError(f"unknown method {method!r}; choose from {', '.join(METHODS)}")


def chebyshev_form(fit: approx.PolynomialFit, interval: tuple[float, float]) -> np.ndarray:
    """(rows, degree+1) Chebyshev coefficients on ``interval`` (one row, or one per channel)."""
    coefficients = fit.chebyshev_coefficients(*interval)
    return np.atleast_2d(coefficients)


def layer_error(node: Node, fit: approx.PolynomialFit) -> float:
    """Weighted MSE of the fit under the layer's histogram (per-channel fits included)."""
    points, weights = node.meta["_distribution"].points_and_weights()
    function, params = activation_target(node)
    exact = approx.make_activation(function, **params)(points)
    if fit.channels is None:
        approximated = fit(points)
        return float(np.sum(weights * (approximated - exact) ** 2))
    return float(fit.weighted_mse) if fit.weighted_mse is not None else float("nan")


def polynomial_substitution(node: Node, method: str, degree: int):
    """A function x -> p(x) for simulation, and the record of the fit."""
    fit = fit_activation(node, method, degree)
    interval = fit_range(node)
    coefficients = chebyshev_form(fit, interval)
    return make_evaluator(coefficients, interval), fit, coefficients, interval


def make_evaluator(coefficients: np.ndarray, interval: tuple[float, float]):
    """x -> the Chebyshev series, exactly as the plain backend evaluates a Polynomial step."""
    bounds = np.asarray(interval, dtype=np.float64)
    return lambda x: polynomial_values(x, coefficients, bounds)


def elements(graph: Graph, node: Node) -> int:
    return int(np.prod(graph.shape(node.inputs[0])))


def approximation_record(graph: Graph, node: Node, fit, interval,
                         table: CostTable = DEFAULT_COST_TABLE, folded: bool = False
                         ) -> dict[str, Any]:
    return {
        "method": fit.method, "degree": fit.degree, "function": fit.function,
        "interval": list(interval), "max_error": fit.max_error,
        "weighted_mse": layer_error(node, fit),
        "estimated_seconds": activation_cost(fit.degree, elements(graph, node), table,
                                             bound=float(np.max(np.abs(interval))),
                                             folded=folded),
        "per_channel": fit.channels is not None,
    }


def run(graph: Graph, context) -> list[str]:
    options = context.options
    method = options.method
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; choose from {', '.join(METHODS)}")
    replaced = kept = composites = 0
    table = DEFAULT_COST_TABLE
    if options.protocol == "fhe" and activation_nodes(graph):
        from picompile.passes.levels import activation_cost_table

        table, _ = activation_cost_table(graph)
    for node in activation_nodes(graph):
        if node.meta.get("keep_exact"):
            kept += 1
            node.meta["approximation"] = {"kept_exact": True,
                                          "estimated_seconds": None}
            continue
        composite = node.meta.pop("_composite", None)
        if composite is not None:  # chosen by the degree search (FHE ReLUs)
            composite_relu.expand(graph, node, composite)
            node.meta["approximation"].update(
                {k: node.meta[k] for k in ("sensitivity", "predicted_logit_mse",
                                           "predicted_accuracy_drop") if k in node.meta},
                kept_exact=False)
            replaced += 1
            composites += 1
            continue
        degree = int(node.meta.get("degree") or options.degree or 2)
        _, fit, coefficients, interval = polynomial_substitution(node, method, degree)
        folded = options.protocol == "fhe" and fold_squares.would_fold(graph, node,
                                                                        coefficients, interval)
        record = approximation_record(graph, node, fit, interval, table, folded)
        record.update({k: node.meta[k] for k in ("sensitivity", "predicted_logit_mse",
                                                 "predicted_accuracy_drop") if k in node.meta})
        record["kept_exact"] = False
        function, params = activation_target(node)
        node.meta["approximation"] = record
        node.meta["source_op"] = node.op
        node.op = "Polynomial"
        node.attrs = {"function": function, "method": method, "degree": degree,
                      "basis": "chebyshev", **params}
        node.meta["coefficients"] = coefficients
        node.meta["interval"] = np.asarray(interval, dtype=np.float64)
        replaced += 1
    return [f"{replaced} activations became polynomials ({method}"
            + (f"; {composites} composite sign-based ReLUs" if composites else "")
            + f"), {kept} kept exact"]
