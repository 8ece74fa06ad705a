"""Fuzz harnesses: everything a user or a peer can feed picompile, mutated.

Reads: the seed corpus (``fuzz/corpus/<harness>/``, written by ``fuzz/make_corpus.py``) and a
random generator. Writes: nothing but temporary files (removed); a harness returns normally or
raises a :class:`~picompile.errors.PicompileError` — any other exception, a hang or a crash is
a finding (``fuzz/run.py`` records the input).

Harnesses (each ``harness(data: bytes) -> None``; ``MUTATORS[name]`` turns a seed into a fuzz
input):

* ``plan_file``   — ``Plan.from_bytes`` on mutated plan files (bytes flipped, cut, spliced);
* ``plan_json``   — the same with ``plan.json`` mutated field by field and the file re-hashed,
  so that the contract's validation is reached past the hash check;
* ``onnx_model``  — ``picompile.compile`` (frontend + canonicalize, writing the plan file: no
  partial or temporary file may be left) on mutated ONNX models (protobuf fields mutated: ops,
  attributes, dims, initializers, edges; or raw bytes), and the plain run of what compiles;
* ``numpy_input`` — the ``--input`` / ``--calib`` readers on mutated ``.npy`` / ``.npz`` files;
* ``frames``      — the channel's frame and payload decoding (both protocols' wire format);
* ``fhe_session`` — an FHE server's session on mutated client messages (hello, keys);
* ``hybrid_session`` — a hybrid server on mutated client messages (hello, keys, ciphertexts).
"""

from __future__ import annotations

import io
import json
import math
import os
import tempfile
import zipfile
from collections.abc import Callable
from functools import cache
from pathlib import Path

import numpy as np
import onnx

import picompile
from picompile.errors import PicompileError

CORPUS = Path(__file__).resolve().parent / "corpus"
#: JSON values a structured mutation may substitute.
ODD_VALUES = (None, True, 0, -1, 1 << 70, 1e308, float("nan"), "", "x" * 40, [], {}, [1, "a"],
              {"protocol": "he_linear"})


def seeds(name: str) -> list[bytes]:
    """The committed seed inputs of one harness."""
    folder = CORPUS / name
    files = sorted(p for p in folder.iterdir() if p.is_file()) if folder.is_dir() else []
    if not files:
        raise FileNotFoundError(f"no seed corpus in {folder}: run fuzz/make_corpus.py")
    return [p.read_bytes() for p in files]


# --------------------------------------------------------------------------- byte mutations


def mutate_bytes(data: bytes, rng: np.random.Generator) -> bytes:
    """1–8 byte-level edits: flip, set to a boundary value, insert, delete, cut, duplicate."""
    out = bytearray(data)
    for _ in range(int(rng.integers(1, 9))):
        kind = int(rng.integers(6))
        where = int(rng.integers(len(out) + 1))
        if kind == 0 and out:
            out[min(where, len(out) - 1)] ^= 1 << int(rng.integers(8))
        elif kind == 1 and out:
            out[min(where, len(out) - 1)] = int(rng.choice([0, 1, 0x7F, 0x80, 0xFF]))
        elif kind == 2:
            out[where:where] = bytes(rng.integers(0, 256, int(rng.integers(1, 9)),
                                                  dtype=np.uint8))
        elif kind == 3:
            del out[where:where + int(rng.integers(1, 17))]
        elif kind == 4:
            del out[where:]
        elif out:
            size = int(rng.integers(1, 65))
            out[where:where] = out[max(0, where - size):where]
    return bytes(out)


def mutate_json(value: object, rng: np.random.Generator, depth: int = 0) -> object:
    """One structural edit somewhere in a JSON document: replace a value, drop or add a key."""
    if isinstance(value, dict) and value and (depth < 6 and rng.random() < 0.8):
        key = list(value)[int(rng.integers(len(value)))]
        copy = dict(value)
        roll = rng.random()
        if roll < 0.15:
            del copy[key]
        elif roll < 0.25:
            copy["unexpected_" + key] = copy[key]
        else:
            copy[key] = mutate_json(copy[key], rng, depth + 1)
        return copy
    if isinstance(value, list) and value and (depth < 6 and rng.random() < 0.8):
        index = int(rng.integers(len(value)))
        copy = list(value)
        if rng.random() < 0.2:
            del copy[index]
        else:
            copy[index] = mutate_json(copy[index], rng, depth + 1)
        return copy
    if isinstance(value, (int, float)) and not isinstance(value, bool) and rng.random() < 0.5:
        return value * int(rng.choice([-1, 2, 1000])) + int(rng.integers(-2, 3))
    return ODD_VALUES[int(rng.integers(len(ODD_VALUES)))]


# --------------------------------------------------------------------------- plan files


def plan_file(data: bytes) -> None:
    picompile.plan.Plan.from_bytes(data, "fuzzed plan")


