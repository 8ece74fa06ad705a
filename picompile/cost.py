"""Cost model: estimated CKKS cost of steps and of polynomial activations, by degree.

Reads: a degree, the number of activation elements, a step's layout and level, and a cost
table (measured by ``picompile calibrate-costs`` and cached, or the default that ships).
Writes: estimated seconds (and the depth and multiplication counts behind them).

The default table holds what we measured of OpenFHE on the development machine (N=2^16, one thread;
docs/architecture.md, "Measured OpenFHE facts"): a ciphertext-ciphertext multiplication with
relinearization ≈ 0.3 s at mid-chain, a scalar multiply/add ≈ 0.015 s, and a bootstrap ≈ 50 s that
refreshes 10 levels; so every level a polynomial consumes costs about 5 s of amortized
bootstrapping per ciphertext. That is OLA's point: depth, not multiplications, dominates, so lower
degrees pay off doubly. The CKKS issue's ``calibrate-costs`` replaces this table with measurements
of the user's machine.
(The sparse bootstrap the levels pass places measured 21 s for 6 levels at N=2^16, 1024 slots:
``BOOTSTRAP_COSTS``, used by the cost pass; the degree DP's ``CostTable`` keeps its older figure.)

Bootstrapped plans run with power-of-two rotation keys only: :func:`composed_rotations` counts
the key switches a rotation then costs (the runtime's own decomposition,
``runtime/rotations.py``), and :func:`step_seconds` charges them.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from picompile.plan.ops import FREE_SCALING_OPS
from picompile.runtime.interface import partition_giants, rotation_digits


@dataclass(frozen=True)
class CostTable:
    slots: int = 32768
    multiply_seconds: float = 0.30
    scalar_seconds: float = 0.015
    bootstrap_seconds: float = 50.0
    levels_per_bootstrap: int = 10

    @property
    def level_seconds(self) -> float:
        return self.bootstrap_seconds / self.levels_per_bootstrap


DEFAULT_COST_TABLE = CostTable()


#: Levels OpenFHE's EvalChebyshevSeries consumes on an interval [a, b] ≠ [-1, 1], measured with
#: openfhe 1.6.1 (FLEXIBLEAUTO): (largest degree, levels). The affine map to [-1, 1] costs one.
CHEBYSHEV_LEVELS = ((1, 2), (2, 3), (5, 4), (13, 5), (27, 6), (59, 7), (119, 8), (247, 9))


#: Activations up to this degree are evaluated in the power basis by a level-optimal product
#: tree (``runtime/slot_program.power_series``): ceil(log2(d+1)) levels, against OpenFHE's
#: Chebyshev series which spends one level on the affine map and one more in Paterson–Stockmeyer
#: (degree 3: 2 levels instead of 4; degree 7: 3 instead of 5). Higher degrees would save only
#: one level and lose precision to cancellation between large power-basis terms (measured
#: 3e-3 at degree 13 against ≤ 1e-4 up to degree 7), so they stay Chebyshev.
POWER_BASIS_MAX_DEGREE = 7
#: Bits of the scaling factor the power basis may spend on the growth of x^d: each term's
#: constant is encoded at the scaling factor (absolute rounding 2^-scaling), multiplied by up to
#: bound^d, and each rescale's error is relative to the largest term. 34 of 50 bits: measured
#: error ≤ 1e-4 up to degree 7 on [-6, 5] (tests/test_ckks.py), far below the fit error.
POWER_BASIS_GROWTH_BITS = 34


def power_basis_applies(degree: int, bound: float | None) -> bool:
    """True when a degree-``degree`` activation on [−bound, bound] is evaluated in the power
    basis (``bound`` None: assume it is, as the degree search does before ranges are final)."""
    if not 1 <= degree <= POWER_BASIS_MAX_DEGREE:
        return False
    return bound is None or degree * math.log2(max(float(bound), 1.0)) <= POWER_BASIS_GROWTH_BITS


def chebyshev_depth(degree: int) -> int:
    """Levels consumed by OpenFHE's Chebyshev-series evaluation of a degree-``degree`` series."""
    for largest, levels in CHEBYSHEV_LEVELS:
        if degree <= largest:
            return levels
    raise ValueError(f"degree {degree} is above the largest supported ({CHEBYSHEV_LEVELS[-1][0]})")


