"""The plan record and its ``.piplan`` file format.

Reads: a ``.piplan`` file (``Plan.load``) or the compiler's lowered records.
Writes: a ``.piplan`` file (``Plan.save``).

File format: a zip archive holding ``plan.json`` (readable, versioned schema) and
``arrays.npz`` (weights, biases, later diagonals and polynomial coefficients, and the client head
as ONNX bytes). The zip comment carries the sha256 of every byte of the file before the comment,
so any flipped, truncated or appended byte is detected on load. Loading validates, in order: the
file hash, the zip structure, the schema version, the JSON structure, that every step's inputs
are defined before use, and that every parameter array has the shape its step declares. Every
failure is a :class:`~picompile.errors.PlanError` naming what is wrong. The typed records the
runtime reads (:mod:`picompile.plan.contract`) are type-checked field by field on load.

Schema history: 1 — untyped ``security``/``meta`` dicts; 2 — typed ``ckks``/``bfv``/``layout``
and per-step ``fhe``/``hybrid`` records, ``client_view`` flag, power-basis coefficients stored.
"""

from __future__ import annotations

import hashlib
import io
import json
import zipfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from picompile.atomic_files import atomic_write
from picompile.errors import PlanError
from picompile.plan.contract import (
    POWER_BASIS,
    BfvParameters,
    CkksParameters,
    FheStep,
    HybridStep,
    SlotLayout,
    build,
)

SCHEMA_VERSION = 2
HASH_HEX_LENGTH = 64
HEAD_ARRAY = "__client_head__.onnx"


@dataclass
class TensorSpec:
    name: str
    shape: list[int]
    dtype: str = "float32"


@dataclass
class Step:
    """One runtime step: an op over named tensors with parameter arrays referenced by key.

    ``fhe``/``hybrid`` are what the runtime of the plan's protocol reads; ``meta`` holds the
    compiler's annotations for reports only (the runtime never reads it).
    """

    name: str
    op: str
    inputs: list[str]
    outputs: list[str]
    attrs: dict[str, Any] = field(default_factory=dict)
    params: dict[str, str] = field(default_factory=dict)
    source: list[str] = field(default_factory=list)
    meta: dict[str, Any] = field(default_factory=dict)
    fhe: FheStep | None = None
    hybrid: HybridStep | None = None

    @property
    def hybrid_protocol(self) -> str:
        """How the step runs in a hybrid plan (``HybridStep.protocol``; ``local`` without)."""
        return self.hybrid.protocol if self.hybrid is not None else "local"


@dataclass
class HeadSpec:
    """The client-side plaintext head (an ONNX model stored in the arrays)."""

    input: str
    outputs: list[str]
    ops: list[str]


