"""fold_squares: a degree-2 activation folded into its producer is the same function."""

from __future__ import annotations

import numpy as np

from picompile.ir import Graph, Node, Value
from picompile.passes import fold_squares
from picompile.runtime import tensor_ops


def small_graph(coefficients: np.ndarray, interval=(-3.0, 4.0), extra_consumer: bool = False
                ) -> Graph:
    """input (1, 4) → Linear (3 outputs) → Polynomial [→ Add reading the Linear output]."""
    rng = np.random.default_rng(0)
    graph = Graph()
    graph.add_value(Value("input", (1, 4), "float32"))
    for name in ("hidden", "activated", "summed"):
        graph.add_value(Value(name, (1, 3), "float32"))
    graph.inputs = ["input"]
    linear = Node("linear", "Linear", ["input"], ["hidden"], {})
    linear.meta.update(weight=rng.normal(size=(3, 4)), bias=rng.normal(size=3))
    graph.add_node(linear)
    polynomial = Node("act", "Polynomial", ["hidden"], ["activated"], {"degree": 2})
    polynomial.meta.update(coefficients=np.asarray(coefficients, dtype=np.float64),
                           interval=np.asarray(interval))
    graph.add_node(polynomial)
    graph.outputs = ["activated"]
    if extra_consumer:
        graph.add_node(Node("residual", "Add", ["activated", "hidden"], ["summed"], {}))
        graph.outputs = ["summed"]
    return graph


def evaluate(graph: Graph, x: np.ndarray) -> np.ndarray:
    linear, polynomial = graph.node("linear"), graph.node("act")
    hidden = tensor_ops.linear(x, linear.meta["weight"], linear.meta["bias"])
    return tensor_ops.chebyshev_series(hidden, polynomial.meta["coefficients"],
                                       polynomial.meta["interval"])


def test_folded_square_is_the_same_function_per_layer_and_per_channel():
    x = np.random.default_rng(1).normal(size=(16, 4))
    for coefficients in ([[0.8, 1.1, 0.4]],                       # one polynomial
                         [[0.8, 1.1, 0.4], [0.2, -0.5, 0.1], [1.0, 0.3, 0.05]],  # per channel
                         [[0.8, 1.1, 0.4], [0.7, 0.0, 0.0], [1.0, 0.3, 0.05]]):  # a dead channel
        graph = small_graph(np.array(coefficients))
        before = evaluate(graph, x)
        assert fold_squares.fold(graph, graph.node("act"))
        node = graph.node("act")
        assert node.meta["folded_square"]
        np.testing.assert_allclose(evaluate(graph, x), before, rtol=1e-10, atol=1e-10)
        power = fold_squares.power_form(node.meta["coefficients"], node.meta["interval"])
        np.testing.assert_allclose(power[:, 1:], [[0.0, 1.0]] * len(power), atol=1e-12)


def test_squares_that_cannot_fold_are_left_alone():
    # leading coefficient a = 2·c2 (Chebyshev T2 = 2t² − 1) negative: the sign would cost a level
    concave = small_graph(np.array([[0.5, 1.0, -0.3]]))
    assert not fold_squares.fold(concave, concave.node("act"))
    # the producer's output also feeds a residual Add: scaling it would change the Add
    shared = small_graph(np.array([[0.8, 1.1, 0.4]]), extra_consumer=True)
    weight = shared.node("linear").meta["weight"].copy()
    assert not fold_squares.fold(shared, shared.node("act"))
    np.testing.assert_array_equal(shared.node("linear").meta["weight"], weight)
    # a huge offset γ = c − b²/4a would cancel against s² and lose CKKS precision
    flat = small_graph(np.array([[0.0, 50.0, 1e-4]]), interval=(-1.0, 1.0))
    assert not fold_squares.fold(flat, flat.node("act"))
