"""The typed part of the plan: every record the runtime reads, validated when a plan loads.

Reads: nothing at import; :func:`build` turns a JSON object (``plan.json``) into one of these
records and raises :class:`~picompile.errors.PlanError` naming the field on any missing field,
unknown field or wrong type. Writes: nothing (``dataclasses.asdict`` serializes them).

Who writes what (compiler side, assembled by :mod:`picompile.lowering` from the passes'
annotations):

* :class:`CkksParameters` — the ``levels`` pass: CKKS ring, depth, moduli, security, and the
  bootstrapping settings (:class:`BootstrapSettings`) of a plan deeper than leveled CKKS allows.
* :class:`BfvParameters` — the ``hybrid_parameters`` pass: BFV plaintext primes, ring,
  fixed-point bits and the statistical parameter sigma of a hybrid plan.
* :class:`SlotLayout` — the ``layout`` pass: slots per ciphertext, the rotation-key set, the
  slot map and replication period of every plan input/output (the client packs with them).
* :class:`FheStep` — per step of an FHE plan: levels in/out, replication period, the linear
  step's diagonal offsets and baby-step giant-step split (:class:`LinearLayout`, or
  :class:`BlockedLinear` over several ciphertexts), the ciphertexts its output spans, the
  evaluation basis of a polynomial, and the bootstrap after the step (:class:`Refresh`).
* :class:`HybridStep` — per step of a hybrid plan: its protocol, fixed-point bit widths, Flash
  fusion and the blocked BFV layout of an HE linear step (:class:`BlockLayout`).

The runtime never reads ``Step.meta`` nor ``Plan.analysis``: those hold the compiler's
annotations for reports (approximation errors, calibration, predicted costs).
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from typing import Any, TypeVar

from picompile.errors import PlanError

#: Evaluation bases of a ``Polynomial`` step under CKKS.
POWER_BASIS = "power"          # Σ c_i x^i, level-optimal product tree (``power_coefficients``)
CHEBYSHEV_BASIS = "chebyshev"  # OpenFHE's EvalChebyshevSeries on the step's interval
BASES = (POWER_BASIS, CHEBYSHEV_BASIS)

#: Protocols of a hybrid step (``hybrid_parameters`` pass).
HYBRID_PROTOCOLS = ("he_linear", "local_linear", "relu", "beaver_polynomial", "flash_quadratic",
                    "max_pool", "local")
#: Sources of a hybrid plan's MPC correlations (``--correlations``): oblivious transfer between
#: client and server, or a third-party dealer.
CORRELATIONS = ("two-party", "dealer")


@dataclass
class BootstrapSettings:
    """CKKS bootstrapping of a deep plan (``levels`` pass)."""

    level_budget: list[int]
    bootstrap_depth: int
    context_depth: int
    levels_after_bootstrap: int
    slots: int
    count: int
    leveled_depth: int
    correction_factor: int = 0
    greedy_count: int | None = None
    placed_after: list[str] = field(default_factory=list)
    scaled_values: int = 0  # values divided into the bootstrap's range
    upscaled_values: int = 0  # refreshed values multiplied up to fill it (sign stages)


@dataclass
class CkksParameters:
    """CKKS parameters of an FHE plan (OpenFHE, FLEXIBLEAUTO). ``runnable`` is False (with the
    ``reason``) when the plan cannot run encrypted; it then runs on the plain backend only."""

    multiplicative_depth: int
    runnable: bool
    reason: str = ""
    scheme: str = ""
    ring_dimension: int = 0
    slots: int = 0
    scaling_mod_bits: int = 0
    first_mod_bits: int = 0
    log2_q_without_special_primes: int = 0
    security: str = ""
    insecure: bool = False
    input_level: int = 0
    leveled_depth: int | None = None
    bootstrapping_required: bool = False
    bootstrapping: BootstrapSettings | None = None
    predicted_seconds: float | None = None


@dataclass
class BfvParameters:
    """BFV parameters and fixed point of a hybrid plan (``hybrid_parameters`` pass)."""

    runnable: bool
    scheme: str
    primes: list[int]
    ring_dimension: int
    slots: int
    ciphertext_modulus_bits: int
    security: str
    security_bits: int
    fractional_bits: int
    sigma: int
    mask_bits: int
    modulus_bits: float
    sigma_hide: float | None
    sigma_correct: float | None
    truncation_failure_bits: int
    circuit_privacy: str
    predicted: dict[str, int] = field(default_factory=dict)
    #: Who produces the MPC correlations: "two-party" (OT between client and server) or
    #: "dealer" (a third party trusted not to collude); ``--correlations``.
    correlations: str = "two-party"


@dataclass
class SlotLayout:
    """Plan-wide packing (``layout`` pass). ``slot_maps``/``periods`` cover the plan's inputs
    and outputs (FHE); hybrid plans fill only the key set and the counts."""

    slots: int
    rotation_keys: list[int]
    rotations_per_inference: int
    slot_maps: dict[str, list[int]] = field(default_factory=dict)
    periods: dict[str, int] = field(default_factory=dict)
    packing: dict[str, str] = field(default_factory=dict)
    replicated_values: int = 0
    diagonals_per_inference: int = 0
    plaintext_products_per_inference: int = 0
    #: Client inputs one ciphertext carries (``--batch``): input b lives in slots
    #: [b·block, (b+1)·block) with the same slot map; 1 (block 0) for one input per ciphertext.
    batch: int = 1
    block: int = 0
    #: The most ciphertexts one value spans (tensors larger than the slots; ``block_layout``).
    ciphertexts: int = 1


@dataclass
class LinearLayout:
    """A linear FHE step as generalized diagonals: one signed rotation ``offset`` per row of the
    step's ``diagonals`` array, split into baby steps (``offset mod baby_step``) and giant
    steps."""

    offsets: list[int]
    baby_step: int
    baby_rotations: list[int]
    giant_rotations: list[int]
    rotations: int
    diagonal_count: int


@dataclass
class BlockOffsets:
    """The diagonals' signed offsets of one (output ciphertext, input ciphertext) pair of a
    blocked linear step."""

    output_block: int
    input_block: int
    offsets: list[int]


@dataclass
class BlockedLinear:
    """A linear FHE step over tensors split across several ciphertexts of ``slots`` slots
    (value slot ``s`` lives in ciphertext ``s // slots`` at slot ``s % slots``). One baby-step
    size serves every pair: each input ciphertext's baby rotations are hoisted once, each output
    ciphertext sums its pairs under one rotation per giant step. The diagonals are not stored:
    the runtime builds them from the step's weights and its ``input_slots``/``output_slots``
    arrays (:mod:`picompile.runtime.blocks`)."""

    slots: int
    input_blocks: int
    output_blocks: int
    baby_step: int
    baby_rotations: list[int]
    giant_rotations: list[int]
    pairs: list[BlockOffsets]
    rotations: int
    diagonal_count: int


@dataclass
class Refresh:
    """A bootstrap after a step: levels before and after, and the power-of-two ``scale`` the
    value is divided by before the bootstrap and multiplied by after it. A ``scale`` < 1
    multiplies the value up before the bootstrap (folded into its step) and leaves it so: the
    value's consumers, all polynomials, evaluate p(x · scale)."""

    level_in: int
    level_out: int
    scale: float = 1.0


@dataclass
class FheStep:
    """What the CKKS runtime needs of one step."""

    level_in: int | None = None
    level_out: int | None = None
    period: int | None = None
    linear: LinearLayout | None = None
    basis: str | None = None
    scales_for_free: bool = False
    bootstrap_after: Refresh | None = None
    #: ciphertexts the step's output spans (tensors larger than the slot count)
    blocks: int = 1
    blocked: BlockedLinear | None = None

    def __post_init__(self) -> None:
        if self.basis is not None and self.basis not in BASES:
            raise PlanError(f"unknown polynomial basis {self.basis!r} (expected one of "
                            f"{', '.join(BASES)})")


@dataclass
class BlockPair:
    """One (output block, input block) pair of a blocked BFV matrix and its diagonals' offsets
    and baby-step giant-step split (rotation amounts as BFV row rotations)."""

    output_block: int
    input_block: int
    offsets: list[int]
    baby_step: int
    baby_rotations: list[int]
    giant_rotations: list[int]


@dataclass
class BlockLayout:
    """An HE linear step of a hybrid plan in blocks of one BFV row (``slots`` values)."""

    slots: int
    input_blocks: int
    output_blocks: int
    pairs: list[BlockPair]
    rotations: int
    plaintext_products: int


@dataclass
class HybridStep:
    """What the hybrid runtime needs of one step: its protocol, bit widths and layout."""

    protocol: str
    public_matrix: bool = False
    weight_bits: int | None = None
    input_bits: int | None = None
    output_bits: int | None = None
    coefficient_bits: int | None = None
    output_shift: int | None = None
    sigma_hide: float | None = None
    sigma_correct: float | None = None
    fused_into: str | None = None
    flash_from: str | None = None
    online_bytes: int | None = None
    online_rounds: int | None = None
    offline_bytes: int | None = None
    offline_rounds: int | None = None
    exact_relus: int | None = None   # a partial ReLU: elements through the secure ReLU
    layout: BlockLayout | None = None

    def __post_init__(self) -> None:
        if self.protocol not in HYBRID_PROTOCOLS:
            raise PlanError(f"unknown hybrid step protocol {self.protocol!r} (expected one of "
                            f"{', '.join(HYBRID_PROTOCOLS)})")


Record = TypeVar("Record")


def build(cls: type[Record], data: Any, where: str) -> Record:
    """``cls`` from its JSON form, every field type-checked; PlanError names the bad field."""
    if not isinstance(data, dict):
        raise PlanError(f"{where}: expected an object, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise PlanError(f"{where}: unknown field {unknown[0]!r}")
    values = {}
    for name, spec in fields.items():
        if name not in data:
            if spec.default is dataclasses.MISSING and spec.default_factory is dataclasses.MISSING:
                raise PlanError(f"{where}: missing field {name!r}")
            continue
        values[name] = _convert(hints[name], data[name], f"{where}.{name}")
    return cls(**values)


def _convert(hint: Any, value: Any, where: str) -> Any:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        options = [a for a in args if a is not type(None)]
        return _convert(options[0], value, where)
    if dataclasses.is_dataclass(hint):
        return build(hint, value, where)
    if origin is list:
        if not isinstance(value, list):
            raise PlanError(f"{where}: expected a list, got {type(value).__name__}")
        return [_convert(args[0], v, f"{where}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise PlanError(f"{where}: expected an object, got {type(value).__name__}")
        return {str(k): _convert(args[1], v, f"{where}.{k}") for k, v in value.items()}
    if hint is bool:
        if not isinstance(value, bool):
            raise PlanError(f"{where}: expected true/false, got {value!r}")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise PlanError(f"{where}: expected an integer, got {value!r}")
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise PlanError(f"{where}: expected a number, got {value!r}")
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise PlanError(f"{where}: expected a string, got {value!r}")
        return value
    return value  # Any