def polynomial_depth(degree: int, bound: float | None = None, folded: bool = False) -> int:
    """Levels a degree-``degree`` activation on [−bound, bound] consumes under CKKS: the power
    basis's ceil(log2(d+1)) when it applies, else OpenFHE's Chebyshev series. A ``folded``
    square (``passes/fold_squares.py``: s² + γ, its scale in the producer) costs one level."""
    if power_basis_applies(degree, bound):
        return 1 if folded and degree == 2 else int(degree).bit_length()
    return chebyshev_depth(degree)


def power_series_multiplications(degree: int) -> int:
    """Ciphertext products of the power-basis product tree: the squarings x², x⁴, … plus one
    product per split p = p_low + x^(2^k)·p_high whose high part is not a constant."""
    def products(d: int) -> int:
        if d <= 1:
            return 0
        top = 1 << (d.bit_length() - 1)
        return products(top - 1) + products(d - top) + (1 if d > top else 0)

    return products(degree) + max(0, int(degree).bit_length() - 1)


def polynomial_multiplications(degree: int, bound: float | None = None) -> int:
    """Ciphertext multiplications of the activation's evaluation (power-basis product tree,
    or Paterson–Stockmeyer in the Chebyshev basis)."""
    if power_basis_applies(degree, bound):
        return power_series_multiplications(degree)
    if degree <= 1:
        return 0
    if degree == 2:
        return 1
    baby = max(1, math.ceil(math.sqrt(degree / 2)))
    giant = max(0, math.ceil(math.log2(max(degree / baby, 1))))
    return baby + giant + math.ceil(degree / baby) - 1


def activation_cost(degree: int, elements: int, table: CostTable = DEFAULT_COST_TABLE,
                    bound: float | None = None, folded: bool = False) -> float:
    """Estimated seconds to evaluate a degree-``degree`` polynomial on ``elements`` values in
    [−bound, bound] (``folded``: a square whose scale the producer absorbs, one level)."""
    ciphertexts = max(1, math.ceil(elements / table.slots))
    per_ciphertext = (polynomial_multiplications(degree, bound) * table.multiply_seconds
                      + (degree + 1) * table.scalar_seconds
                      + polynomial_depth(degree, bound, folded) * table.level_seconds)
    return ciphertexts * per_ciphertext


#: Operation costs measured on this project's machine kind (2 cores, OpenFHE 1.6.1, one thread,
#: the other core idle) by ``picompile calibrate-costs --ring-dimensions 4096 32768``.
DEFAULT_OPERATION_COSTS: dict[str, Any] = {
    "source": "default table shipped with picompile (measured on a 2-core x86_64 machine)",
    "ring_dimensions": {
        "4096": {
            "towers": 12,
            "depth": 11,
            "secure_128": False,
            "encode": 0.0014338,
            "multiply_plain": 0.0003425,
            "add": 0.0001573,
            "add_plain": 0.0001082,
            "rotate": 0.0097075,
            "hoisted_precompute": 0.0047854,
            "hoisted_rotate": 0.0048868,
            "chebyshev": {
                "2": 0.017597,
                "3": 0.036525,
                "5": 0.064575,
                "7": 0.062435,
                "13": 0.087346,
                "27": 0.116437,
                "59": 0.202684
            }
        },
        "32768": {
            "towers": 12,
            "depth": 11,
            "secure_128": True,
            "encode": 0.0091684,
            "multiply_plain": 0.0019541,
            "add": 0.0007937,
            "add_plain": 0.0004349,
            "rotate": 0.0632486,
            "hoisted_precompute": 0.0301753,
            "hoisted_rotate": 0.0311666,
            "chebyshev": {
                "2": 0.130743,
                "3": 0.257499,
                "5": 0.447445,
                "7": 0.512512,
                "13": 0.880376,
                "27": 1.155948,
                "59": 1.753463
            }
        }
    },
}


