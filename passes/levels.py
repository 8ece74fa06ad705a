"""levels — multiplicative depth per step, bootstrap placement and CKKS parameters of an FHE plan.

Reads: the approximated IR (protocol ``fhe``) and, for plans that need bootstrapping, the
calibration inputs (``context.calibration``: to bound the magnitude of every refreshed value).
Writes: ``meta["level_in"]`` / ``meta["level_out"]`` (levels consumed in the modulus chain
before and after the step) on every node; on a node whose output is refreshed,
``meta["bootstrap_after"]`` (levels before and after, and the power-of-two ``scale`` the value is
divided by before and multiplied by after the bootstrap); and ``context.analysis["ckks"]``
(built by :mod:`picompile.passes.ckks_parameters`): multiplicative depth, ring dimension, slots,
scaling and first-modulus bits, log2 Q, security, the level the client encrypts at, and for
bootstrapped plans ``bootstrapping`` (level budget, levels the bootstrap consumes from
``GetBootstrapDepth``, levels left after it, placement and the greedy baseline's count); or, for a
plan the CKKS backend cannot run, ``runnable: False`` and the reason.

Options (``CompileOptions``): ``insecure_test_params`` (the small insecure test ring instead of
128-bit parameters); ``scaling_bits`` (force one bootstrappable context); ``method`` (only named
in the not-runnable reason).

Levels: a plaintext-weight linear op consumes one level (one rescale), a polynomial of degree d
consumes ceil(log2(d+1)) in the power basis (degree ≤ 15 on a narrow enough interval) or what
OpenFHE's EvalChebyshevSeries consumes (``picompile.cost.polynomial_depth``), additions and layout
no-ops consume none; a residual Add is at the deeper operand's level.

Plans up to ``MAX_LEVELED_DEPTH`` run leveled (no bootstrap), with the ring dimension OpenFHE
selects for that depth; ``--schedule leveled`` runs deeper plans leveled too and ``--schedule
bootstrapped`` bootstraps shallow ones (``picompile/schedule.py`` compares the two for
degree-2 plans). Deeper plans get sparse-slot bootstrapping (``EvalBootstrap`` over
``slots`` = next power of two ≥ the largest packed tensor), leaving ``depth - GetBootstrapDepth``
levels after each bootstrap; the bootstraps are placed by
:func:`picompile.passes.bootstrap_placement.lowest_input_level` over the chain of steps this
pass builds. Precision-aware context: ``BOOTSTRAP_PRECISIONS`` lists (scaling bits, depth) at
N=2^16, most levels first (45-bit scaling: depth 27, 7 levels after a bootstrap, refresh error
0.16; 46-bit: depth 26, 6 levels, 0.06; 50-bit: depth 24, 4 levels, 0.008); the first whose
placement, simulated with its refresh error on ``PRECISION_IMAGES`` calibration images
(``passes/precision``), keeps top-1 and stays decodable with a 2× margin is taken
(``analysis["precision_trials"]`` records the tries). Slots per ciphertext: at most
``MAX_BOOTSTRAP_SLOTS`` when bootstrapping (the largest bootstrap that fits this machine), the
ring's when leveled, and never more than ``--slots`` (``CompileOptions.slots``); larger tensors
span several ciphertexts (the layout pass's blocked layout), every block bootstrapped.

Also used by the degree search (``degrees``, ``approximate``): :func:`activation_cost_table`,
and :func:`activation_chain` (the chain its joint degree/bootstrap DP schedules).
"""

from __future__ import annotations

