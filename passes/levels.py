"""levels — multiplicative depth per step, bootstrapping placement and the CKKS parameters.

Reads: the approximated IR (protocol ``fhe``), ``--insecure-test-params``, and for plans that
need bootstrapping the calibration inputs (to bound the magnitude of every refreshed value).
Writes: ``meta["level_in"]`` / ``meta["level_out"]`` (levels consumed in the modulus chain
before and after the step) on every node; on a node whose output is refreshed,
``meta["bootstrap_after"]`` (levels before and after, and the power-of-two ``scale`` the value is
divided by before and multiplied by after the bootstrap); and ``context.analysis["ckks"]``:
multiplicative depth, ring dimension, slots, scaling and first-modulus bits, log2 Q, security,
the level the client encrypts at, and for bootstrapped plans ``bootstrapping`` (level budget,
levels the bootstrap consumes from ``GetBootstrapDepth``, levels left after it, placement and the
greedy baseline's count).

Levels: a plaintext-weight linear op consumes one level (one rescale), a polynomial of degree d
consumes ceil(log2(d+1)) in the power basis (degree ≤ 15 on a narrow enough interval) or what
OpenFHE's EvalChebyshevSeries consumes (``picompile.cost.polynomial_depth``), additions and layout
no-ops consume none; a residual Add is at the deeper operand's level. The ring
dimension is the one OpenFHE selects for that depth under the HE-standard 128-bit table
(``HEStd_128_classic``), so the compiler and the runtime agree by construction.

Plans up to ``MAX_LEVELED_DEPTH`` run leveled (no bootstrap). Deeper plans get sparse-slot
bootstrapping (``EvalBootstrap`` over ``slots`` = next power of two ≥ the largest tensor) in a
context of depth ``BOOTSTRAP_CONTEXT_DEPTH`` — the largest depth for which OpenFHE still picks
N=2^16 at 128-bit with 50-bit scaling — leaving ``depth - GetBootstrapDepth`` levels after each
bootstrap. Placement (:func:`place_bootstraps`) is a dynamic program over the topologically
ordered steps whose state is the remaining levels of every live value (so residual branches are
handled exactly: an Add runs at its deeper operand's level); it minimizes the number of
bootstraps, ties broken by the towers the steps run at. Plans whose largest tensor exceeds
``MAX_BOOTSTRAP_SLOTS`` are recorded as not runnable, with the measured reason.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from picompile.cost import (
    POWER_BASIS_MAX_DEGREE,
    CostTable,
    bootstrap_seconds,
    polynomial_depth,
    power_basis_applies,
)
from picompile.cost import scales_for_free as folds_range_scale
from picompile.ir import Graph
from picompile.runtime.openfhe_loader import (
    FIRST_MOD_BITS,
    SCALING_MOD_BITS,
    ckks_parameters,
    load_openfhe,
)

NAME = "levels"
MAX_LEVELED_DEPTH = 40
LEVEL_FREE_OPS = frozenset({"Reshape", "Add"})
#: CoeffsToSlots / SlotsToCoeffs level budget of the bootstrap by slot count, measured at
#: N=2^16 (bench/fhe_inference.py --bootstrap-only): 1024 slots [2,2]: 3.1 GB of precomputed
#: transforms, 41 keys, 21 s, 6 levels left ([1,1] went past 21 GB); 4096 slots [2,2]: peak
#: 13.7 GB in key generation, 33 s; 16384 slots [2,2]: past 21 GB in set-up (stopped); 16384
#: slots [3,3]: 4.1 GB of transforms, 11.4 GB peak with its keys, 22–25 s, 4 levels left.
BOOTSTRAP_LEVEL_BUDGETS = ((1024, (2, 2)), (16384, (3, 3)))
BOOTSTRAP_LEVEL_BUDGET = BOOTSTRAP_LEVEL_BUDGETS[0][1]
#: Largest depth at which OpenFHE picks N=2^16 for 128-bit security with 50-bit scaling.
BOOTSTRAP_CONTEXT_DEPTH = 24
#: Largest sparse bootstrap (slots) that fits this machine's memory next to the plan's keys.
MAX_BOOTSTRAP_SLOTS = BOOTSTRAP_LEVEL_BUDGETS[-1][0]


def bootstrap_level_budget(slots: int) -> tuple[int, int]:
    """The level budget that keeps a ``slots``-slot bootstrap within this machine's memory."""
    for largest, budget in BOOTSTRAP_LEVEL_BUDGETS:
        if slots <= largest:
            return budget
    return BOOTSTRAP_LEVEL_BUDGETS[-1][1]