#: One sparse ``EvalBootstrap`` (seconds) by ring dimension and slots, measured here with
#: openfhe 1.6.1, one thread, 50-bit scaling, 60-bit first modulus, context depth 24
#: (``bench/fhe_inference.py --bootstrap-only``, see BENCHMARKS.md): level budget [2,2] up to
#: 1024 slots, [3,3] at 16384 slots (``passes/bootstrap_placement.py``); ``keys`` is the number
#: of rotation keys ``EvalBootstrapKeyGen`` makes (16384 slots: estimated from the 6.6 GB it
#: allocates). Other sizes scale from the nearest measured one (∝ N log N).
#: ``max_error``: the largest refresh error on values up to the bootstrap bound (q0 = 2^56,
#: correction 6; ``bench/fhe_inference.py --bootstrap-only SLOTS``): 0.008 flat up to ±16 at
#: 16384 slots; 1024 slots not re-measured at q0 = 2^56 (it erred 6× less than 16384 slots at
#: q0 = 2^60), so it keeps the 16384-slot figure; the insecure test ring 5.5e-3 at its ±4 bound.
BOOTSTRAP_COSTS: list[dict[str, float]] = [
    {"ring": 65536, "slots": 1024, "seconds": 21.1, "keys": 41, "precomputed_bytes": 3.1e9,
     "max_error": 8e-3},
    {"ring": 65536, "slots": 16384, "seconds": 23.3, "keys": 66, "precomputed_bytes": 4.1e9,
     "max_error": 8e-3},
    {"ring": 4096, "slots": 16, "seconds": 1.3, "keys": 9, "precomputed_bytes": 0.2e9,
     "max_error": 5.5e-3},
    # 45-bit scaling, q0 = 2^51, depth 27 (7 levels after each bootstrap instead of 4): 25 s,
    # max error 0.16, flat to ±16 (bench/fhe_inference.py --bootstrap-only 16384 --scaling-bits 45)
    {"ring": 65536, "slots": 16384, "seconds": 25.0, "keys": 66, "precomputed_bytes": 4.6e9,
     "max_error": 0.166, "scaling_bits": 45},
    # 46-bit, q0 = 2^52, depth 26 (6 levels after): 23.2 s, max error 0.062 on ±1…±16
    # (0.076 at ±64), 11.7 GB peak (--bootstrap-only 16384 --scaling-bits 46); 48-bit, depth
    # 25: 21.9 s, 0.048, 11.3 GB
    {"ring": 65536, "slots": 16384, "seconds": 23.2, "keys": 66, "precomputed_bytes": 4.4e9,
     "max_error": 0.062, "scaling_bits": 46},
]


def bootstrap_measurement(ring_dimension: int, slots: int | None = None,
                          scaling_bits: int = 50) -> dict[str, float]:
    """The measured bootstrap nearest to (``ring_dimension``, ``slots``, ``scaling_bits``)."""
    return min(BOOTSTRAP_COSTS, key=lambda m: (
        m.get("scaling_bits", 50) != scaling_bits, abs(math.log2(m["ring"] / ring_dimension)),
        abs(math.log2(m["slots"] / (slots or m["slots"])))))


def bootstrap_seconds(ring_dimension: int, slots: int | None = None,
                      scaling_bits: int = 50) -> float:
    """Predicted seconds of one sparse bootstrap at ``ring_dimension`` with ``slots`` slots."""
    measured = bootstrap_measurement(ring_dimension, slots, scaling_bits)
    nearest = int(measured["ring"])
    factor = (ring_dimension * math.log2(ring_dimension)) / (nearest * math.log2(nearest))
    return float(measured["seconds"]) * factor


def composed_rotations(amount: int, slots: int) -> int:
    """Key switches a rotation costs with only power-of-two keys (non-adjacent form)."""
    return len(rotation_digits(amount, slots))


def scales_for_free(op: str, meta: dict | None) -> bool:
    """True when a step can scale its output for free, by scaling its diagonals or coefficients
    (a bootstrap's range scaling is then folded into it). A folded square ``s² + γ`` cannot:
    scaling its unit leading coefficient would cost the level the fold saved."""
    return op in FREE_SCALING_OPS and not (meta or {}).get("folded_square")


