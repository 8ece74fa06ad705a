"""canonicalize — rewrite frontend IR (ONNX ops) into picompile's canonical op set.

Reads: the IR from :mod:`picompile.frontend` (ONNX op names and attributes, static shapes,
constants already folded).
Writes: the same graph using only :data:`CANONICAL_OPS`, with every attribute explicit:

* polynomial activations written with Mul/Add/Pow over one tensor become ``Polynomial`` nodes
  with their exact coefficients (:mod:`picompile.passes.polynomials`);
* Identity and Dropout removed;
* Flatten/Reshape/Squeeze/Unsqueeze become ``Reshape`` to the static output shape (a layout
  no-op);
* Gemm and MatMul by a constant become ``Linear`` (y = x·Wᵀ + b over the last axis), and a
  following Add of a constant bias is fused into it; Conv gets an explicit bias the same way;
* Sub/Div by constants become Add/Mul; ``Add`` of two tensors stays (residual add); a variadic
  ``Sum`` becomes a chain of two-input ``Add``;
* LRN keeps its op with every attribute explicit (size, alpha, beta, bias);
* BatchNormalization is folded into the Conv/Linear that feeds it when that op has no other
  consumer, and otherwise becomes ``ChannelAffine`` (per-channel scale and shift);
* Conv/pool ``auto_pad`` is resolved into explicit pads; Clip bounds become attributes.

Options: none. Diagnostics: counts of folded, fused and removed nodes.
"""

from __future__ import annotations

import math

import numpy as np

from picompile.errors import ModelError, UnsupportedOpError
from picompile.ir import Graph, Node, Value
from picompile.passes import polynomials
from picompile.plan.ops import CANONICAL_OPS
from picompile.plan.ops import ONNX_RESHAPE_OPS as RESHAPE_LIKE

NAME = "canonicalize"



def _unsupported(node: Node, why: str) -> UnsupportedOpError:
    return UnsupportedOpError(f"node {node.name!r} ({node.op}): {why}")


def _spatial_pads(node: Node, in_shape: tuple[int, ...], out_shape: tuple[int, ...],
                  kernel: list[int], strides: list[int], dilations: list[int]) -> list[int]:
    """Explicit [begin..., end...] pads, resolving auto_pad."""
    rank = len(kernel)
    auto_pad = node.attrs.get("auto_pad", "NOTSET")
    if auto_pad in ("NOTSET", ""):
        return list(node.attrs.get("pads", [0] * (2 * rank)))
    if auto_pad == "VALID":
        return [0] * (2 * rank)
    begins, ends = [], []
    for axis in range(rank):
        size = in_shape[2 + axis]
        extent = (kernel[axis] - 1) * dilations[axis] + 1
        total = max((out_shape[2 + axis] - 1) * strides[axis] + extent - size, 0)
        small, large = total // 2, total - total // 2
        begins.append(small if auto_pad == "SAME_UPPER" else large)
        ends.append(large if auto_pad == "SAME_UPPER" else small)
    return begins + ends


def _window_attrs(graph: Graph, node: Node, kernel: list[int]) -> dict:
    rank = len(kernel)
    strides = list(node.attrs.get("strides", [1] * rank))
    dilations = list(node.attrs.get("dilations", [1] * rank))
    pads = _spatial_pads(node, graph.shape(node.inputs[0]), graph.shape(node.outputs[0]),
                         kernel, strides, dilations)
    return {"kernel_shape": kernel, "strides": strides, "pads": pads, "dilations": dilations}


def _scalar(graph: Graph, value: str) -> float | None:
    data = graph.constant(value) if value else None
    return None if data is None else float(np.asarray(data).reshape(-1)[0])