@dataclass
class Plan:
    """A compiled private-inference plan.

    The runtime reads ``inputs``/``outputs``/``values``/``steps``/``arrays``/``head`` and the
    typed records ``ckks`` (FHE), ``bfv`` (hybrid), ``layout`` and ``client_view`` (a plan
    without the server's weights); ``security`` (what the report states), ``passes`` and
    ``analysis`` are the compiler's record for reports.
    """

    model: dict[str, Any]
    protocol: str
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    values: dict[str, TensorSpec]
    steps: list[Step]
    arrays: dict[str, np.ndarray]
    head: HeadSpec | None = None
    model_outputs: list[str] = field(default_factory=list)
    passes: list[dict[str, Any]] = field(default_factory=list)
    security: dict[str, Any] = field(default_factory=dict)
    analysis: dict[str, Any] = field(default_factory=dict)
    ckks: CkksParameters | None = None
    bfv: BfvParameters | None = None
    layout: SlotLayout | None = None
    client_view: bool = False
    schema_version: int = SCHEMA_VERSION

    # -- access ------------------------------------------------------------------------------
    def param(self, step: Step, role: str) -> np.ndarray:
        return self.arrays[step.params[role]]

    def exact_relu_elements(self, step: Step) -> np.ndarray | None:
        """A partial-ReLU ``Polynomial`` step (``relu_channels``, from a model fine-tuned under
        a ReLU budget): per element of its input, flattened, True where the channel stays an
        exact ReLU. None for every other step."""
        if "relu_channels" not in step.params:
            return None
        shape = tuple(self.values[step.inputs[0]].shape)
        exact = self.param(step, "relu_channels") > 0.5
        return np.broadcast_to(exact.reshape((1, -1) + (1,) * (len(shape) - 2)),
                               shape).reshape(-1)

    def dealer_steps(self) -> list[Step]:
        """Hybrid plans: the steps whose share protocol consumes dealer correlations — exact
        ReLUs and MaxPool (AND triples), partial ReLUs, Beaver polynomials of degree ≥ 2. HE
        linear steps, Flash quadratics and local steps are two-party."""
        return [s for s in self.steps
                if s.hybrid_protocol in ("relu", "max_pool") or "relu_channels" in s.params
                or (s.hybrid_protocol == "beaver_polynomial"
                    and self.param(s, "coefficients").shape[1] > 2)]

    @property
    def rotation_keys(self) -> list[int]:
        """The rotation-key set of the plan's layout (none without a layout)."""
        return list(self.layout.rotation_keys) if self.layout is not None else []

    @property
    def head_model(self) -> bytes | None:
        if self.head is None:
            return None
        return self.arrays[HEAD_ARRAY].tobytes()

    # -- serialization -----------------------------------------------------------------------
    def to_json(self) -> dict[str, Any]:
        doc = asdict(self)
        del doc["arrays"]
        doc["array_shapes"] = {k: list(v.shape) for k, v in self.arrays.items()}
        doc["array_dtypes"] = {k: str(v.dtype) for k, v in self.arrays.items()}
        return doc

    def to_bytes(self) -> bytes:
        """The plan file's bytes (what :meth:`save` writes)."""
        doc = json.dumps(self.to_json(), indent=1, default=_json_default).encode()
        arrays = io.BytesIO()
        np.savez(arrays, **self.arrays)
        return pack_plan_file(doc, arrays.getvalue())

    def save(self, path: str | Path) -> Path:
        raw = self.to_bytes()
        return atomic_write(Path(path), lambda file: file.write(raw))

    @classmethod
    def load(cls, path: str | Path) -> Plan:
        path = Path(path)
        try:
            raw = path.read_bytes()
        except OSError as exc:
            raise PlanError(f"cannot read plan {path}: {exc.strerror or exc}") from None
        return cls.from_bytes(raw, str(path))

    @classmethod
    def from_bytes(cls, raw: bytes, label: str = "plan") -> Plan:
        if len(raw) <= HASH_HEX_LENGTH:
            raise PlanError(f"{label} is not a picompile plan (too short)")
        body, digest = raw[:-HASH_HEX_LENGTH], raw[-HASH_HEX_LENGTH:]
        if hashlib.sha256(body).hexdigest().encode() != digest:
            raise PlanError(f"{label} is corrupt or was modified: its content hash does not match")
        try:
            with zipfile.ZipFile(io.BytesIO(raw)) as archive:
                doc = json.loads(archive.read("plan.json"))
                with np.load(io.BytesIO(archive.read("arrays.npz")), allow_pickle=False) as npz:
                    arrays = {k: npz[k] for k in npz.files}
        except Exception as exc:  # noqa: BLE001 - zip/npz/json parsing of untrusted bytes
            raise PlanError(f"{label} is not a readable picompile plan: "
                            f"{type(exc).__name__}: {exc}") from None
        try:
            return cls.from_json(doc, arrays, label)
        except (AttributeError, TypeError, KeyError, ValueError, IndexError) as exc:
            # what the typed contract does not check field by field (the document's shape)
            raise PlanError(f"{label}: malformed plan.json ({type(exc).__name__}: {exc})"
                            ) from None

    @classmethod
    def from_json(cls, doc: dict[str, Any], arrays: dict[str, np.ndarray],
                  label: str = "plan") -> Plan:
        version = doc.get("schema_version") if isinstance(doc, dict) else None
        if not isinstance(version, int):
            raise PlanError(f"{label} has no schema version")
        if version > SCHEMA_VERSION:
            raise PlanError(
                f"{label} uses plan schema version {version}, newer than this picompile "
                f"supports ({SCHEMA_VERSION}): upgrade picompile or recompile the model"
            )
        if version < SCHEMA_VERSION:
            raise PlanError(f"{label} uses old plan schema version {version}: recompile the model")
        try:
            plan = cls(
                model=doc["model"],
                protocol=doc["protocol"],
                inputs=[TensorSpec(**t) for t in doc["inputs"]],
                outputs=[TensorSpec(**t) for t in doc["outputs"]],
                values={k: TensorSpec(**t) for k, t in doc["values"].items()},
                steps=[_step(s, label) for s in doc["steps"]],
                arrays=arrays,
                head=HeadSpec(**doc["head"]) if doc.get("head") else None,
                model_outputs=list(doc.get("model_outputs", [])),
                passes=list(doc.get("passes", [])),
                security=dict(doc.get("security", {})),
                analysis=dict(doc.get("analysis", {})),
                ckks=_record(CkksParameters, doc.get("ckks"), f"{label}: ckks"),
                bfv=_record(BfvParameters, doc.get("bfv"), f"{label}: bfv"),
                layout=_record(SlotLayout, doc.get("layout"), f"{label}: layout"),
                client_view=bool(doc.get("client_view", False)),
                schema_version=version,
            )
        except (KeyError, TypeError, AttributeError) as exc:
            raise PlanError(f"{label} has a malformed plan.json: {exc}") from None
        plan.validate(label, doc.get("array_shapes", {}))
        return plan

    def validate(self, label: str = "plan", declared_shapes: dict[str, list[int]] | None = None
                 ) -> None:
        """Check internal consistency; raises PlanError."""
        defined = {t.name for t in self.inputs}
        for spec in self.inputs + self.outputs:
            if spec.name not in self.values or list(self.values[spec.name].shape) != list(
                    spec.shape):
                raise PlanError(f"{label}: tensor {spec.name!r} has inconsistent shapes")
        for step in self.steps:
            for value in step.inputs:
                if value not in defined:
                    raise PlanError(f"{label}: step {step.name!r} reads {value!r} before it is "
                                    "computed")
            for value in step.outputs:
                if value not in self.values:
                    raise PlanError(f"{label}: step {step.name!r} writes undeclared {value!r}")
                defined.add(value)
            for role, key in step.params.items():
                if key not in self.arrays:
                    raise PlanError(f"{label}: step {step.name!r} lacks its {role} array")
        for spec in self.outputs:
            if spec.name not in defined:
                raise PlanError(f"{label}: output {spec.name!r} is never computed")
        for key, shape in (declared_shapes or {}).items():
            if key not in self.arrays or list(self.arrays[key].shape) != list(shape):
                raise PlanError(f"{label}: array {key!r} does not have its declared shape")
        if self.head is not None and HEAD_ARRAY not in self.arrays:
            raise PlanError(f"{label}: the client head model is missing")
        self._validate_contract(label)

    def _validate_contract(self, label: str) -> None:
        """The typed records agree with the steps and arrays they describe."""
        if self.layout is not None:
            for name, slots in self.layout.slot_maps.items():
                if name not in self.values or len(slots) != int(
                        np.prod(self.values[name].shape[1:])):
                    raise PlanError(f"{label}: the slot map of {name!r} does not match its shape")
        if self.client_view:
            return  # a client plan holds no parameter arrays
        for step in self.steps:
            fhe = step.fhe
            if fhe is not None and fhe.linear is not None:
                if "diagonals" not in step.params or self.arrays[step.params["diagonals"]] \
                        .shape[0] != len(fhe.linear.offsets):
                    raise PlanError(f"{label}: step {step.name!r} has one diagonal per offset "
                                    "in its layout, and it does not")
            if fhe is not None and fhe.blocked is not None and not (
                    {"input_slots", "output_slots", "bias_slots"} <= set(step.params)):
                raise PlanError(f"{label}: step {step.name!r} spans several ciphertexts but "
                                "lacks the slot maps its diagonals are built from")
            if fhe is not None and fhe.basis == POWER_BASIS and not (
                    {"power_coefficients", "coefficient_slots"} & set(step.params)):
                raise PlanError(f"{label}: step {step.name!r} is evaluated in the power basis "
                                "but lacks its power coefficients")


def _record(cls: type, data: Any, where: str) -> Any:
    return None if data is None else build(cls, data, where)


def _step(doc: dict[str, Any], label: str) -> Step:
    where = f"{label}: step {doc.get('name', '?')!r}"
    return Step(**{**doc, "fhe": _record(FheStep, doc.get("fhe"), f"{where} fhe"),
                   "hybrid": _record(HybridStep, doc.get("hybrid"), f"{where} hybrid")})


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, np.floating):
        return float(obj)
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    raise TypeError(f"cannot serialize {type(obj).__name__} into plan.json")


def pack_plan_file(doc: bytes, arrays: bytes) -> bytes:
    """A plan file from ``plan.json`` and ``arrays.npz`` bytes: a zip whose comment is the
    sha256 (hex) of everything before it."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("plan.json", doc)
        archive.writestr("arrays.npz", arrays)
        archive.comment = b"0" * HASH_HEX_LENGTH
    body = buffer.getvalue()[:-HASH_HEX_LENGTH]
    return body + hashlib.sha256(body).hexdigest().encode()