def mutate_plan_json(seed: bytes, rng: np.random.Generator) -> bytes:
    """A plan file whose ``plan.json`` is structurally mutated, repacked with a valid hash."""
    from picompile.plan.document import pack_plan_file

    with zipfile.ZipFile(io.BytesIO(seed)) as archive:
        doc = json.loads(archive.read("plan.json"))
        arrays = archive.read("arrays.npz")
    for _ in range(int(rng.integers(1, 4))):
        doc = mutate_json(doc, rng)
    if rng.random() < 0.2:
        arrays = mutate_bytes(arrays, rng)
    return pack_plan_file(json.dumps(doc).encode(), arrays)


def plan_json(data: bytes) -> None:
    plan = picompile.plan.Plan.from_bytes(data, "fuzzed plan")
    plan.to_json()


# --------------------------------------------------------------------------- ONNX models


def mutate_onnx(seed: bytes, rng: np.random.Generator) -> bytes:
    """Mutate the model's protobuf fields (a node's op, an attribute, a tensor's dims or data, an
    edge, an input shape), or its raw bytes one time in five."""
    if rng.random() < 0.2:
        return mutate_bytes(seed, rng)
    model = onnx.load_from_string(seed)
    graph = model.graph
    for _ in range(int(rng.integers(1, 4))):
        kind = int(rng.integers(7))
        if kind == 0 and graph.node:
            node = graph.node[int(rng.integers(len(graph.node)))]
            node.op_type = str(rng.choice(["Relu", "Conv", "Add", "Mul", "MaxPool", "Gemm",
                                           "Reshape", "Foo", "Softmax", "Pad", "Concat"]))
        elif kind == 1 and graph.node:
            node = graph.node[int(rng.integers(len(graph.node)))]
            for attribute in node.attribute:
                if attribute.ints:
                    attribute.ints[int(rng.integers(len(attribute.ints)))] = int(
                        rng.choice([-1, 0, 3, 1 << 20]))
                elif attribute.type == onnx.AttributeProto.INT:
                    attribute.i = int(rng.choice([-5, 0, 7, 1 << 40]))
                elif attribute.type == onnx.AttributeProto.FLOAT:
                    attribute.f = float(rng.choice([0.0, -1.0, 1e30, np.nan]))
        elif kind == 2 and graph.initializer:
            tensor = graph.initializer[int(rng.integers(len(graph.initializer)))]
            if tensor.dims and rng.random() < 0.5:
                tensor.dims[int(rng.integers(len(tensor.dims)))] = int(rng.choice([0, 1, 7, -3]))
            elif tensor.raw_data:
                tensor.raw_data = mutate_bytes(tensor.raw_data, rng)
        elif kind == 3 and graph.node:
            node = graph.node[int(rng.integers(len(graph.node)))]
            if node.input:
                node.input[int(rng.integers(len(node.input)))] = str(rng.choice(
                    ["", "missing", graph.input[0].name, node.output[0]]))
        elif kind == 4 and len(graph.node) > 1:
            del graph.node[int(rng.integers(len(graph.node)))]
        elif kind == 5 and graph.input:
            dims = graph.input[0].type.tensor_type.shape.dim
            if dims:
                dims[int(rng.integers(len(dims)))].dim_value = int(rng.choice([0, 1, 2, 9]))
        elif kind == 6:
            model.opset_import[0].version = int(rng.choice([1, 6, 11, 13, 17, 21, 99]))
    return model.SerializeToString()


#: Plans with a tensor larger than this are compiled but not run (a valid model with a pad of
#: 2^20 makes a 10^8-element tensor: slow, not wrong).
MAX_RUN_ELEMENTS = 1 << 20


def onnx_model(data: bytes) -> None:
    """Compile (writing the plan file) and run what compiles; a failed compile must leave no
    file behind, a successful one exactly the plan."""
    with tempfile.TemporaryDirectory(prefix="picompile-fuzz-") as folder:
        output = Path(folder) / "model.piplan"
        try:
            plan = picompile.compile(data, output)
        finally:
            left = sorted(p.name for p in Path(folder).iterdir())
            if left not in ([], ["model.piplan"]) or (left and not output.stat().st_size):
                raise AssertionError(f"compile left {left} behind")
    if max(math.prod(value.shape) for value in plan.values.values()) > MAX_RUN_ELEMENTS:
        return
    x = {spec.name: np.full(spec.shape, 0.5, dtype=np.float32) for spec in plan.inputs}
    picompile.run(plan, x if len(x) > 1 else next(iter(x.values())))


# --------------------------------------------------------------------------- numpy inputs


@cache
def _input_plan() -> picompile.plan.Plan:
    return picompile.plan.Plan.from_bytes(seeds("plan_file")[0])


