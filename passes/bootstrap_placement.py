"""bootstrap_placement — where to bootstrap a chain of CKKS steps, and the bootstrapping settings.

Reads: the plan as a list of :class:`ChainStep` in topological order (the encrypted values each
step reads, the one value it writes, the levels it consumes and the levels its output needs to
enter a bootstrap), the names of the fresh inputs and of the outputs, and two level counts: the
levels the fresh input has and the levels a bootstrap leaves. No graph, no context, no OpenFHE.
Writes: a :class:`Placement` (the steps whose output is refreshed, the levels left of every value,
and whether the plan runs under it).

Solvers: :func:`place_bootstraps` is a dynamic program over the steps whose state is the remaining
levels of every live value (so residual branches are handled exactly: an Add runs at its deeper
operand's level); it minimizes the number of bootstraps, ties broken by the towers the steps run
at. :func:`greedy_bootstraps` is the baseline the plan reports next to it,
:func:`check_placement` evaluates any placement, and :func:`lowest_input_level` finds the fewest
levels the client may encrypt at without adding a bootstrap.

Settings: sparse-slot bootstrapping runs in a context of depth ``BOOTSTRAP_CONTEXT_DEPTH`` with the
CoeffsToSlots / SlotsToCoeffs level budget :func:`bootstrap_level_budget` gives for the slot count;
at most ``MAX_BOOTSTRAP_SLOTS`` slots fit this machine (larger tensors span several ciphertexts,
each bootstrapped). Before a bootstrap a value is divided
by the power of two :func:`bootstrap_scale` gives, to bring it into ``±bootstrap_bound(insecure)``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

#: CoeffsToSlots / SlotsToCoeffs level budget of the bootstrap by slot count, measured at
#: N=2^16 (bench/fhe_inference.py --bootstrap-only): 1024 slots [2,2]: 3.1 GB of precomputed
#: transforms, 41 keys, 21 s, 6 levels left ([1,1] went past 21 GB); 4096 slots [2,2]: peak
#: 13.7 GB in key generation, 33 s; 16384 slots [2,2]: past 21 GB in set-up (stopped); 16384
#: slots [3,3]: 4.1 GB of transforms, 11.4 GB peak with its keys, 22–25 s, 4 levels left.
BOOTSTRAP_LEVEL_BUDGETS = ((1024, (2, 2)), (16384, (3, 3)))
BOOTSTRAP_LEVEL_BUDGET = BOOTSTRAP_LEVEL_BUDGETS[0][1]
#: Largest depth at which OpenFHE picks N=2^16 for 128-bit security with 50-bit scaling.
BOOTSTRAP_CONTEXT_DEPTH = 24
#: (scaling bits, context depth) of 128-bit bootstrappable contexts at N=2^16, most levels
#: first, with the refresh's max error on ±16 (measured, 16384 slots, q0 = scaling + 6 bits):
#: 45-bit scaling fits depth 27 (7 levels after each bootstrap) at 0.166; 46-bit depth 26 (6
#: levels) at 0.062; 50-bit depth 24 (4 levels) at 0.008. (48-bit, depth 25, 5 levels, erred
#: 0.048: no better than 46-bit for a level less, so it is not offered.) The levels pass takes
#: the first whose simulated precision keeps top-1 (``passes/precision``).
BOOTSTRAP_PRECISIONS = ((45, 27), (46, 26), (50, BOOTSTRAP_CONTEXT_DEPTH))
#: Largest sparse bootstrap (slots) that fits this machine's memory next to the plan's keys.
MAX_BOOTSTRAP_SLOTS = BOOTSTRAP_LEVEL_BUDGETS[-1][0]
#: Values are divided by a power of two into [-bound, bound] before a bootstrap. Measured with
#: 56-bit q0, 50-bit scaling, correction 6: at N=2^16 (16384 slots, [3,3]) the max error is a
#: flat 0.008 for values up to 16 (0.038 at 64); at the insecure test ring N=2^12 (16 slots,
#: [2,2]) it grows as the cube of the magnitude (7e-4 at 2, 5.5e-3 at 4, 4.4e-2 at 8). A linear
#: or polynomial step folds the division into its diagonals or coefficients (no level); any
#: other step (a residual Add) spends one more level on it.
BOOTSTRAP_BOUND = 16.0
INSECURE_BOOTSTRAP_BOUND = 4.0
RANGE_MARGIN = 1.5
#: Levels a ciphertext must still have to enter EvalBootstrap: FLEXIBLEAUTO defers the last
#: rescale, and bootstrapping a ciphertext with no level left fails in OpenFHE (DropLastElement).
BOOTSTRAP_ENTRY_LEVELS = 1


def bootstrap_slots(extent: int, limit: int | None = None) -> int:
    """Slots of the sparse bootstrap for a plan whose largest packed tensor spans ``extent``:
    the power of two that holds it, at most ``limit`` (default ``MAX_BOOTSTRAP_SLOTS``; larger
    tensors span several ciphertexts)."""
    return min(1 << max(3, (extent - 1).bit_length()), limit or MAX_BOOTSTRAP_SLOTS)


def bootstrap_level_budget(slots: int) -> tuple[int, int]:
    """The level budget that keeps a ``slots``-slot bootstrap within this machine's memory."""
    for largest, budget in BOOTSTRAP_LEVEL_BUDGETS:
        if slots <= largest:
            return budget
    return BOOTSTRAP_LEVEL_BUDGETS[-1][1]


def bootstrap_bound(insecure: bool) -> float:
    """Largest magnitude a value may have entering a bootstrap (see ``BOOTSTRAP_BOUND``)."""
    return INSECURE_BOOTSTRAP_BOUND if insecure else BOOTSTRAP_BOUND


def bootstrap_scale(bound: float, limit: float = BOOTSTRAP_BOUND, upscale: bool = False
                    ) -> float:
    """Power of two the value is divided by before bootstrapping into ``±limit`` (1 when it
    already fits). With ``upscale`` a small value is multiplied up instead (scale < 1) to fill
    the range: the bootstrap's error is absolute, so it shrinks relative to the value."""
    needed = bound * RANGE_MARGIN / limit
    if needed > 1:
        return float(2.0 ** math.ceil(math.log2(needed)))
    if upscale and needed > 0:
        return float(2.0 ** math.ceil(math.log2(needed)))
    return 1.0


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
    """The steps whose output is refreshed and the levels every value has under that choice."""

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