def _rewrite(graph: Graph, node: Node, counts: dict[str, int]) -> None:
    """Rewrite one node in place into canonical form."""
    op = node.op
    const = [graph.constant(v) if v else None for v in node.inputs]
    if op in ("Identity", "Dropout", "Cast"):  # the frontend keeps only float-to-float Casts
        if len(node.outputs) > 1 and graph.consumers(node.outputs[1]):
            raise _unsupported(node, "the Dropout mask output is used")
        graph.bypass(node)
        counts["removed"] += 1
        return
    if op in RESHAPE_LIKE:
        node.op = "Reshape"
        node.inputs = node.inputs[:1]
        node.attrs = {"shape": list(graph.shape(node.outputs[0]))}
    elif op == "Conv":
        weight = const[1]
        if weight is None:
            raise _unsupported(node, "the convolution weight must be a constant")
        kernel = list(weight.shape[2:])
        attrs = _window_attrs(graph, node, kernel)
        attrs["group"] = int(node.attrs.get("group", 1))
        in_shape = graph.shape(node.inputs[0])
        group = attrs["group"]
        if (weight.ndim != len(in_shape) or group < 1 or weight.shape[0] % group
                or weight.shape[1] * group != in_shape[1]):
            raise ModelError(f"node {node.name!r} (Conv): weight {weight.shape} with group "
                             f"{group} does not fit the input {tuple(in_shape)}")
        bias = const[2] if len(const) > 2 and const[2] is not None else np.zeros(weight.shape[0])
        if np.shape(bias) != (weight.shape[0],):
            raise ModelError(f"node {node.name!r} (Conv): bias {np.shape(bias)} does not match "
                             f"{weight.shape[0]} output channels")
        node.inputs = [node.inputs[0]]
        node.attrs = attrs
        node.meta["weight"] = weight.astype(np.float64)
        node.meta["bias"] = np.asarray(bias, dtype=np.float64)
    elif op == "Gemm":
        if node.attrs.get("transA", 0):
            raise _unsupported(node, "transA=1 (the encrypted operand transposed) is unsupported")
        if const[1] is None:
            raise _unsupported(node, "a product of two encrypted tensors is unsupported")
        weight = const[1].astype(np.float64) * float(node.attrs.get("alpha", 1.0))
        weight = weight if node.attrs.get("transB", 0) else weight.T  # (out, in)
        bias = np.zeros(weight.shape[0])
        if len(const) > 2 and const[2] is not None:
            bias = bias + np.broadcast_to(const[2] * float(node.attrs.get("beta", 1.0)),
                                          (1, weight.shape[0]))[0]
        node.op, node.inputs, node.attrs = "Linear", [node.inputs[0]], {}
        node.meta["weight"], node.meta["bias"] = weight, bias
    elif op == "MatMul":
        if const[1] is None or const[0] is not None or const[1].ndim != 2:
            raise _unsupported(node, "only encrypted tensor × constant 2-D matrix is supported")
        node.op, node.inputs, node.attrs = "Linear", [node.inputs[0]], {}
        node.meta["weight"] = const[1].astype(np.float64).T
        node.meta["bias"] = np.zeros(const[1].shape[1])
    elif op in ("Add", "Sub", "Mul", "Div"):
        _rewrite_arithmetic(graph, node, const)
    elif op == "BatchNormalization":
        if node.attrs.get("training_mode", 0) or len(node.outputs) > 1:
            raise _unsupported(node, "training-mode batch normalization is unsupported")
        gamma, beta, mean, var = (np.asarray(c, dtype=np.float64) for c in const[1:5])
        scale = gamma / np.sqrt(var + float(node.attrs.get("epsilon", 1e-5)))
        node.op, node.inputs, node.attrs = "ChannelAffine", [node.inputs[0]], {}
        node.meta["scale"], node.meta["shift"] = scale, beta - mean * scale
    elif op == "Clip":
        low = _scalar(graph, node.inputs[1]) if len(node.inputs) > 1 else None
        high = _scalar(graph, node.inputs[2]) if len(node.inputs) > 2 else None
        if (len(node.inputs) > 1 and node.inputs[1] and low is None) or (
                len(node.inputs) > 2 and node.inputs[2] and high is None):
            raise _unsupported(node, "Clip bounds must be constants")
        low = node.attrs.get("min", -math.inf) if low is None else low
        high = node.attrs.get("max", math.inf) if high is None else high
        node.inputs, node.attrs = node.inputs[:1], {"min": float(low), "max": float(high)}
    elif op == "LeakyRelu":
        node.attrs = {"alpha": float(node.attrs.get("alpha", 0.01))}
    elif op == "PRelu":
        if const[1] is None:
            raise _unsupported(node, "the PRelu slope must be a constant")
        slope = np.asarray(const[1])
        out_shape = graph.shape(node.outputs[0])
        if slope.ndim == 1 and len(out_shape) > 2 and slope.size == out_shape[1] > 1:
            slope = slope.reshape((-1,) + (1,) * (len(out_shape) - 2))  # per-channel slope
        slope = np.broadcast_to(slope, out_shape[1:] or (1,))
        node.inputs, node.attrs = node.inputs[:1], {}
        node.meta["slope"] = np.asarray(slope, dtype=np.float64)
    elif op == "Gelu":
        node.attrs = {"approximate": node.attrs.get("approximate", "none")}
    elif op in ("AveragePool", "MaxPool"):
        if op == "MaxPool" and len(node.outputs) > 1:
            raise _unsupported(node, "MaxPool indices output is unsupported")
        if op == "MaxPool" and node.attrs.get("storage_order", 0):
            raise _unsupported(node, "storage_order=1 is unsupported")
        kernel = list(node.attrs["kernel_shape"])
        attrs = _window_attrs(graph, node, kernel)
        attrs["ceil_mode"] = int(node.attrs.get("ceil_mode", 0))
        if op == "AveragePool":
            attrs["count_include_pad"] = int(node.attrs.get("count_include_pad", 0))
        node.attrs = attrs
    elif op in ("ReduceMean", "ReduceSum"):
        rank = len(graph.shape(node.inputs[0]))
        axes = node.attrs.get("axes")
        if axes is None and len(node.inputs) > 1 and node.inputs[1]:
            axes = const[1]
            if axes is None:
                raise _unsupported(node, "reduction axes must be constants")
        if axes is None or len(axes) == 0:
            if node.attrs.get("noop_with_empty_axes", 0):
                graph.bypass(node)
                return
            axes = list(range(rank))
        node.inputs = node.inputs[:1]
        node.attrs = {"axes": sorted(int(a) % rank for a in np.asarray(axes).reshape(-1)),
                      "keepdims": int(node.attrs.get("keepdims", 1))}
    elif op == "Pad":
        rank = len(graph.shape(node.inputs[0]))
        pads = node.attrs.get("pads")
        if pads is None:
            pads = const[1]
        value = node.attrs.get("value", 0.0)
        if len(node.inputs) > 2 and node.inputs[2]:
            value = _scalar(graph, node.inputs[2])
        if pads is None or value is None:
            raise _unsupported(node, "pads and pad value must be constants")
        pads = [int(p) for p in np.asarray(pads).reshape(-1)]
        if len(node.inputs) > 3 and node.inputs[3]:
            axes = [int(a) % rank for a in np.asarray(const[3]).reshape(-1)]
            full = [0] * (2 * rank)
            for i, axis in enumerate(axes):
                full[axis], full[rank + axis] = pads[i], pads[len(axes) + i]
            pads = full
        if any(p < 0 for p in pads):
            raise _unsupported(node, "negative pads (cropping) are unsupported")
        mode = node.attrs.get("mode", "constant")
        if mode not in ("constant", "reflect", "edge"):
            raise _unsupported(node, f"pad mode {mode!r} is unsupported")
        node.inputs, node.attrs = node.inputs[:1], {"pads": pads, "mode": mode,
                                                    "value": float(value)}
    elif op == "Concat":
        rank = len(graph.shape(node.outputs[0]))
        node.attrs = {"axis": int(node.attrs["axis"]) % rank}
    elif op == "Sum":
        _rewrite_sum(graph, node)
    elif op == "LRN":
        node.attrs = {"size": int(node.attrs["size"]),
                      "alpha": float(node.attrs.get("alpha", 1e-4)),
                      "beta": float(node.attrs.get("beta", 0.75)),
                      "bias": float(node.attrs.get("bias", 1.0))}
    elif op == "Transpose":
        rank = len(graph.shape(node.inputs[0]))
        node.attrs = {"perm": list(node.attrs.get("perm", range(rank - 1, -1, -1)))}
    graph.update_node(node)