def cost_cache_path() -> Path:
    """Where ``picompile calibrate-costs`` caches the measured table."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "picompile" / "costs.json"


def load_operation_costs(path: Path | None = None) -> dict[str, Any]:
    """The cached measured table if present (and readable), else the default table."""
    path = path or cost_cache_path()
    try:
        table = json.loads(path.read_text())
        if table.get("ring_dimensions"):
            return table
    except (OSError, ValueError):
        pass
    return DEFAULT_OPERATION_COSTS


def operation_costs_for(table: dict[str, Any], ring_dimension: int) -> dict[str, Any] | None:
    """Costs at ``ring_dimension``, scaled from the nearest measured one (∝ N log N)."""
    measured = {int(k): v for k, v in table.get("ring_dimensions", {}).items()}
    if not measured:
        return None
    nearest = min(measured, key=lambda n: abs(math.log2(n) - math.log2(ring_dimension)))
    costs = measured[nearest]
    if nearest == ring_dimension:
        return costs
    factor = (ring_dimension * math.log2(ring_dimension)) / (nearest * math.log2(nearest))
    scaled = {k: v * factor for k, v in costs.items() if isinstance(v, float)}
    scaled["chebyshev"] = {d: v * factor for d, v in costs["chebyshev"].items()}
    scaled["towers"] = costs["towers"]
    return scaled


def chebyshev_seconds(costs: dict[str, Any], degree: int) -> float:
    """Measured EvalChebyshevSeries time, interpolated over degree."""
    degrees = sorted(int(d) for d in costs["chebyshev"])
    times = [costs["chebyshev"][str(d)] for d in degrees]
    return float(np.interp(degree, degrees, times))


def step_seconds(op: str, attrs: dict[str, Any], layout: dict[str, Any] | None,
                 towers: int, costs: dict[str, Any], has_bias: bool = False,
                 lean_slots: int | None = None) -> float:
    """Predicted seconds of one slot-level step with ``towers`` RNS limbs left.

    ``lean_slots``: the plan runs with power-of-two rotation keys only (bootstrapped plans):
    a baby step without its own key is one rotation from the previous one, a giant step costs
    its non-adjacent-form digits; and its diagonals are encoded on every run (not cached).
    """
    scale = towers / costs["towers"]
    if op == "Polynomial":
        return chebyshev_seconds(costs, int(attrs["degree"])) * scale
    if op == "Add":
        return costs["add"] * scale
    if op == "Product":  # one relinearized, rescaled product: what a degree-2 series costs
        return chebyshev_seconds(costs, 2) * scale
    if layout is None:
        return 0.0
    babies = [b for b in layout["baby_rotations"] if b]
    giants = [g for g in layout["giant_rotations"] if g]
    diagonals = int(layout["diagonal_count"])
    seconds = (costs["hoisted_precompute"] if babies else 0.0)
    if lean_slots:
        keyed = [b for b in babies if composed_rotations(b, lean_slots) == 1]
        seconds += len(keyed) * costs["hoisted_rotate"]
        seconds += (len(babies) - len(keyed)) * costs["rotate"]
        seconds += sum(composed_rotations(g, lean_slots) for g in giants) * costs["rotate"]
    else:
        seconds += len(babies) * costs["hoisted_rotate"] + len(giants) * costs["rotate"]
    seconds += diagonals * costs.get("diagonal", costs["multiply_plain"] + costs["add"])
    if lean_slots:
        seconds += diagonals * costs["encode"]
    seconds += costs["add_plain"] if has_bias else 0.0
    return seconds * scale


def blocked_step_seconds(blocked: dict[str, Any], towers: int, costs: dict[str, Any],
                         has_bias: bool = False, lean_slots: int | None = None) -> float:
    """Predicted seconds of a linear step over several ciphertexts (``BlockedLinear``), as
    ``SlotProgram.blocked_linear`` runs it: each input ciphertext one hoisting precompute and its
    baby rotations, each output ciphertext its giant rotations (and bias), one plaintext product
    and addition per pair diagonal."""
    baby = int(blocked["baby_step"])
    babies: dict[int, set[int]] = {}
    giants: dict[int, set[int]] = {}
    for pair in blocked["pairs"]:
        for offset in pair["offsets"]:
            giant = (int(offset) // baby) * baby
            babies.setdefault(int(pair["input_block"]), set()).add(int(offset) - giant)
            giants.setdefault(int(pair["output_block"]), set()).add(giant)

    def part(baby_rotations: set[int], giant_rotations: set[int], diagonals: int) -> float:
        return step_seconds("Linear", {}, {"baby_rotations": sorted(baby_rotations),
                                           "giant_rotations": sorted(giant_rotations),
                                           "diagonal_count": diagonals},
                            towers, costs, False, lean_slots)

    seconds = sum(part(b, set(), 0) for b in babies.values())
    seconds += sum(part(set(), g, 0) for g in giants.values())
    seconds += part(set(), set(), int(blocked["diagonal_count"]))
    if has_bias:
        seconds += int(blocked["output_blocks"]) * costs["add_plain"] * towers / costs["towers"]
    return seconds


BYTES_PER_COEFFICIENT = 8


def key_switching_digits(depth: int) -> int:
    """OpenFHE's default number of key-switching digits (dnum) for a multiplicative depth."""
    if depth > 3:
        return 3
    return 2 if depth > 0 else 1