#: Values are divided by a power of two into [-BOOTSTRAP_BOUND, BOOTSTRAP_BOUND] before a
#: bootstrap (measured: with 60-bit q0 and 50-bit scaling the refresh error stays ~1e-3 up to
#: magnitude 64). A linear or polynomial step folds the division into its diagonals or
#: coefficients (no level); any other step (a residual Add) spends one more level on it.
BOOTSTRAP_BOUND = 32.0
RANGE_MARGIN = 1.5
#: Levels a ciphertext must still have to enter EvalBootstrap: FLEXIBLEAUTO defers the last
#: rescale, and bootstrapping a ciphertext with no level left fails in OpenFHE (DropLastElement).
BOOTSTRAP_ENTRY_LEVELS = 1
INSECURE_BOOTSTRAP_RING = 1 << 12


def activation_bound(meta: dict | None) -> float | None:
    """max |x| of a Polynomial step's interval (None when not known yet)."""
    if not meta or meta.get("interval") is None:
        return None
    return float(np.max(np.abs(np.asarray(meta["interval"], dtype=np.float64))))


def step_depth(op: str, attrs: dict, meta: dict | None = None) -> int:
    if op == "Polynomial":
        return polynomial_depth(int(attrs["degree"]), activation_bound(meta),
                                folded=bool((meta or {}).get("folded_square")))
    if op in LEVEL_FREE_OPS:
        return 0
    return 1


def ring_dimension(depth: int, insecure: bool) -> int:
    """The ring dimension OpenFHE picks for ``depth`` (or the small insecure test one)."""
    openfhe = load_openfhe()
    parameters = ckks_parameters(openfhe, depth, insecure)
    return int(openfhe.GenCryptoContext(parameters).GetRingDimension())


# -- bootstrapping placement ---------------------------------------------------------------------

@dataclass(frozen=True)
class ChainStep:
    """A step as the placement sees it: encrypted inputs, one output, levels it consumes."""

    name: str
    inputs: tuple[str, ...]
    output: str
    depth: int
    entry: int = 0  # extra levels needed to bootstrap the output (range scaling)


@dataclass
class Placement:
    bootstraps: frozenset[str]  # steps whose output is refreshed
    remaining: dict[str, int]   # levels left of every value, after its refresh if any
    feasible: bool = True

    @property
    def count(self) -> int:
        return len(self.bootstraps)


def check_placement(steps: Sequence[ChainStep], inputs: Iterable[str], bootstraps: Iterable[str],
                    initial: int, refreshed: int) -> Placement:
    """Levels left of every value under a given placement; ``feasible`` says if it runs."""
    chosen = frozenset(bootstraps)
    remaining = {name: initial for name in inputs}
    feasible = True
    for step in steps:
        level = min((remaining[v] for v in step.inputs), default=initial)
        out = level - step.depth
        feasible &= out >= 0
        if step.name in chosen:
            feasible &= out >= step.entry
            out = refreshed
        remaining[step.output] = out
    return Placement(chosen, remaining, feasible)


def greedy_bootstraps(steps: Sequence[ChainStep], inputs: Iterable[str], initial: int,
                      refreshed: int) -> Placement:
    """Baseline: refresh a value as soon as some consumer would lack levels (or it must)."""
    consumers: dict[str, list[ChainStep]] = {}
    for step in steps:
        for value in step.inputs:
            consumers.setdefault(value, []).append(step)
    remaining = {name: initial for name in inputs}
    chosen = set()
    for step in steps:
        out = min((remaining[v] for v in step.inputs), default=initial) - step.depth
        later = consumers.get(step.output, [])
        needed = max((c.depth for c in later), default=0)
        # look ahead one step: the consumer's own output must still be refreshable
        needed = max([needed] + [c.depth + c.entry for c in later])
        if out < needed and out >= step.entry:
            chosen.add(step.name)
            out = refreshed
        remaining[step.output] = out
    return check_placement(steps, inputs, chosen, initial, refreshed)