def numpy_input(data: bytes) -> None:
    """``run --input`` and ``compile --calib`` on a fuzzed file (.npz when it is a zip)."""
    from picompile.calibration_data import load_calibration
    from picompile.errors import InputError
    from picompile.numpy_files import read_numpy_file
    from picompile.runtime.backend import normalize_inputs

    plan = _input_plan()
    suffix = ".npz" if data[:2] == b"PK" else ".npy"
    handle, name = tempfile.mkstemp(suffix=suffix)
    try:
        with os.fdopen(handle, "wb") as file:
            file.write(data)
        value = read_numpy_file(name, InputError, "input file")
        normalize_inputs(plan, value)
        load_calibration(name, {spec.name: tuple(spec.shape) for spec in plan.inputs})
    finally:
        os.unlink(name)


# --------------------------------------------------------------------------- protocol messages


def frames(data: bytes) -> None:
    """Receive every frame in ``data`` until the peer's EOF."""
    from picompile.errors import ProtocolError
    from picompile.runtime.channel import InMemoryChannel

    sender, receiver = InMemoryChannel.pair(timeout=2.0)
    sender.send_raw(data)
    sender.close()
    for _ in range(64):
        try:
            receiver.recv()
        except ProtocolError as exc:
            if str(exc) == "peer closed the connection":  # every frame read: a valid stream
                return
            raise


def _session_frames(messages: list[tuple[str, object]]) -> bytes:
    """Encoded frames of ``(kind, payload)`` messages, as a client would send them."""
    from picompile.runtime.channel.framing import pack_header
    from picompile.runtime.channel.payload import encode_payload

    frames = []
    for kind, payload in messages:
        body = encode_payload(payload)
        frames.append(pack_header(kind, len(body)) + body)
    return b"".join(frames)


def _serve(server_class: Callable, plan, data: bytes) -> None:
    from picompile.runtime.channel import InMemoryChannel

    client, server_end = InMemoryChannel.pair(timeout=2.0)
    client.send_raw(data)
    client.close()
    server_class(plan, server_end).serve()


def mutate_session(seed: bytes, rng: np.random.Generator) -> bytes:
    """Decode a recorded client session, mutate one message's payload structurally (or the
    raw frames one time in four), re-encode."""
    if rng.random() < 0.25:
        return mutate_bytes(seed, rng)
    from picompile.runtime.channel import InMemoryChannel

    sender, receiver = InMemoryChannel.pair(timeout=1.0)
    sender.send_raw(seed)
    sender.close()
    messages = []
    while True:
        try:
            message = receiver.recv()
        except PicompileError:
            break
        messages.append((message.kind, message.payload))
    index = int(rng.integers(len(messages)))
    kind, payload = messages[index]
    messages[index] = (kind, _mutate_payload(payload, rng))
    return _session_frames(messages)


def _mutate_payload(payload: object, rng: np.random.Generator) -> object:
    """Like :func:`mutate_json`, and bytes/arrays in the payload are cut or flipped."""
    if isinstance(payload, bytes):
        return mutate_bytes(payload, rng)
    if isinstance(payload, np.ndarray):
        roll = rng.random()
        if roll < 0.3 and payload.size:
            return payload[: int(rng.integers(payload.size))]
        if roll < 0.6:
            return payload.astype(rng.choice([np.float64, np.int32, np.uint64]))
        return payload.reshape(-1)[::-1].copy()
    if isinstance(payload, dict) and payload and rng.random() < 0.85:
        key = list(payload)[int(rng.integers(len(payload)))]
        return {**payload, key: _mutate_payload(payload[key], rng)}
    if isinstance(payload, list) and payload and rng.random() < 0.85:
        index = int(rng.integers(len(payload)))
        copy = list(payload)
        copy[index] = _mutate_payload(copy[index], rng)
        return copy
    return mutate_json(payload, rng)


@cache
def _session_plan(name: str) -> picompile.plan.Plan:
    return picompile.plan.Plan.from_bytes((CORPUS / "plan_file" / name).read_bytes())


def fhe_session(data: bytes) -> None:
    from picompile.runtime.fhe_session import FheServer

    _serve(FheServer, _session_plan("conv_fhe.piplan"), data)


def hybrid_session(data: bytes) -> None:
    from picompile.runtime.hybrid import HybridServer

    _serve(HybridServer, _session_plan("conv_hybrid.piplan"), data)


HARNESSES: dict[str, Callable[[bytes], None]] = {
    "plan_file": plan_file, "plan_json": plan_json, "onnx_model": onnx_model,
    "numpy_input": numpy_input, "frames": frames, "fhe_session": fhe_session,
    "hybrid_session": hybrid_session,
}
MUTATORS: dict[str, Callable[[bytes, np.random.Generator], bytes]] = {
    "plan_file": mutate_bytes, "plan_json": mutate_plan_json, "onnx_model": mutate_onnx,
    "numpy_input": mutate_bytes, "frames": mutate_session, "fhe_session": mutate_session,
    "hybrid_session": mutate_session,
}
#: The corpus folder each harness draws its seeds from.
SEED_FOLDERS = {"plan_file": "plan_file", "plan_json": "plan_file", "onnx_model": "onnx_model",
                "numpy_input": "numpy_input", "frames": "fhe_session",
                "fhe_session": "fhe_session", "hybrid_session": "hybrid_session"}
