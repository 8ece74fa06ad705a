"""Export a fine-tuned model as ONNX made of standard ops only.

Reads: a :class:`~picompile.finetuning.train.TrainedModel` (the canonical plan's steps, trained
weights, polynomial coefficients and ReLU/polynomial masks) and its training summary.
Writes: an ``onnx.ModelProto`` (opset 13, float32, dynamic batch axis) that onnxruntime runs:
Conv, Gemm/MatMul, Add, Mul, Reshape, pooling; a batch normalization left unfolded is a
per-channel Mul and Add; every polynomial activation is Mul/Add with per-channel constants —
``a·(x·x) + b·x + c`` for a quadratic in x (Flash, the pattern a torch export of ``x²+x``
writes), Horner's scheme in ``z = x·(1/s) + (−m/s)`` otherwise; a channel that stays ReLU
(a ReLU budget) is ``relu(x) + m·(p(x) − relu(x))`` with the 0/1 mask ``m``. The training
summary is stored as JSON in ``metadata_props`` under :data:`METADATA_KEY`; ``picompile
compile`` recognises the polynomials (``passes/polynomials.py``) and the report shows the summary.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import onnx
from onnx import helper, numpy_helper

from picompile.errors import UnsupportedOpError
from picompile.finetuning.polynomials import PolynomialActivation
from picompile.finetuning.train import TrainedModel
from picompile.frontend import FINETUNE_METADATA_KEY as METADATA_KEY
from picompile.plan import ACTIVATION_OPS, Step

OPSET = 13


class _Builder:
    """Collects nodes and initializers with unique names."""

    def __init__(self) -> None:
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[onnx.TensorProto] = []
        self.names: set[str] = set()

    def name(self, base: str) -> str:
        name, k = base, 1
        while name in self.names:
            name, k = f"{base}_{k}", k + 1
        self.names.add(name)
        return name

    def constant(self, base: str, value: Any, dtype: Any = np.float32) -> str:
        name = self.name(base)
        self.initializers.append(numpy_helper.from_array(np.asarray(value, dtype=dtype), name))
        return name

    def node(self, op: str, inputs: list[str], output: str | None = None, base: str = "",
             **attrs: Any) -> str:
        output = output or self.name(f"{base}_{op.lower()}")
        self.names.add(output)
        self.nodes.append(helper.make_node(op, inputs, [output], name=self.name(f"{base}/{op}"),
                                           **attrs))
        return output


def _channel_shape(rank: int, channels: int) -> tuple[int, ...]:
    return (channels,) + (1,) * (rank - 2) if rank > 2 else (channels,)


def _polynomial(b: _Builder, x: str, form: PolynomialActivation, coefficients: np.ndarray,
                rank: int, output: str | None, base: str) -> str:
    """Nodes computing the trained polynomial of ``x`` (per channel on axis 1)."""
    shape = _channel_shape(rank, form.channels)
    power = form.power_coefficients(coefficients)
    identity = np.all(form.center == 0) and np.all(form.scale == 1)
    if identity and form.degree == 2:  # a·(x·x) + b·x + c
        square = b.node("Mul", [x, x], base=base)
        quadratic = b.node("Mul", [square, b.constant(f"{base}.a", power[:, 2].reshape(shape))],
                           base=base)
        linear = b.node("Mul", [x, b.constant(f"{base}.b", power[:, 1].reshape(shape))],
                        base=base)
        total = b.node("Add", [quadratic, linear], base=base)
        return b.node("Add", [total, b.constant(f"{base}.c", power[:, 0].reshape(shape))],
                      output, base=base)
    z = x
    if not identity:
        z = b.node("Mul", [x, b.constant(f"{base}.inv_scale", (1.0 / form.scale).reshape(shape))],
                   base=base)
        z = b.node("Add", [z, b.constant(f"{base}.offset",
                                         (-form.center / form.scale).reshape(shape))], base=base)
    y = b.node("Mul", [z, b.constant(f"{base}.c{form.degree}",
                                     power[:, form.degree].reshape(shape))], base=base)
    for k in range(form.degree - 1, -1, -1):
        y = b.node("Add", [y, b.constant(f"{base}.c{k}", power[:, k].reshape(shape))],
                   output if k == 0 else None, base=base)
        if k:
            y = b.node("Mul", [y, z], base=base)
    return y


def _activation(b: _Builder, step: Step, model: TrainedModel, rank: int) -> None:
    x, out = step.inputs[0], step.outputs[0]
    mask = model.masks[step.name]
    form = model.forms[step.name]
    coefficients = model.coefficients[step.name]
    if np.all(mask >= 0.5):
        _polynomial(b, x, form, coefficients, rank, out, step.name)
        return
    if np.all(mask < 0.5):
        b.node("Relu", [x], out, base=step.name)
        return
    exact = b.node("Relu", [x], base=step.name)
    poly = _polynomial(b, x, form, coefficients, rank, None, step.name)
    difference = b.node("Sub", [poly, exact], base=step.name)
    shape = _channel_shape(rank, form.channels)
    chosen = b.node("Mul", [difference, b.constant(f"{step.name}.mask",
                                                   (mask >= 0.5).reshape(shape))],
                    base=step.name)
    b.node("Add", [exact, chosen], out, base=step.name)


def _step(b: _Builder, step: Step, model: TrainedModel) -> None:
    plan = model.forward.plan
    op, attrs, x, out = step.op, step.attrs, step.inputs[0], step.outputs[0]
    rank = len(plan.values[x].shape)
    weights = model.weights.get(step.name, {})
    if op in ACTIVATION_OPS:
        _activation(b, step, model, rank)
    elif op == "Conv":
        b.node("Conv", [x, b.constant(f"{step.name}.weight", weights["weight"]),
                        b.constant(f"{step.name}.bias", weights["bias"])], out, step.name,
               kernel_shape=list(weights["weight"].shape[2:]), strides=attrs["strides"],
               pads=attrs["pads"], dilations=attrs["dilations"], group=int(attrs["group"]))
    elif op == "Linear":
        weight = b.constant(f"{step.name}.weight", weights["weight"])
        bias = b.constant(f"{step.name}.bias", weights["bias"])
        if rank == 2:
            b.node("Gemm", [x, weight, bias], out, step.name, transB=1)
        else:
            product = b.node("MatMul", [x, b.constant(f"{step.name}.weight_t",
                                                      weights["weight"].T)], base=step.name)
            b.node("Add", [product, bias], out, step.name)
    elif op == "ChannelAffine":
        shape = _channel_shape(rank, weights["scale"].size)
        scaled = b.node("Mul", [x, b.constant(f"{step.name}.scale",
                                              weights["scale"].reshape(shape))], base=step.name)
        b.node("Add", [scaled, b.constant(f"{step.name}.shift",
                                          weights["shift"].reshape(shape))], out, step.name)
    elif op in ("Add", "Mul"):
        other = step.inputs[1] if len(step.inputs) > 1 else b.constant(
            f"{step.name}.constant", plan.param(step, "constant"))
        b.node(op, [x, other], out, step.name)
    elif op == "Reshape":
        b.node("Reshape", [x, b.constant(f"{step.name}.shape", [-1] + list(attrs["shape"][1:]),
                                         np.int64)], out, step.name)
    elif op == "GlobalAveragePool":
        b.node(op, [x], out, step.name)
    elif op in ("AveragePool", "MaxPool"):
        extra = {"count_include_pad": int(attrs.get("count_include_pad", 0))} \
            if op == "AveragePool" else {"dilations": attrs["dilations"]}
        if op == "AveragePool" and any(d != 1 for d in attrs["dilations"]):
            raise UnsupportedOpError(f"{step.name}: dilated AveragePool needs opset 19")
        b.node(op, [x], out, step.name, kernel_shape=attrs["kernel_shape"],
               strides=attrs["strides"], pads=attrs["pads"], ceil_mode=int(attrs["ceil_mode"]),
               **extra)
    elif op == "ReduceMean":
        b.node(op, [x], out, step.name, axes=attrs["axes"], keepdims=int(attrs["keepdims"]))
    elif op == "ReduceSum":
        b.node(op, [x, b.constant(f"{step.name}.axes", attrs["axes"], np.int64)], out,
               step.name, keepdims=int(attrs["keepdims"]))
    elif op == "Pad":
        b.node(op, [x, b.constant(f"{step.name}.pads", attrs["pads"], np.int64),
                    b.constant(f"{step.name}.value", attrs["value"])], out, step.name,
               mode="constant")
    elif op == "Transpose":
        b.node(op, [x], out, step.name, perm=attrs["perm"])
    elif op == "Concat":
        b.node(op, list(step.inputs), out, step.name, axis=attrs["axis"])
    else:
        raise UnsupportedOpError(f"cannot export {op} ({step.name})")


def export_onnx(model: TrainedModel, metadata: dict[str, Any] | None = None) -> onnx.ModelProto:
    """The fine-tuned model as a checked ONNX model (see module docstring)."""
    plan = model.forward.plan
    builder = _Builder()
    builder.names.update(plan.values)
    for step in plan.steps:
        _step(builder, step, model)

    def info(name: str) -> onnx.ValueInfoProto:
        shape: list[Any] = list(plan.values[name].shape)
        shape[0] = "batch"
        return helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, shape)

    graph = helper.make_graph(builder.nodes, "finetuned", [info(plan.inputs[0].name)],
                              [info(plan.outputs[0].name)], initializer=builder.initializers)
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                              producer_name="picompile finetune", producer_version="0.1.0")
    proto.ir_version = 8
    summary = {**model.summary, **(metadata or {})}
    helper.set_model_props(proto, {METADATA_KEY: json.dumps(summary, sort_keys=True)})
    onnx.checker.check_model(proto, full_check=True)
    return proto

