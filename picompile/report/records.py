"""Report records: the frozen dataclasses that carry what the plan reports show.

Reads: nothing from a plan (:mod:`picompile.report.facts` fills these in).
Writes: nothing — plain values for :mod:`.figures`, :mod:`.formatting`, :mod:`.html` and
:mod:`.text`; :class:`PolynomialSeries` also evaluates its series.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.polynomial import chebyshev, hermite_e, polynomial

from picompile.plan.ops import REPORTED_ACTIVATION_OPS

#: Ops the reports treat as activations: the exact ones and their polynomial replacements.

Shape = tuple[int, ...]
Curve = Callable[[np.ndarray], np.ndarray]


# --------------------------------------------------------------------------------------------
# Plan-wide records
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Tensor:
    name: str
    shape: Shape


@dataclass(frozen=True)
class Head:
    """The client's plaintext head: its ops and output names."""

    ops: tuple[str, ...]
    outputs: tuple[str, ...]


@dataclass(frozen=True)
class Summary:
    model_name: Any
    sha256: Any
    opset: Any
    producer: Any
    protocol: str
    schema_version: int
    activations: Any
    inputs: tuple[Tensor, ...]
    outputs: tuple[Tensor, ...]
    head: Head | None
    step_count: int
    parameter_count: int


@dataclass(frozen=True)
class Training:
    """The training summary of a model written by ``picompile finetune`` (its metadata)."""

    method: Any
    degree: Any
    epochs: Any
    relu_accuracy: Any
    accuracy_before: Any
    accuracy_after: Any
    seconds: Any
    relu_channels_kept: Any
    relu_channels: Any
    source_model: Any


@dataclass(frozen=True)
class PassRecord:
    name: Any
    seconds: float
    diagnostics: tuple[str, ...]


@dataclass(frozen=True)
class Bootstrapping:
    count: Any
    greedy_count: Any
    slots: Any
    level_budget: Any
    levels_after_bootstrap: Any
    correction_factor: Any = None
    scaled_values: Any = 0
    upscaled_values: Any = 0


@dataclass(frozen=True)
class Ckks:
    """CKKS parameters; ``runnable`` is ``None`` when the plan does not say."""

    scheme: Any
    security: Any
    ring_dimension: int | None
    slots: int | None
    multiplicative_depth: int | None
    scaling_mod_bits: Any
    first_mod_bits: Any
    log2_q_without_special_primes: Any
    runnable: bool | None
    reason: Any
    insecure: bool
    bootstrapping: Bootstrapping | None

    @property
    def is_runnable(self) -> bool:
        return self.runnable is None or bool(self.runnable)


@dataclass(frozen=True)
class KeySizes:
    """Estimated CKKS evaluation key sizes in bytes (``picompile.cost.evaluation_key_bytes``)."""

    towers: int
    digits: int
    per_key: int
    rotation_keys: int

    @property
    def rotation_total(self) -> int:
        return self.per_key * self.rotation_keys

    @property
    def total(self) -> int:
        """Relinearization key plus every rotation key."""
        return self.per_key * (self.rotation_keys + 1)


@dataclass(frozen=True)
class Layout:
    """Plan-wide packing facts: per input its packing, diagonals and rotations per inference."""

    packing: tuple[tuple[str, str], ...]
    diagonals_per_inference: Any
    rotations_per_inference: Any
    ciphertexts: int = 1  # the most ciphertexts one tensor spans
    slots: int = 0


@dataclass(frozen=True)
class Communication:
    online_bytes: float
    online_rounds: int
    offline_bytes: float


@dataclass(frozen=True)
class Bfv:
    """Hybrid plans: BFV parameters and the statistical parameter sigma."""

    ring_dimension: int
    slots: int
    primes: tuple[int, ...]
    modulus_bits: Any
    security: Any
    security_bits: Any
    fractional_bits: Any
    sigma: Any
    sigma_hide: Any
    sigma_correct: Any
    truncation_failure_bits: Any
    circuit_privacy: Any
    predicted: Communication | None
    #: Who supplies correlated randomness: "two-party (no dealer)" or the dealer's steps.
    correlations: str = ""


@dataclass(frozen=True)
class Memory:
    total: float
    evaluation_keys: float
    encoded_plaintexts: float
    ciphertexts: float | None


@dataclass(frozen=True)
class Cost:
    """The cost pass's prediction: latency, its table, server memory, and the latency with
    linear steps split over Ray workers (``scale_out``: (workers, seconds, speed-up))."""

    predicted_seconds: float | None
    table: Any
    ring_dimension: Any
    memory: Memory | None
    scale_out: tuple[tuple[int, float, float], ...] = ()

    def scale_out_text(self) -> str | None:
        """"1 worker 2.10 s, 4 workers 0.90 s (×2.3), …", or None without a prediction."""
        if not self.scale_out:
            return None
        return ", ".join(f"{w} worker{'s' if w > 1 else ''} {t:.2f} s"
                         + (f" (×{x:.1f})" if w > 1 else "") for w, t, x in self.scale_out)


@dataclass(frozen=True)
class Iteration:
    """One closed-loop evaluation of the degree search."""

    cost: float
    accuracy: float
    holds: bool
    degrees: Any
    noise_budget: Any


@dataclass(frozen=True, eq=False)
class NoiseCurve:
    variances: np.ndarray
    accuracy_drops: np.ndarray


@dataclass(frozen=True)
class DegreeSearch:
    accuracy_budget_points: Any
    base_accuracy: float
    achieved_accuracy: float
    labels: Any
    estimated_activation_seconds: float | None
    iterations: tuple[Iteration, ...]
    noise_curve: NoiseCurve | None
    budget_met: bool = True
    #: Layers given a composite sign-based ReLU, and the range margin their bound B carries.
    composite_layers: int = 0
    range_margin: float | None = None