import math
from typing import Any

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
from picompile.passes.bootstrap_placement import (
    BOOTSTRAP_CONTEXT_DEPTH,
    BOOTSTRAP_ENTRY_LEVELS,
    BOOTSTRAP_PRECISIONS,
    ChainStep,
    bootstrap_bound,
    bootstrap_level_budget,
    bootstrap_scale,
    bootstrap_slots,
    greedy_bootstraps,
    lowest_input_level,
    place_bootstraps,
)
from picompile.passes.ckks_parameters import (
    BOOTSTRAP_HEADROOM_BITS,
    bootstrap_depth,
    bootstrap_ring_dimension,
    ckks_analysis,
    leveled_ring_dimension,
    not_runnable_analysis,
)
from picompile.passes.level_schedule import LevelChain
from picompile.plan.ops import LEVEL_FREE_OPS

NAME = "levels"
MAX_LEVELED_DEPTH = 40
#: calibration images the levels pass simulates to accept a less precise bootstrap context
PRECISION_IMAGES = 128


def activation_bound(meta: dict | None) -> float | None:
    """max |x| of a Polynomial step's interval (None when not known yet)."""
    if not meta or meta.get("interval") is None:
        return None
    return float(np.max(np.abs(np.asarray(meta["interval"], dtype=np.float64))))


def step_depth(op: str, attrs: dict, meta: dict | None = None) -> int:
    """Levels one step consumes (see the module docstring)."""
    if op == "Polynomial":
        return polynomial_depth(int(attrs["degree"]), activation_bound(meta),
                                folded=bool((meta or {}).get("folded_square")))
    if op in LEVEL_FREE_OPS:
        return 0
    return 1


def value_bounds(graph: Graph, context, values: set[str], batch: int = 64) -> dict[str, float]:
    """max |value| over the calibration inputs, for the named values: the bounds the degree
    search measured on its chosen plan (``meta["_bound"]``) when every value has one, else a
    float32 simulation of the calibration set."""
    from picompile.simulate import GraphSimulator

    calibration = context.calibration
    if calibration is None or not values:
        return {}
    known = {n.outputs[0]: float(n.meta["_bound"]) for n in graph.nodes() if "_bound" in n.meta}
    if values <= known.keys():
        return {v: known[v] for v in values}
    simulator = GraphSimulator(graph, dtype=np.float32)
    bounds: dict[str, float] = {}
    for start in range(0, calibration.size, batch):
        chunk = {k: v[start:start + batch] for k, v in calibration.inputs.items()}
        with np.errstate(all="ignore"):  # a diverging approximation is reported, not warned
            simulator.run(chunk, bounds=bounds)
    return {v: bounds.get(v, 0.0) for v in values}


def packed_extent(graph: Graph) -> int:
    """Slots the packing (``passes/packing.py``) needs for the plan's largest packed tensor."""
    from picompile.passes.packing import assign_packing
    from picompile.simulate import GraphSimulator

    return assign_packing(GraphSimulator(graph).plan).extent()


def activation_level_limit(graph: Graph) -> tuple[int, int]:
    """(slots, levels) of the bootstrapping context this plan would get: ``levels`` is the most
    one activation may consume and still fit between two bootstraps (the degree search keeps
    to it and charges each level its share of a bootstrap)."""
    slots = bootstrap_slots(packed_extent(graph))
    boot_depth = bootstrap_depth(bootstrap_level_budget(slots))
    return slots, BOOTSTRAP_CONTEXT_DEPTH - boot_depth - BOOTSTRAP_ENTRY_LEVELS


def activation_cost_table(graph: Graph) -> tuple[CostTable, int]:
    """The degree search's cost table for an FHE plan — its slots, one measured bootstrap
    spread over the levels an activation may use — and that level limit."""
    slots, level_limit = activation_level_limit(graph)
    table = CostTable(slots=slots, bootstrap_seconds=bootstrap_seconds(1 << 16, slots),
                      levels_per_bootstrap=level_limit)
    return table, level_limit