def _rewrite_sum(graph: Graph, node: Node) -> None:
    """Variadic Sum → a chain of two-input Adds (the last one is ``node`` itself)."""
    if len(node.inputs) == 1:
        node.op, node.attrs = "Reshape", {"shape": list(graph.shape(node.outputs[0]))}
        return
    inputs = list(node.inputs)
    partial = inputs[0]
    for index, addend in enumerate(inputs[1:-1]):
        shape = np.broadcast_shapes(graph.shape(partial), graph.shape(addend))
        out = graph.unique_name(f"{node.outputs[0]}_partial{index}")
        graph.add_value(Value(out, tuple(shape)))
        add = Node(graph.unique_name(f"{node.name}_add{index}"), "Add", [partial, addend],
                   [out], source=list(node.source))
        graph.add_node(add)
        _rewrite_arithmetic(graph, add, [graph.constant(v) for v in add.inputs])
        graph.update_node(add)
        partial = out
    node.op, node.inputs, node.attrs = "Add", [partial, inputs[-1]], {}
    _rewrite_arithmetic(graph, node, [graph.constant(v) for v in node.inputs])


def _rewrite_arithmetic(graph: Graph, node: Node, const: list) -> None:
    op = node.op
    a, b = const[0], const[1]
    if a is not None and b is not None:
        raise _unsupported(node, "unexpected constant expression (should have been folded)")
    out_shape = graph.shape(node.outputs[0])
    if a is None and b is None:
        if op == "Add":
            return
        if op == "Sub":  # x - y = x + (-1)·y
            negated = graph.unique_name(node.name + "_neg")
            graph.add_value(Value(negated, graph.shape(node.inputs[1])))
            minus_one = graph.unique_name(node.name + "_minus_one")
            graph.add_constant(minus_one, np.array(-1.0))
            graph.add_node(Node(graph.unique_name(node.name + "_negate"), "Mul",
                                [node.inputs[1], minus_one], [negated], source=node.source))
            node.op, node.inputs = "Add", [node.inputs[0], negated]
            return
        raise _unsupported(node, "multiplying or dividing two encrypted tensors is unsupported")
    if len(out_shape) < max(len(graph.shape(v)) for v in node.inputs):
        raise _unsupported(node, "broadcasting that drops axes is unsupported")
    variable = node.inputs[0] if a is None else node.inputs[1]
    constant = np.asarray(b if a is None else a, dtype=np.float64)
    if op == "Div":
        if a is not None:
            raise _unsupported(node, "dividing by an encrypted tensor is unsupported")
        constant, op = 1.0 / constant, "Mul"
    if op == "Sub":
        if a is None:
            constant, op = -constant, "Add"
        else:  # c - x = (-1)·x + c
            name = graph.unique_name(node.name + "_negated")
            graph.add_value(Value(name, graph.shape(variable)))
            minus_one = graph.unique_name(node.name + "_minus_one")
            graph.add_constant(minus_one, np.array(-1.0))
            graph.add_node(Node(graph.unique_name(node.name + "_negate"), "Mul",
                                [variable, minus_one], [name], source=node.source))
            variable, op = name, "Add"
    const_name = graph.unique_name(node.name + "_constant")
    graph.add_constant(const_name, constant)
    node.op, node.inputs = op, [variable, const_name]