def place_bootstraps(steps: Sequence[ChainStep], inputs: Iterable[str], outputs: Iterable[str],
                     initial: int, refreshed: int, max_states: int = 50000) -> Placement:
    """Fewest bootstraps (then fewest towers) by dynamic programming over the step order.

    State: levels left of each live value (a value is live until its last consumer). At each
    step the output is either kept or refreshed (allowed when ``levels left ≥ entry``).
    """
    inputs = list(inputs)
    last_use: dict[str, int] = {v: len(steps) for v in outputs}
    for index, step in enumerate(steps):
        for value in step.inputs:
            last_use[value] = max(last_use.get(value, -1), index)
    live = tuple(sorted(v for v in inputs if last_use.get(v, -1) >= 0))
    # state: tuple of (value, remaining) sorted → (bootstraps, towers, chosen as linked list)
    states: dict[tuple, tuple[int, int, tuple | None]] = {
        tuple((v, initial) for v in live): (0, 0, None)}
    for index, step in enumerate(steps):
        successors: dict[tuple, tuple[int, int, tuple | None]] = {}
        for state, (count, towers, chosen) in states.items():
            levels = dict(state)
            level = min((levels[v] for v in step.inputs), default=initial)
            out = level - step.depth
            if out < 0:
                continue
            kept = {v: r for v, r in levels.items() if last_use[v] > index}
            options = [(out, count, chosen)]
            if out >= step.entry:
                options.append((refreshed, count + 1, (step.name, chosen)))
            for remaining, new_count, new_chosen in options:
                following = dict(kept)
                if last_use.get(step.output, -1) > index:
                    following[step.output] = remaining
                key = tuple(sorted(following.items()))
                value = (new_count, towers + level, new_chosen)
                if key not in successors or value[:2] < successors[key][:2]:
                    successors[key] = value
        if not successors:
            return Placement(frozenset(), {}, feasible=False)
        if len(successors) > max_states:
            ranked = sorted(successors.items(), key=lambda item: item[1][:2])
            successors = dict(ranked[:max_states])
        states = successors
    best = min(states.values(), key=lambda value: value[:2])
    chosen_names = set()
    link = best[2]
    while link is not None:
        chosen_names.add(link[0])
        link = link[1]
    return check_placement(steps, inputs, chosen_names, initial, refreshed)


def lowest_input_level(steps: Sequence[ChainStep], inputs: Sequence[str], outputs: Sequence[str],
                       depth: int, refreshed: int) -> tuple[int, Placement]:
    """Fewest levels the fresh input needs for the fewest bootstraps (the client encrypts low)."""
    best = place_bootstraps(steps, inputs, outputs, depth, refreshed)
    for initial in range(1, depth):
        placement = place_bootstraps(steps, inputs, outputs, initial, refreshed)
        if placement.feasible and placement.count == best.count:
            return initial, placement
    return depth, best


# -- the pass -------------------------------------------------------------------------------------

def value_bounds(graph: Graph, context, values: set[str], batch: int = 32) -> dict[str, float]:
    """max |value| over the calibration inputs, for the named values."""
    from picompile.simulate import GraphSimulator

    calibration = context.calibration
    if calibration is None or not values:
        return {}
    simulator = GraphSimulator(graph)
    bounds = dict.fromkeys(values, 0.0)
    for start in range(0, calibration.size, batch):
        chunk = {k: v[start:start + batch] for k, v in calibration.inputs.items()}
        with np.errstate(all="ignore"):  # a diverging approximation is reported, not warned
            trace = simulator.trace(chunk)
        for value in values:
            magnitude = np.abs(trace[value])
            largest = float(np.max(magnitude)) if np.all(np.isfinite(magnitude)) else math.inf
            bounds[value] = max(bounds[value], largest)
    return bounds


def bootstrap_scale(bound: float) -> float:
    """Power of two the value is divided by before bootstrapping (1 when it already fits)."""
    needed = bound * RANGE_MARGIN / BOOTSTRAP_BOUND
    return float(2.0 ** max(0, math.ceil(math.log2(needed)))) if needed > 1 else 1.0


def _chain(graph: Graph, encrypted: set[str], scales: dict[str, float]) -> list[ChainStep]:
    steps = []
    for node in graph.nodes():
        inputs = tuple(v for v in node.inputs if v in encrypted)
        output = node.outputs[0]
        divides = scales.get(output, 1.0) > 1.0 and not folds_range_scale(node.op, node.meta)
        entry = BOOTSTRAP_ENTRY_LEVELS + (1 if divides else 0)
        depth = step_depth(node.op, node.attrs, node.meta)
        steps.append(ChainStep(node.name, inputs, output, depth, entry))
    return steps


def _leveled(graph: Graph) -> int:
    consumed: dict[str, int] = {name: 0 for name in graph.inputs}
    for node in graph.nodes():
        level_in = max((consumed[v] for v in node.inputs if v in consumed), default=0)
        level_out = level_in + step_depth(node.op, node.attrs, node.meta)
        node.meta["level_in"], node.meta["level_out"] = level_in, level_out
        for value in node.outputs:
            consumed[value] = level_out
    return max(consumed[v] for v in graph.outputs)