@dataclass(frozen=True)
class ReluSelection:
    relu_budget: Any
    relus_total: Any
    relus_kept: Any
    accuracy_all_polynomial: float | None
    accuracy_selected: float | None
    accuracy_exact: float | None


@dataclass(frozen=True)
class CalibrationSet:
    samples: Any
    labels: bool


# --------------------------------------------------------------------------------------------
# Per-step records
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Approximation:
    """An activation's approximation record (defaults when the step has none)."""

    kept_exact: bool
    method: Any = None
    degree: Any = None
    folded_square: bool = False
    interval: tuple[float, float] | None = None
    max_error: Any = None
    weighted_mse: Any = None
    sensitivity: Any = None
    predicted_accuracy_drop: Any = None
    estimated_seconds: Any = None
    #: Levels a composite ReLU consumes in all (its stages and product, across bootstraps).
    levels: Any = None


@dataclass(frozen=True, eq=False)
class Histogram:
    """An activation's calibrated input histogram and mean."""

    edges: np.ndarray
    counts: np.ndarray
    mean: float


@dataclass(frozen=True, eq=False)
class PolynomialSeries:
    """A ``Polynomial`` step's series: one coefficient row per channel on ``interval``."""

    coefficients: np.ndarray
    interval: tuple[float, float]
    basis: str

    def values(self, x: np.ndarray) -> list[np.ndarray]:
        """The series' values on ``x``: one array per coefficient row (none for an unknown
        basis)."""
        a, b = self.interval
        if self.basis == "chebyshev":
            t = (2.0 * x - a - b) / (b - a)
            return [chebyshev.chebval(t, row) for row in self.coefficients]
        if self.basis in ("hermite_e", "hermitee", "hermite"):
            return [hermite_e.hermeval(x, row) for row in self.coefficients]
        if self.basis in ("power", "monomial"):
            return [polynomial.polyval(x, row) for row in self.coefficients]
        return []


@dataclass(frozen=True)
class HybridStep:
    """A hybrid plan's protocol facts for one step (``None``: not recorded)."""

    protocol: Any = None
    sigma_hide: Any = None
    sigma_correct: Any = None
    weight_bits: Any = None
    online_bytes: Any = None
    online_rounds: Any = None
    offline_bytes: Any = None


@dataclass(frozen=True, eq=False)
class StepFacts:
    index: int
    name: str
    op: str
    #: Activation name (``attrs["function"]`` or the op), lower case.
    function: str
    source: tuple[str, ...]
    input_shapes: tuple[Shape, ...]
    output_shapes: tuple[Shape, ...]
    attrs: Mapping[str, Any]
    #: (role, shape) of each parameter array.
    parameter_shapes: tuple[tuple[str, Shape], ...]
    level_in: Any
    level_out: Any
    diagonal_count: Any
    rotations: Any
    baby_step: Any
    folded_square: bool
    #: The cost pass's estimate (``None`` without one).
    estimated_seconds: float | None
    #: The cost estimate, else the approximation record's (``None`` without either).
    seconds: float | None
    has_approximation: bool
    approximation: Approximation
    sensitivity: Any
    calibrated: bool
    histogram: Histogram | None
    fit_interval: tuple[float, float] | None
    series: PolynomialSeries | None
    exact: Curve | None
    hybrid: HybridStep | None

    @property
    def is_activation(self) -> bool:
        """An activation row: exact, polynomial, or the product of a composite ReLU (whose
        sign stages are its parts, not rows of their own)."""
        if self.op == "Product":
            return self.attrs.get("form") == "composite"
        return (self.op in REPORTED_ACTIVATION_OPS
                and self.attrs.get("method") != "composite")

    @property
    def levels(self) -> tuple[int, int] | None:
        if self.level_in is None or self.level_out is None:
            return None
        return int(self.level_in), int(self.level_out)


@dataclass(frozen=True)
class ProfileRow:
    step: str
    op: str
    predicted: float | None
    measured: float


@dataclass(frozen=True)
class Profile:
    """A recorded run against the plan's prediction, per step."""

    backend: Any
    samples: Any
    rows: tuple[ProfileRow, ...]

    @property
    def predicted_total(self) -> float:
        return sum(r.predicted or 0.0 for r in self.rows)

    @property
    def measured_total(self) -> float:
        return sum(r.measured for r in self.rows)


@dataclass(frozen=True)
class ProtocolChoice:
    """``--protocol auto``: the network, the objective, one row per protocol, the winner."""

    network: str
    objective: str
    rows: tuple[Mapping[str, Any], ...]
    chosen: str
    reason: str
    assumed_default_network: bool


@dataclass(frozen=True, eq=False)
class ReportFacts:
    """Everything the reports show about one plan."""

    summary: Summary
    passes: tuple[PassRecord, ...]
    ckks: Ckks | None
    bfv: Bfv | None
    rotation_key_count: int
    key_sizes: KeySizes | None
    layout: Layout
    cost: Cost | None
    latency: tuple[float | None, str]
    degrees: DegreeSearch | None
    select: ReluSelection | None
    calibration: CalibrationSet | None
    steps: tuple[StepFacts, ...]
    training: Training | None = None
    protocol_choice: ProtocolChoice | None = None
    #: ``--schedule auto`` on a deep degree-2 plan: one line per schedule, and the chosen one.
    schedule_choice: tuple[str, ...] = ()
    #: bootstrapped plans: top-1 under the bootstraps' measured error (``passes/precision.py``)
    bootstrap_precision: str | None = None