def _sole_weighted_producer(graph: Graph, node: Node) -> Node | None:
    """The Conv/Linear that produces ``node``'s first input for ``node`` alone (no other
    consumer, not a graph output): the one a following per-channel op can fold into."""
    producer = graph.producer(node.inputs[0])
    if producer is None or producer.op not in ("Conv", "Linear"):
        return None
    if len(graph.consumers(producer.outputs[0])) != 1 or producer.outputs[0] in graph.outputs:
        return None
    return producer


def _fuse_bias(graph: Graph, counts: dict[str, int]) -> None:
    """Fold Add-of-constant into a preceding Conv/Linear bias."""
    for node in graph.nodes():
        if node.op != "Add" or graph.constant(node.inputs[1]) is None:
            continue
        producer = _sole_weighted_producer(graph, node)
        if producer is None:
            continue
        channels = producer.meta["bias"].shape[0]
        addend = graph.constant(node.inputs[1])
        out_shape = graph.shape(node.outputs[0])
        if out_shape != graph.shape(producer.outputs[0]):
            continue
        full = np.broadcast_to(addend, out_shape)
        axis = 1 if producer.op == "Conv" else len(out_shape) - 1
        per_channel = np.moveaxis(full, axis, -1).reshape(-1, channels)
        if not np.all(per_channel == per_channel[:1]):
            continue
        producer.meta["bias"] = producer.meta["bias"] + per_channel[0]
        graph.bypass(node)
        counts["fused"] += 1


def _fold_channel_affine(graph: Graph, counts: dict[str, int]) -> None:
    """Fold ChannelAffine (batch norm) into a preceding Conv/Linear with no other consumer."""
    for node in graph.nodes():
        if node.op != "ChannelAffine":
            continue
        producer = _sole_weighted_producer(graph, node)
        if producer is None:
            continue
        if producer.op == "Linear" and len(graph.shape(producer.outputs[0])) != 2:
            continue  # channel axis 1 is not the Linear output axis
        scale, shift = node.meta["scale"], node.meta["shift"]
        weight = producer.meta["weight"]
        producer.meta["weight"] = weight * scale.reshape((-1,) + (1,) * (weight.ndim - 1))
        producer.meta["bias"] = producer.meta["bias"] * scale + shift
        producer.source = producer.source + node.source
        graph.bypass(node)
        counts["folded"] += 1


def run(graph: Graph, context: object | None = None) -> list[str]:
    """Canonicalize ``graph`` in place; returns diagnostics."""
    counts = {"removed": 0, "fused": 0, "folded": 0}
    recognized = polynomials.recognize(graph)
    partial = polynomials.recognize_partial_relu(graph)
    for node in graph.nodes():
        if node.name in graph.dag:
            _rewrite(graph, node, counts)
    _fuse_bias(graph, counts)
    _fold_channel_affine(graph, counts)
    _fuse_bias(graph, counts)
    graph.prune()
    # Parameters of rewritten ops are kept in node.meta; constants they no longer read go away.
    leftover = [n.op for n in graph.nodes() if n.op not in CANONICAL_OPS | {"Polynomial"}]
    if leftover:
        raise UnsupportedOpError(f"ops left after canonicalization: {sorted(set(leftover))}")
    return [
        f"recognized {recognized} polynomial activations written with Mul/Add/Pow"
        + (f" ({partial} keep some channels exact ReLU)" if partial else ""),
        f"removed {counts['removed']} identity/dropout nodes",
        f"fused {counts['fused']} bias additions into Conv/Linear",
        f"folded {counts['folded']} batch normalizations into Conv/Linear",
        f"{len(graph)} ops remain",
    ]