def packed_extent(graph: Graph) -> int:
    """Slots the packing (``passes/packing.py``) needs for the plan's largest packed tensor."""
    from picompile.passes.packing import assign_packing
    from picompile.simulate import GraphSimulator

    return assign_packing(GraphSimulator(graph).plan).extent()


def activation_level_limit(graph: Graph) -> tuple[int, int]:
    """(slots, levels) of the bootstrapping context this plan would get: ``levels`` is the most
    one activation may consume and still fit between two bootstraps (the degree search keeps
    to it and charges each level its share of a bootstrap)."""
    extent = packed_extent(graph)
    slots = 1 << max(3, (extent - 1).bit_length())
    openfhe = load_openfhe()
    boot_depth = int(openfhe.CryptoContext.GetBootstrapDepth(
        list(bootstrap_level_budget(slots)), openfhe.UNIFORM_TERNARY))
    return slots, BOOTSTRAP_CONTEXT_DEPTH - boot_depth - BOOTSTRAP_ENTRY_LEVELS


def activation_cost_table(graph: Graph) -> tuple[CostTable, int]:
    """The degree search's cost table for an FHE plan — its slots, one measured bootstrap
    spread over the levels an activation may use — and that level limit."""
    slots, level_limit = activation_level_limit(graph)
    table = CostTable(slots=slots, bootstrap_seconds=bootstrap_seconds(1 << 16, slots),
                      levels_per_bootstrap=level_limit)
    return table, level_limit


def _not_runnable(context, depth: int, reason: str, **extra) -> list[str]:
    context.analysis["ckks"] = {"multiplicative_depth": depth, "runnable": False,
                                "reason": reason, **extra}
    return [reason]


def run(graph: Graph, context) -> list[str]:
    depth = _leveled(graph)
    per_channel = [n for n in graph.nodes()
                   if n.op == "Polynomial" and np.asarray(n.meta["coefficients"]).shape[0] > 1]
    unsupported = [n.name for n in per_channel
                   if not power_basis_applies(int(n.attrs["degree"]), activation_bound(n.meta))]
    if unsupported:
        return _not_runnable(
            context, depth,
            f"{len(unsupported)} per-channel polynomial activations (method "
            f"{context.options.method}, e.g. {unsupported[0]!r}) are above degree "
            f"{POWER_BASIS_MAX_DEGREE} or too wide for the power basis, the only form the CKKS "
            "runtime evaluates per channel; lower --degree or use a per-layer method (wls, "
            "minimax, chebyshev)")
    insecure = bool(context.options.insecure_test_params)
    largest = packed_extent(graph)
    if depth > MAX_LEVELED_DEPTH:
        return _bootstrapped(graph, context, depth, largest, insecure)
    ring = ring_dimension(depth, insecure)
    log_q = FIRST_MOD_BITS + SCALING_MOD_BITS * depth
    if insecure:
        while ring // 2 < largest:
            ring *= 2
    context.analysis["ckks"] = {
        "scheme": "CKKS (OpenFHE, FLEXIBLEAUTO)",
        "multiplicative_depth": depth,
        "ring_dimension": ring,
        "slots": ring // 2,
        "scaling_mod_bits": SCALING_MOD_BITS,
        "first_mod_bits": FIRST_MOD_BITS,
        "log2_q_without_special_primes": log_q,
        "security": _security(insecure),
        "insecure": insecure,
        "input_level": 0,
        "runnable": True,
    }
    return [f"depth {depth}, ring dimension 2^{int(math.log2(ring))}, {ring // 2} slots",
            context.analysis["ckks"]["security"]]


def _security(insecure: bool) -> str:
    return ("NONE: insecure test parameters (--insecure-test-params)" if insecure
            else "128-bit classical (HE standard, HEStd_128_classic)")


