"""ONNX frontend: reads an ONNX model, writes the server-side IR and the client-side head.

Reads: an ONNX file (path, bytes) or an ``onnx.ModelProto``.
Writes: a :class:`FrontendResult` — the IR :class:`~picompile.ir.Graph` of the part that runs on
encrypted data, the classifier head (an ONNX model the client runs in plaintext after
decryption), and facts about the source model (sha256, opset, producer, and the training summary
of a model written by ``picompile finetune``, from its ``metadata_props``).

Steps: ``onnx.load`` → ``onnx.checker`` → opset conversion (models older than opset 13 are
converted with ``onnx.version_converter``) → batch dimension fixed to 1 → constants taken out of
the proto (graph inputs with an initializer are constants, not runtime inputs) → constant folding
(``onnx.reference`` evaluates all-constant nodes once each: weights made by ConstantOfShape,
shape arithmetic, Shape of static tensors) alternating with strict shape inference until every
tensor has a static shape → head split → IR. Large constants stay numpy arrays: shape inference
sees only their type and shape.

Batch: axis 0 of every graph input of rank ≥ 2 is the batch axis; a dynamic batch axis is fixed
to 1. Any other dynamic dimension is a :class:`~picompile.errors.ModelError`.

Head: Softmax, LogSoftmax, ArgMax, ArgMin, ZipMap, Cast to a non-float type and every
``ai.onnx.ml`` op, plus all
nodes downstream of them, run on the client after decryption (they are not linear and cost
nothing in plaintext). The encrypted part must then end in a single tensor (the logits).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx
from onnx import helper, numpy_helper, shape_inference

from picompile.errors import ModelError, UnsupportedOpError
from picompile.ir import Graph, Node, Value
from picompile.plan.ops import ONNX_HEAD_OPS, ONNX_SERVER_OPS

FLOAT_TYPES = frozenset({onnx.TensorProto.FLOAT, onnx.TensorProto.DOUBLE, onnx.TensorProto.FLOAT16})
HEAD_DOMAINS = frozenset({"ai.onnx.ml"})
MIN_OPSET = 13
MAX_OPSET = 23
#: ``metadata_props`` key under which ``picompile finetune`` stores its training summary (JSON).
FINETUNE_METADATA_KEY = "picompile.finetune"


@dataclass
class FrontendResult:
    """What the frontend hands to the passes."""

    graph: Graph
    head_model: bytes | None
    head_ops: list[str]
    head_outputs: list[str]
    model_outputs: list[str]
    model_sha256: str
    model_name: str
    opset: int
    producer: str
    reference_model: bytes = b""
    notes: list[str] = field(default_factory=list)
    finetune: dict | None = None


def load_model(model: str | Path | bytes | onnx.ModelProto) -> tuple[onnx.ModelProto, bytes, str]:
    """Read a model; returns (proto, serialized bytes, display name). Raises ModelError."""
    name = "model"
    try:
        if isinstance(model, onnx.ModelProto):
            raw = model.SerializeToString()
        elif isinstance(model, bytes):
            raw = model
        else:
            path = Path(model)
            name = path.name
            raw = path.read_bytes()
    except OSError as exc:
        raise ModelError(f"cannot read ONNX model {model}: {exc.strerror or exc}") from None
    try:
        proto = onnx.load_from_string(raw)
    except Exception as exc:  # protobuf raises DecodeError, RuntimeWarning-ish variants
        raise ModelError(
            f"{name} is not a readable ONNX model (truncated or not an ONNX protobuf): {exc}"
        ) from None
    if not proto.graph.node and not proto.graph.output:
        raise ModelError(f"{name} is not a readable ONNX model: it has no graph")
    try:
        onnx.checker.check_model(proto)
    except Exception as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelError(f"{name} is not a valid ONNX model: {first}") from None
    return proto, raw, name


def finetune_summary(proto: onnx.ModelProto) -> dict | None:
    """The training summary ``picompile finetune`` stored in the model, or None."""
    for prop in proto.metadata_props:
        if prop.key == FINETUNE_METADATA_KEY:
            try:
                summary = json.loads(prop.value)
            except ValueError:
                return None
            return summary if isinstance(summary, dict) else None
    return None


def default_opset(proto: onnx.ModelProto) -> int:
    for entry in proto.opset_import:
        if entry.domain in ("", "ai.onnx"):
            return int(entry.version)
    raise ModelError("model imports no default-domain opset")


def convert_opset(proto: onnx.ModelProto, name: str) -> onnx.ModelProto:
    opset = default_opset(proto)
    if opset > MAX_OPSET:
        raise ModelError(
            f"{name} uses opset {opset}; picompile supports opsets {MIN_OPSET}..{MAX_OPSET}"
        )
    if opset >= MIN_OPSET:
        return proto
    try:
        converted = onnx.version_converter.convert_version(proto, MIN_OPSET)
    except Exception as exc:
        raise ModelError(
            f"{name} uses opset {opset} and could not be converted to opset {MIN_OPSET}: {exc}"
        ) from None
    return converted


def fix_batch_dimension(proto: onnx.ModelProto, name: str) -> None:
    """Fix a dynamic batch axis (axis 0, rank >= 2) of every input to 1; reject other dynamics."""
    initializers = {init.name for init in proto.graph.initializer}
    for inp in proto.graph.input:
        if inp.name in initializers:
            continue
        if not inp.type.HasField("tensor_type"):
            raise ModelError(f"input {inp.name!r} of {name} is not a tensor")
        tensor_type = inp.type.tensor_type
        if not tensor_type.HasField("shape"):
            raise ModelError(f"input {inp.name!r} of {name} has no shape: picompile needs "
                             "static shapes (only the batch dimension may be dynamic)")
        dims = tensor_type.shape.dim
        for axis, dim in enumerate(dims):
            dynamic = not dim.HasField("dim_value") or dim.dim_value <= 0
            if not dynamic:
                continue
            if axis == 0 and len(dims) >= 2:
                dim.Clear()
                dim.dim_value = 1
                continue
            label = dim.dim_param or "?"
            raise ModelError(
                f"input {inp.name!r} of {name} has a dynamic dimension {label!r} at axis {axis}: "
                "only the batch dimension (axis 0) may be dynamic; export with static shapes"
            )
    # Let shape inference recompute intermediate and output shapes from the fixed inputs.
    del proto.graph.value_info[:]
    for out in proto.graph.output:
        if out.type.HasField("tensor_type"):
            out.type.tensor_type.ClearField("shape")


def infer_shapes(proto: onnx.ModelProto, name: str) -> onnx.ModelProto:
    try:
        return shape_inference.infer_shapes(proto, check_type=True, strict_mode=True,
                                            data_prop=True)
    except Exception as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelError(f"shape inference failed on {name}: {first}") from None


def static_shapes(proto: onnx.ModelProto) -> dict[str, tuple[int, ...]]:
    """Every value whose shape shape-inference determined completely."""
    shapes: dict[str, tuple[int, ...]] = {}
    infos = list(proto.graph.input) + list(proto.graph.value_info) + list(proto.graph.output)
    for info in infos:
        if not info.type.HasField("tensor_type"):
            continue
        tensor_type = info.type.tensor_type
        if not tensor_type.HasField("shape"):
            continue
        dims = tensor_type.shape.dim
        if all(d.HasField("dim_value") for d in dims):
            shapes[info.name] = tuple(int(d.dim_value) for d in dims)
    for init in proto.graph.initializer:
        shapes[init.name] = tuple(int(d) for d in init.dims)
    return shapes


def value_dtypes(proto: onnx.ModelProto) -> dict[str, str]:
    dtypes: dict[str, str] = {}
    infos = list(proto.graph.input) + list(proto.graph.value_info) + list(proto.graph.output)
    for info in infos:
        if info.type.HasField("tensor_type") and info.type.tensor_type.elem_type:
            np_type = helper.tensor_dtype_to_np_dtype(info.type.tensor_type.elem_type)
            dtypes[info.name] = str(np.dtype(np_type))
    return dtypes


def _evaluate_node(node: onnx.NodeProto, inputs: list[np.ndarray | None],
                   opset_imports: list) -> list[np.ndarray]:
    from onnx.reference import ReferenceEvaluator

    feeds = {}
    graph_inputs = []
    for i, (value_name, array) in enumerate(zip(node.input, inputs, strict=False)):
        if not value_name:
            continue
        fed = f"in{i}"
        feeds[fed] = array
        graph_inputs.append(helper.make_tensor_value_info(fed, helper.np_dtype_to_tensor_dtype(
            array.dtype), array.shape))
    renamed = helper.make_node(node.op_type, [f"in{i}" if v else "" for i, v in
                                              enumerate(node.input)],
                               [f"out{i}" for i in range(len(node.output))], domain=node.domain)
    renamed.attribute.extend(node.attribute)
    outputs = [helper.make_empty_tensor_value_info(f"out{i}") for i in range(len(node.output))]
    graph = helper.make_graph([renamed], "fold", graph_inputs, outputs)
    model = helper.make_model(graph, opset_imports=opset_imports)
    return [np.asarray(a) for a in ReferenceEvaluator(model).run(None, feeds)]


#: Folded constants up to this many elements stay in the proto as initializers, so that shape
#: inference's data propagation sees their values (shape tensors); larger ones (weights) are
#: declared to shape inference by type and shape only and kept in numpy.
PROTO_CONSTANT_LIMIT = 4096


def _declare_constant(proto: onnx.ModelProto, value_name: str, array: np.ndarray) -> None:
    if array.size <= PROTO_CONSTANT_LIMIT:
        proto.graph.initializer.append(numpy_helper.from_array(array, value_name))
        return
    proto.graph.input.append(helper.make_tensor_value_info(
        value_name, helper.np_dtype_to_tensor_dtype(array.dtype), array.shape))


def extract_constants(proto: onnx.ModelProto) -> dict[str, np.ndarray]:
    """Move every initializer out of the proto (graph inputs with an initializer are constants,
    not runtime inputs); small ones come back as initializers, large ones as typed inputs."""
    constants = {}
    for init in proto.graph.initializer:
        try:
            constants[init.name] = numpy_helper.to_array(init)
        except (ValueError, TypeError, KeyError) as exc:
            raise ModelError(f"initializer {init.name!r} is malformed (dims {list(init.dims)}, "
                             f"data type {init.data_type}): {exc}") from None
    runtime_inputs = [i for i in proto.graph.input if i.name not in constants]
    del proto.graph.input[:]
    proto.graph.input.extend(runtime_inputs)
    del proto.graph.initializer[:]
    proto.ir_version = max(proto.ir_version, 4)  # initializers need not be graph inputs
    for value_name, array in constants.items():
        _declare_constant(proto, value_name, array)
    return constants


def fold_constants(proto: onnx.ModelProto, name: str
                   ) -> tuple[onnx.ModelProto, dict[str, np.ndarray]]:
    """Fold all-constant nodes (weights made by ConstantOfShape, shape arithmetic, Shape of
    static tensors) before and between strict shape inferences, until a fixed point.

    Returns the proto without the folded nodes and every constant by name (numpy).
    """
    constants = extract_constants(proto)
    opsets = list(proto.opset_import)
    for round_ in range(16):
        proto = infer_shapes(proto, name) if round_ else proto  # round 0: constants only
        shapes = static_shapes(proto)
        kept, folded = [], 0
        for node in proto.graph.node:
            arrays: list[np.ndarray] | None = None
            if node.op_type == "Constant":
                arrays = _evaluate_node(node, [], opsets)
            elif node.op_type == "Shape" and node.input[0] in shapes and not node.attribute:
                arrays = [np.array(shapes[node.input[0]], dtype=np.int64)]
            elif (node.domain in ("", "ai.onnx") and node.input
                  and all((not v) or v in constants for v in node.input)
                  and not node.op_type.startswith("Random")):
                arrays = _evaluate_node(node, [constants.get(v) for v in node.input], opsets)
            if arrays is None:
                kept.append(node)
                continue
            folded += 1
            for out_name, array in zip(node.output, arrays, strict=False):
                constants[out_name] = array
                _declare_constant(proto, out_name, array)
        if not folded and round_:
            return proto, constants
        del proto.graph.node[:]
        proto.graph.node.extend(kept)
        del proto.graph.value_info[:]
    return infer_shapes(proto, name), constants


def _is_head_node(node: onnx.NodeProto) -> bool:
    """Head ops; a Cast is a head op unless it casts between float types (then a no-op)."""
    if node.op_type == "Cast":
        to = next((a.i for a in node.attribute if a.name == "to"), None)
        return to not in FLOAT_TYPES
    return node.op_type in ONNX_HEAD_OPS or node.domain in HEAD_DOMAINS


def split_head(proto: onnx.ModelProto, name: str, constants: dict[str, np.ndarray]
               ) -> tuple[list[onnx.NodeProto], list[onnx.NodeProto], list[str]]:
    """Split nodes into (server nodes, head nodes, server outputs)."""
    head_values: set[str] = set()
    server, head = [], []
    for node in proto.graph.node:  # ONNX nodes are topologically sorted
        if _is_head_node(node) or any(v in head_values for v in node.input):
            head.append(node)
            head_values.update(node.output)
        else:
            server.append(node)
    server_values = {v for n in server for v in n.output}
    graph_inputs = [i.name for i in proto.graph.input if i.name not in constants]
    boundary: list[str] = []
    for node in head:
        for v in node.input:
            if (v in server_values or v in graph_inputs) and v not in boundary:
                boundary.append(v)
    for out in proto.graph.output:
        if out.name not in head_values and out.name not in boundary:
            boundary.append(out.name)
    if len(boundary) != 1:
        raise UnsupportedOpError(
            f"{name}: the encrypted part must end in one tensor, but it hands "
            f"{len(boundary)} tensors ({', '.join(boundary)}) to the outputs/classifier head"
        )
    return server, head, boundary


def build_head_model(proto: onnx.ModelProto, head: list[onnx.NodeProto], boundary: str,
                     shapes: dict[str, tuple[int, ...]], dtypes: dict[str, str],
                     constants: dict[str, np.ndarray]) -> bytes:
    """The client-side head as a standalone ONNX model whose input is the server output."""
    used = {v for n in head for v in n.input}
    inits = [numpy_helper.from_array(constants[v], v) for v in sorted(used) if v in constants]
    shape = list(shapes[boundary])
    if shape:
        shape[0] = "batch"  # the client may evaluate many decrypted outputs at once
    elem = helper.np_dtype_to_tensor_dtype(np.dtype(dtypes.get(boundary, "float32")))
    graph = helper.make_graph(
        head, "client_head", [helper.make_tensor_value_info(boundary, elem, shape)],
        list(proto.graph.output), initializer=inits,
    )
    model = helper.make_model(graph, opset_imports=list(proto.opset_import))
    model.ir_version = proto.ir_version
    return model.SerializeToString()


def _attribute_dict(node: onnx.NodeProto) -> dict:
    attrs = {}
    for attr in node.attribute:
        value = helper.get_attribute_value(attr)
        if isinstance(value, bytes):
            value = value.decode()
        elif isinstance(value, onnx.TensorProto):
            value = numpy_helper.to_array(value)
        elif isinstance(value, list):
            value = [v.decode() if isinstance(v, bytes) else v for v in value]
        attrs[attr.name] = value
    return attrs


def to_ir(proto: onnx.ModelProto, server: list[onnx.NodeProto], server_output: str,
          shapes: dict[str, tuple[int, ...]], dtypes: dict[str, str], name: str,
          constants: dict[str, np.ndarray]) -> Graph:
    graph = Graph(name)
    for inp in proto.graph.input:
        if inp.name in constants:
            continue
        graph.add_value(Value(inp.name, shapes[inp.name], dtypes.get(inp.name, "float32")))
        graph.inputs.append(inp.name)
    used_names: set[str] = set()
    for index, onnx_node in enumerate(server):
        op = onnx_node.op_type
        node_name = onnx_node.name or f"{op}_{index}"
        if onnx_node.domain not in ("", "ai.onnx") or op not in ONNX_SERVER_OPS:
            supported = ", ".join(sorted(ONNX_SERVER_OPS | ONNX_HEAD_OPS | {"ai.onnx.ml.*"}))
            raise UnsupportedOpError(
                f"node {node_name!r} uses unsupported op "
                f"{(onnx_node.domain + '.') if onnx_node.domain else ''}{op}; "
                f"picompile supports: {supported} (and constant shape arithmetic)"
            )
        while node_name in used_names:
            node_name += "_"
        used_names.add(node_name)
        for v in onnx_node.input:
            if v and v not in graph.values:
                if v in constants:
                    graph.add_constant(v, constants[v])
                else:
                    raise ModelError(f"node {node_name!r} reads {v!r}, which nothing produces")
        for v in onnx_node.output:
            if not v:
                continue
            if v not in shapes:
                raise ModelError(
                    f"the shape of {v!r} (output of {node_name!r}, {op}) is not static after "
                    "shape inference: picompile needs static shapes"
                )
            graph.add_value(Value(v, shapes[v], dtypes.get(v, "float32")))
        graph.add_node(Node(node_name, op, list(onnx_node.input),
                            [v for v in onnx_node.output if v], _attribute_dict(onnx_node),
                            source=[onnx_node.name or node_name],
                            meta={"onnx_input": onnx_node.input[0] if onnx_node.input else ""}))
    if server_output not in graph.values:
        if server_output in constants:
            raise UnsupportedOpError(f"{name}: the model output {server_output!r} is a constant")
        raise ModelError(f"{name}: output {server_output!r} is produced by no node")
    graph.outputs = [server_output]
    return graph


def import_onnx(model: str | Path | bytes | onnx.ModelProto) -> FrontendResult:
    """Run the whole frontend (see module docstring)."""
    proto, raw, name = load_model(model)
    proto = convert_opset(proto, name)
    reference_model = proto.SerializeToString()  # before batch fixing: calibration batches
    fix_batch_dimension(proto, name)
    proto, constants = fold_constants(proto, name)
    shapes = static_shapes(proto)
    dtypes = value_dtypes(proto)
    server, head, boundary = split_head(proto, name, constants)
    graph = to_ir(proto, server, boundary[0], shapes, dtypes, name, constants)
    graph.prune()
    head_bytes = (build_head_model(proto, head, boundary[0], shapes, dtypes, constants)
                  if head else None)
    return FrontendResult(
        graph=graph,
        head_model=head_bytes,
        head_ops=[n.op_type for n in head],
        head_outputs=[o.name for o in proto.graph.output] if head else [],
        model_outputs=[o.name for o in proto.graph.output],
        model_sha256=hashlib.sha256(raw).hexdigest(),
        model_name=name,
        opset=default_opset(proto),
        producer=f"{proto.producer_name} {proto.producer_version}".strip(),
        reference_model=reference_model,
        finetune=finetune_summary(proto),
    )