def evaluation_key_bytes(ring_dimension: int, depth: int) -> int:
    """Estimated size of one CKKS evaluation (relinearization or rotation) key.

    Hybrid key switching: ``digits`` pairs of polynomials over the ``depth + 1`` towers plus
    ``ceil(towers / digits)`` special primes. (Measured serialized keys are ~20% larger.)
    """
    towers = depth + 1
    digits = key_switching_digits(depth)
    special = math.ceil(towers / digits)
    return 2 * digits * ring_dimension * (towers + special) * BYTES_PER_COEFFICIENT


def server_memory_bytes(ring_dimension: int, depth: int, rotation_keys: int,
                        plaintext_towers: list[int], working_ciphertexts: int) -> dict[str, int]:
    """Predicted server memory: evaluation keys, cached encoded diagonals, live ciphertexts."""
    keys = evaluation_key_bytes(ring_dimension, depth) * (rotation_keys + 1)
    slots = ring_dimension // 2
    plaintexts = sum(ring_dimension * towers * BYTES_PER_COEFFICIENT + slots * 16
                     for towers in plaintext_towers)
    ciphertexts = working_ciphertexts * 2 * ring_dimension * (depth + 1) * BYTES_PER_COEFFICIENT
    return {"evaluation_keys": keys, "encoded_plaintexts": plaintexts,
            "ciphertexts": ciphertexts, "total": keys + plaintexts + ciphertexts}


#: Serialized OpenFHE evaluation keys measured ~20 % above :func:`evaluation_key_bytes`.
SERIALIZED_KEY_OVERHEAD = 1.2
#: BFV (hybrid boundary) contexts have multiplicative depth 2 (docs/architecture.md, "BFV").
BFV_DEPTH = 2


def plan_server_memory_bytes(plan: Any) -> int:
    """Bytes one server session of ``plan`` (a ``picompile.plan.Plan``) is predicted to hold:
    the cost pass's predicted server memory for FHE plans, the BFV evaluation keys (per prime)
    plus the plan's arrays for hybrid plans; what ``serve --ray`` requests per session actor."""
    arrays = sum(int(np.asarray(a).nbytes) for a in plan.arrays.values())
    cost = plan.analysis.get("cost") or {}
    memory = cost.get("predicted_server_memory_bytes")
    if memory:
        return int(memory["total"]) + arrays
    if plan.bfv is not None:
        keys = (len(plan.rotation_keys) + 1) * len(plan.bfv.primes)
        key_bytes = evaluation_key_bytes(plan.bfv.ring_dimension, BFV_DEPTH)
        return int(keys * key_bytes * SERIALIZED_KEY_OVERHEAD) + arrays
    return arrays + (256 << 20)


@dataclass(frozen=True)
class ScaleOutAssumptions:
    """What the scale-out prediction assumes of a Ray cluster (``serve --ray --workers W``):
    the link between the session's node and the workers' (every worker on its own node: the
    worst case), Ray's cost per remote part (dispatch, object store put/get; measured by
    ``bench/cluster.py``), OpenFHE's ciphertext (de)serialization rate (measured there too), and
    that adopting a received ciphertext (a fresh encryption of zero added) costs one rotation."""

    bandwidth_bytes_per_second: float = 1.25e9  # 10 Gbit/s
    # bench/cluster.py on the 2-core machine (N=4096 ciphertexts): 6-8 ms per part, and
    # serialize + deserialize + adopt at 0.10-0.12 GB/s
    task_seconds: float = 0.007
    serialize_bytes_per_second: float = 0.12e9