def activation_chain(graph: Graph, nodes: list, context, table: CostTable) -> LevelChain:
    """The joint degree/bootstrap DP's view of the plan (``passes/level_schedule.py``): the
    levels each activation of ``nodes`` (topological order) follows since the previous one,
    those after the last, the refresh seconds of each activation's value (every ciphertext)
    and the usable levels after a refresh in the context the levels pass tries first (45-bit
    scaling: 6 instead of 3)."""
    slots = table.slots  # activation_cost_table's: the bootstrap's slots
    scaling, depth = _precision_candidates(context, bool(context.options.insecure_test_params),
                                           slots)[0]
    levels = depth - bootstrap_depth(bootstrap_level_budget(slots)) - BOOTSTRAP_ENTRY_LEVELS
    index = {node.name: i for i, node in enumerate(nodes)}
    since: dict[str, int] = {}
    gaps = [0] * len(nodes)
    for node in graph.nodes():
        before = max((since.get(v, 0) for v in node.inputs), default=0)
        if node.name in index:
            gaps[index[node.name]] = before
            since[node.outputs[0]] = 0
        else:
            since[node.outputs[0]] = before + step_depth(node.op, node.attrs, node.meta)
    final = max((since.get(v, 0) for v in graph.outputs), default=0)
    insecure = bool(context.options.insecure_test_params)
    refresh = bootstrap_seconds(bootstrap_ring_dimension(depth, slots, insecure, scaling), slots,
                                scaling)
    return LevelChain(levels=levels, initial=depth - BOOTSTRAP_ENTRY_LEVELS, gaps=tuple(gaps),
                      final_gap=final,
                      refresh_seconds=tuple(refresh * max(1, -(-int(np.prod(
                          graph.shape(n.inputs[0]))) // slots)) for n in nodes))


# -- the pass -------------------------------------------------------------------------------------

def run(graph: Graph, context) -> list[str]:
    """Assign levels (placing bootstraps when the plan is too deep) and record the CKKS
    parameters in ``context.analysis["ckks"]``; returns the pass's log lines."""
    depth = _assign_leveled_levels(graph)
    partial = [n.name for n in graph.nodes() if "relu_channels" in n.meta]
    if partial:
        return _not_runnable(
            context, depth,
            f"{len(partial)} activations keep exact ReLU channels (a model fine-tuned under a "
            f"ReLU budget, e.g. {partial[0]!r}): CKKS cannot compare; compile it with "
            "--protocol hybrid, or fine-tune without --relu-budget for an FHE plan")
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
    limit = getattr(context.options, "slots", None)
    forced = getattr(context.options, "schedule", "auto")
    if forced == "bootstrapped" or (depth > MAX_LEVELED_DEPTH and forced != "leveled"):
        return _bootstrapped(graph, context, depth, largest, insecure, limit)
    try:
        ring = leveled_ring_dimension(depth, insecure, min(largest, limit or largest))
    except RuntimeError as exc:  # no ring holds the depth at this security
        return _not_runnable(context, depth, f"no leveled CKKS context of depth {depth}: "
                             f"{str(exc).splitlines()[0][:200]}; use --schedule bootstrapped")
    slots = min(ring // 2, limit or ring // 2)
    context.analysis["ckks"] = ckks_analysis(depth, ring, slots, insecure, input_level=0)
    return [f"depth {depth}, ring dimension 2^{int(math.log2(ring))}, {slots} slots"
            + _ciphertexts_note(largest, slots), context.analysis["ckks"]["security"]]


def _ciphertexts_note(largest: int, slots: int) -> str:
    blocks = -(-largest // slots)
    return f" (the largest tensor spans {blocks} ciphertexts)" if blocks > 1 else ""


def _assign_leveled_levels(graph: Graph) -> int:
    """Write level_in/level_out of every node with no bootstrap; return the plan's depth."""
    consumed: dict[str, int] = {name: 0 for name in graph.inputs}
    for node in graph.nodes():
        level_in = max((consumed[v] for v in node.inputs if v in consumed), default=0)
        level_out = level_in + step_depth(node.op, node.attrs, node.meta)
        node.meta["level_in"], node.meta["level_out"] = level_in, level_out
        for value in node.outputs:
            consumed[value] = level_out
    return max(consumed[v] for v in graph.outputs)


def _chain(graph: Graph, encrypted: set[str], scales: dict[str, float]) -> list[ChainStep]:
    """The placement's view of the plan: one ChainStep per node, in topological order."""
    steps = []
    for node in graph.nodes():
        inputs = tuple(v for v in node.inputs if v in encrypted)
        output = node.outputs[0]
        divides = scales.get(output, 1.0) > 1.0 and not folds_range_scale(node.op, node.meta)
        entry = BOOTSTRAP_ENTRY_LEVELS + (1 if divides else 0)
        depth = step_depth(node.op, node.attrs, node.meta)
        steps.append(ChainStep(node.name, inputs, output, depth, entry))
    return steps


def _absorbs_gain(graph: Graph, value: str) -> bool:
    """True when ``value`` may be multiplied up before its bootstrap (``bootstrap_scale``'s
    ``upscale``): its step folds the factor into its coefficients and every consumer is a
    polynomial, which absorbs it by evaluating p(x / gain) (the sign stages of a composite
    ReLU) — but not a folded square s² + γ, whose unit leading coefficient saves its level;
    never a plan output."""
    producer = graph.producer(value)
    consumers = graph.consumers(value)
    return (producer is not None and folds_range_scale(producer.op, producer.meta)
            and value not in graph.outputs and bool(consumers)
            and all(c.op == "Polynomial" and c.inputs[0] == value
                    and not c.meta.get("folded_square") for c in consumers))


def _not_runnable(context, depth: int, reason: str, **extra) -> list[str]:
    context.analysis["ckks"] = not_runnable_analysis(depth, reason, **extra)
    return [reason]


def _bootstrapped(graph: Graph, context, leveled_depth: int, largest: int,
                  insecure: bool, limit: int | None = None) -> list[str]:
    slots = bootstrap_slots(largest, limit)
    budget = list(bootstrap_level_budget(slots))
    boot_depth = bootstrap_depth(budget)
    depth = BOOTSTRAP_CONTEXT_DEPTH
    refreshed = depth - boot_depth
    encrypted = set(graph.inputs) | {n.outputs[0] for n in graph.nodes()}
    probe = place_bootstraps(_chain(graph, encrypted, {}), graph.inputs, graph.outputs,
                             depth, refreshed)
    info = {"level_budget": budget, "bootstrap_depth": boot_depth, "context_depth": depth,
            "levels_after_bootstrap": refreshed, "slots": slots, "count": probe.count,
            "leveled_depth": leveled_depth}
    bounds = value_bounds(graph, context, encrypted - set(graph.inputs))
    diverged = sorted(v for v, bound in bounds.items() if not math.isfinite(bound))
    if diverged:
        reason = (f"the polynomial activations diverge on the calibration data ({diverged[0]} "
                  "and others overflow): no bootstrap range holds them; use a higher --degree "
                  "or an --accuracy-budget")
        return _not_runnable(context, leveled_depth, reason, bootstrapping=info)
    limit = bootstrap_bound(insecure)
    scales = {v: bootstrap_scale(b, limit, upscale=_absorbs_gain(graph, v))
              for v, b in bounds.items()}
    steps = _chain(graph, encrypted, scales)
    candidates = _precision_candidates(context, insecure, slots)
    trials = []
    for index, (scaling, depth) in enumerate(candidates):
        refreshed = depth - boot_depth
        initial, placement = lowest_input_level(steps, graph.inputs, graph.outputs, depth,
                                                refreshed)
        if not placement.feasible:
            continue
        _annotate(graph, steps, placement, initial, depth, refreshed, scales)
        if index == len(candidates) - 1:
            break
        found = _simulated_precision(graph, context, slots, scaling)
        trials.append({"scaling_mod_bits": scaling, "context_depth": depth,
                       "bootstraps": placement.count, **found})
        if found["holds"]:
            break
    if not placement.feasible:
        deepest = max(steps, key=lambda s: s.depth)
        reason = (f"step {deepest.name} needs {deepest.depth} levels, more than the "
                  f"{refreshed} left after a bootstrap")
        return _not_runnable(context, leveled_depth, reason, bootstrapping=info)
    greedy = greedy_bootstraps(steps, graph.inputs, initial, refreshed)
    ring = bootstrap_ring_dimension(depth, slots, insecure, scaling)
    info.update(count=placement.count, greedy_count=greedy.count if greedy.feasible else None,
                placed_after=sorted(placement.bootstraps, key=[n.name for n in graph.nodes()]
                                    .index),
                context_depth=depth, levels_after_bootstrap=refreshed,
                correction_factor=BOOTSTRAP_HEADROOM_BITS,
                scaled_values=sum(1 for s in scales.values() if s > 1.0),
                upscaled_values=sum(1 for n in graph.nodes() if n.name in placement.bootstraps
                                    and scales.get(n.outputs[0], 1.0) < 1.0))
    context.analysis["precision_trials"] = trials
    context.analysis["ckks"] = ckks_analysis(depth, ring, slots, insecure,
                                             input_level=depth - initial, bootstrapping=info,
                                             leveled_depth=leveled_depth, scaling_mod_bits=scaling)
    tried = "".join(f"; {t['scaling_mod_bits']}-bit scaling: {t['bootstraps']} bootstraps, "
                    f"top-1 under its refresh error {t['agreement']:.1f} %"
                    + ("" if t["holds"] else " (rejected)") for t in trials)
    return [f"depth {leveled_depth} > {MAX_LEVELED_DEPTH}: {placement.count} bootstraps "
            f"(greedy {info['greedy_count']}), {scaling}-bit scaling, context depth {depth} "
            f"({refreshed} levels after each bootstrap), ring dimension "
            f"2^{int(math.log2(ring))}, {slots} slots{_ciphertexts_note(largest, slots)}{tried}",
            context.analysis["ckks"]["security"]]


def _precision_candidates(context, insecure: bool, slots: int) -> list[tuple[int, int]]:
    """(scaling bits, context depth) to try, most levels first: ``--scaling-bits`` alone when
    given; only the 50-bit context at the insecure test ring (the others are not measured
    there); a candidate only where OpenFHE keeps N=2^16 for it."""
    forced = context.options.scaling_bits
    candidates = [c for c in BOOTSTRAP_PRECISIONS if forced is None or c[0] == forced]
    if insecure:
        return [c for c in candidates if c[1] == BOOTSTRAP_CONTEXT_DEPTH] or candidates[-1:]
    kept = [c for c in candidates[:-1] if bootstrap_ring_dimension(c[1], slots, False, c[0])
            == bootstrap_ring_dimension(BOOTSTRAP_CONTEXT_DEPTH, slots, False)]
    return kept + candidates[-1:]


def _annotate(graph: Graph, steps: list[ChainStep], placement, initial: int, depth: int,
              refreshed: int, scales: dict[str, float]) -> None:
    """Write each node's levels and bootstrap (``meta``) under ``placement``."""
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


def _simulated_precision(graph: Graph, context, slots: int, scaling: int) -> dict[str, Any]:
    """``passes/precision``'s verdict on the annotated graph with the refresh error of a
    ``scaling``-bit context at N=2^16, on up to ``PRECISION_IMAGES`` calibration images, with a
    2× margin below OpenFHE's decoding limit."""
    from picompile.passes import precision

    found = precision.simulate(graph, context, 1 << 16, slots, scaling,
                               images=PRECISION_IMAGES, decode_margin=2.0)
    return {key: found[key] for key in ("refresh_max_error", "agreement", "imaginary_std",
                                        "holds")}