def _bootstrapped(graph: Graph, context, leveled_depth: int, largest: int,
                  insecure: bool) -> list[str]:
    from picompile.runtime.ckks import bootstrap_parameters

    openfhe = load_openfhe()
    slots = 1 << max(3, (largest - 1).bit_length())
    budget = list(bootstrap_level_budget(slots))
    boot_depth = int(openfhe.CryptoContext.GetBootstrapDepth(budget, openfhe.UNIFORM_TERNARY))
    depth = BOOTSTRAP_CONTEXT_DEPTH
    refreshed = depth - boot_depth
    encrypted = set(graph.inputs) | {n.outputs[0] for n in graph.nodes()}
    probe = place_bootstraps(_chain(graph, encrypted, {}), graph.inputs, graph.outputs,
                             depth, refreshed)
    info = {"level_budget": budget, "bootstrap_depth": boot_depth, "context_depth": depth,
            "levels_after_bootstrap": refreshed, "slots": slots, "count": probe.count,
            "leveled_depth": leveled_depth}
    if slots > MAX_BOOTSTRAP_SLOTS:
        reason = (f"the plan needs multiplicative depth {leveled_depth}, so bootstrapping "
                  f"({probe.count} bootstraps placed); its packed tensors need {largest} "
                  f"slots, so {slots}-slot bootstrapping at N=2^16, above the "
                  f"{MAX_BOOTSTRAP_SLOTS} slots that fit this machine next to the plan's keys "
                  "(measured at N=2^16: 16384 slots with level budget [3,3] peak at 11.4 GB; "
                  "32768 slots > 14 GB before the first bootstrap); multi-ciphertext packing "
                  "is not implemented: it runs on the plain backend only")
        return _not_runnable(context, leveled_depth, reason, bootstrapping_required=True,
                             bootstrapping=info)
    bounds = value_bounds(graph, context, encrypted - set(graph.inputs))
    diverged = sorted(v for v, bound in bounds.items() if not math.isfinite(bound))
    if diverged:
        reason = (f"the polynomial activations diverge on the calibration data ({diverged[0]} "
                  "and others overflow): no bootstrap range holds them; use a higher --degree "
                  "or an --accuracy-budget")
        return _not_runnable(context, leveled_depth, reason, bootstrapping=info)
    scales = {v: bootstrap_scale(b) for v, b in bounds.items()}
    steps = _chain(graph, encrypted, scales)
    initial, placement = lowest_input_level(steps, graph.inputs, graph.outputs, depth,
                                            refreshed)
    if not placement.feasible:
        deepest = max(steps, key=lambda s: s.depth)
        reason = (f"step {deepest.name} needs {deepest.depth} levels, more than the "
                  f"{refreshed} left after a bootstrap")
        return _not_runnable(context, leveled_depth, reason, bootstrapping=info)
    greedy = greedy_bootstraps(steps, graph.inputs, initial, refreshed)
    remaining = {v: initial for v in graph.inputs}
    for node, step in zip(graph.nodes(), steps, strict=True):
        level_in = min((remaining[v] for v in step.inputs), default=initial)
        out = level_in - step.depth
        node.meta["level_in"], node.meta["level_out"] = depth - level_in, depth - out
        node.meta.pop("bootstrap_after", None)
        if node.name in placement.bootstraps:
            node.meta["bootstrap_after"] = {"level_in": depth - out,
                                            "level_out": depth - refreshed,
                                            "scale": scales.get(step.output, 1.0)}
            out = refreshed
        remaining[step.output] = out
    ring = max(INSECURE_BOOTSTRAP_RING, 2 * slots) if insecure else int(openfhe.GenCryptoContext(
        bootstrap_parameters(openfhe, depth, False, None, slots)).GetRingDimension())
    info.update(count=placement.count, greedy_count=greedy.count if greedy.feasible else None,
                placed_after=sorted(placement.bootstraps, key=[n.name for n in graph.nodes()]
                                    .index),
                correction_factor=FIRST_MOD_BITS - SCALING_MOD_BITS,
                scaled_values=sum(1 for s in scales.values() if s > 1.0))
    context.analysis["ckks"] = {
        "scheme": "CKKS (OpenFHE, FLEXIBLEAUTO) with sparse bootstrapping",
        "multiplicative_depth": depth,
        "leveled_depth": leveled_depth,
        "ring_dimension": ring,
        "slots": slots,
        "scaling_mod_bits": SCALING_MOD_BITS,
        "first_mod_bits": FIRST_MOD_BITS,
        "log2_q_without_special_primes": FIRST_MOD_BITS + SCALING_MOD_BITS * depth,
        "security": _security(insecure),
        "insecure": insecure,
        "input_level": depth - initial,
        "bootstrapping": info,
        "runnable": True,
    }
    return [f"depth {leveled_depth} > {MAX_LEVELED_DEPTH}: {placement.count} bootstraps "
            f"(greedy {info['greedy_count']}), context depth {depth} ({refreshed} levels after "
            f"each bootstrap), ring dimension 2^{int(math.log2(ring))}, {slots} slots",
            context.analysis["ckks"]["security"]]