#: Worker counts the cost pass predicts (``analysis["cost"]["scale_out"]``); 1 = no split.
SCALE_OUT_WORKERS = (1, 2, 4, 16, 64)


def ciphertext_bytes(ring_dimension: int, towers: int) -> int:
    """A serialized CKKS ciphertext: two polynomials of ``towers`` RNS limbs."""
    return 2 * ring_dimension * towers * BYTES_PER_COEFFICIENT


def split_step_seconds(layout: dict[str, Any], towers: int, costs: dict[str, Any],
                       workers: int, ring_dimension: int, has_bias: bool = False,
                       lean_slots: int | None = None,
                       assumptions: ScaleOutAssumptions = ScaleOutAssumptions()) -> float:
    """Predicted seconds of a linear step whose giant steps run on ``workers`` workers, as
    ``runtime/cluster`` splits it (``partition_giants``; each worker hoists the baby rotations
    its giants need): the slowest worker's part plus moving the ciphertext to every worker and
    the parts back (serialization, the session's link, one Ray task each) and the session's
    adds. One worker, or a step with one giant step, is not split (:func:`step_seconds`)."""
    offsets = [int(o) for o in layout["offsets"]]
    baby = int(layout["baby_step"])
    giants: dict[int, int] = {}
    for offset in offsets:
        giants[(offset // baby) * baby] = giants.get((offset // baby) * baby, 0) + 1
    if workers <= 1 or len(giants) < 2:
        return step_seconds("Linear", {}, layout, towers, costs, has_bias, lean_slots)
    parts = partition_giants(giants, workers)
    slowest = 0.0
    for group in parts:
        chosen = set(group)
        part_layout = {
            "baby_rotations": sorted({o - (o // baby) * baby for o in offsets
                                      if (o // baby) * baby in chosen}),
            "giant_rotations": [g for g in group if g],
            "diagonal_count": sum(giants[g] for g in group)}
        slowest = max(slowest, step_seconds("Linear", {}, part_layout, towers, costs, False,
                                            lean_slots))
    scale = towers / costs["towers"]
    size = ciphertext_bytes(ring_dimension, towers)
    moved = len(parts) * size  # the input out to every worker, one part back from each
    serialize = size / assumptions.serialize_bytes_per_second
    per_part = 2 * serialize + costs["rotate"] * scale  # worker: read input, write part; adopt
    session = serialize + len(parts) * (serialize + costs["rotate"] * scale + costs["add"] * scale)
    network = 2 * moved / assumptions.bandwidth_bytes_per_second
    return (slowest + per_part + session + network + assumptions.task_seconds * len(parts)
            + (costs["add_plain"] * scale if has_bias else 0.0))


@dataclass(frozen=True)
class StepCost:
    """One step as the scale-out prediction sees it: its linear layout (None: not split), RNS
    towers left, predicted seconds alone, seconds that stay on the session (its bootstrap),
    whether it adds a bias."""

    layout: dict[str, Any] | None
    towers: int
    seconds: float
    refresh: float = 0.0
    has_bias: bool = False


def scale_out(steps: list[StepCost], costs: dict[str, Any], ring_dimension: int,
              key_bytes: int, lean_slots: int | None = None,
              assumptions: ScaleOutAssumptions = ScaleOutAssumptions(),
              workers: tuple[int, ...] = SCALE_OUT_WORKERS) -> list[dict[str, float]]:
    """Predicted seconds per inference, speed-up and one-time key shipping (``key_bytes`` to
    each extra worker over the session's link) for each worker count: linear steps split
    (:func:`split_step_seconds`), everything else on the session."""
    base = sum(step.seconds + step.refresh for step in steps)
    rows = []
    for count in workers:
        total = sum(step.refresh + (step.seconds if step.layout is None else split_step_seconds(
            step.layout, step.towers, costs, count, ring_dimension, step.has_bias, lean_slots,
            assumptions)) for step in steps)
        rows.append({"workers": count, "predicted_seconds": total,
                     "speedup": base / total if total else 1.0,
                     "key_shipping_seconds": max(count - 1, 0) * key_bytes
                     / assumptions.bandwidth_bytes_per_second})
    return rows
