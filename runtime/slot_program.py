"""Slot-level execution of an FHE plan, shared by the numpy model and the CKKS backend.

Reads: a plan whose steps carry their CKKS contract (``Step.fhe``: generalized diagonals' offsets
and baby-step giant-step splits, replication periods, the evaluation basis of polynomials and
the bootstraps) with the arrays it names (diagonals, bias/constant slot vectors, Chebyshev or
power-basis coefficients), and ``Plan.layout`` (slot maps and periods of inputs and outputs).
Writes: the output slot vector (numpy) or ciphertext (CKKS), and per-step timings (a step's
time includes the bootstrap of its output, ``Step.fhe.bootstrap_after``).

One interpreter, two arithmetic engines: :class:`NumpySlots` (exact float64 model: np.roll is
the rotation) and the OpenFHE engine in :mod:`picompile.runtime.ckks`. Because both run the
same sequence of rotations, plaintext multiplications and Chebyshev series, the numpy engine is
the exact model of what the encrypted run computes.

Linear step (baby-step giant-step, ``B`` = baby step, offsets ``k = g + b`` with ``g`` a
multiple of ``B``)::

    y = Σ_g rot_g( Σ_b diag'_k ⊙ rot_b(x) ) + bias,   diag'_k = roll(diag_k, g)

with all baby rotations of ``x`` hoisted (one decomposition, many rotations). Values spanning
several ciphertexts (``runtime/blocks.py``) are lists of ciphertexts: elementwise steps and
bootstraps run per block, linear steps as block matrices (:meth:`SlotProgram.blocked_linear`).
"""

from __future__ import annotations

import time
from typing import Any, Protocol

import numpy as np

from picompile.errors import PlanError
from picompile.plan import SLOT_MATRIX_OPS, Plan, Step
from picompile.plan.contract import POWER_BASIS, FheStep
from picompile.runtime.backend import StepTiming
from picompile.runtime.blocks import block_count, block_slice, blocked_diagonals


class SlotEngine(Protocol):
    slots: int

    def prepare(self, ciphertext: Any) -> Any: ...
    def rotations(self, ciphertext: Any, amounts: list[int]) -> dict[int, Any]: ...
    def rotate(self, ciphertext: Any, amount: int) -> Any: ...
    def multiply_plain(self, ciphertext: Any, vector: np.ndarray, key: tuple) -> Any: ...
    def add(self, a: Any, b: Any) -> Any: ...
    def add_plain(self, ciphertext: Any, vector: np.ndarray, key: tuple) -> Any: ...
    def chebyshev(self, ciphertext: Any, coefficients: np.ndarray, a: float, b: float) -> Any: ...
    def multiply(self, a: Any, b: Any) -> Any: ...
    def multiply_scalar(self, ciphertext: Any, value: float) -> Any: ...
    def add_scalar(self, ciphertext: Any, value: float) -> Any: ...
    def bootstrap(self, ciphertext: Any, scale: float, divided: bool = False) -> Any: ...


class NumpySlots:
    """The exact float64 model of the slot arithmetic."""

    def __init__(self, slots: int) -> None:
        self.slots = slots

    def prepare(self, ciphertext: np.ndarray) -> np.ndarray:
        return ciphertext

    def rotations(self, ciphertext: np.ndarray, amounts: list[int]) -> dict[int, np.ndarray]:
        return {k: np.roll(ciphertext, -k) for k in amounts}

    def rotate(self, ciphertext: np.ndarray, amount: int) -> np.ndarray:
        return np.roll(ciphertext, -amount)

    def multiply_plain(self, ciphertext: np.ndarray, vector: np.ndarray, key: tuple
                       ) -> np.ndarray:
        return ciphertext * vector

    def add(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return a + b

    def add_plain(self, ciphertext: np.ndarray, vector: np.ndarray, key: tuple) -> np.ndarray:
        return ciphertext + vector

    def chebyshev(self, ciphertext: np.ndarray, coefficients: np.ndarray, a: float, b: float
                  ) -> np.ndarray:
        t = (2.0 * ciphertext - (a + b)) / (b - a)
        return np.polynomial.chebyshev.chebval(t, coefficients)

    def multiply(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return a * b

    def multiply_scalar(self, ciphertext: np.ndarray, value: float) -> np.ndarray:
        return ciphertext * value

    def add_scalar(self, ciphertext: np.ndarray, value: float) -> np.ndarray:
        return ciphertext + value

    def bootstrap(self, ciphertext: np.ndarray, scale: float, divided: bool = False
                  ) -> np.ndarray:
        # a refresh changes levels, not values: a value the step divided is restored, one it
        # multiplied up (scale < 1) stays multiplied for its consumers to absorb
        return ciphertext * scale if divided and scale > 1.0 else ciphertext


def power_series(engine: SlotEngine, x: Any, coefficients: np.ndarray,
                 key: tuple = ("power_series",)) -> Any:
    """Σ c_i x^i in ceil(log2(d+1)) levels (level-optimal product tree).

    p = p_low + x^(2^k)·p_high with 2^k the largest power of two ≤ d, both halves of degree
    < 2^k evaluated the same way (so in ≤ k levels) and x^(2^k) by repeated squaring (k levels):
    the product lands at level k+1. A degree-1 piece c_0 + c_1·x is one scalar product (one
    level); constants are added (no level); a constant high part scales x^(2^k) directly.

    ``coefficients`` is (d+1,) for one polynomial in every slot, or (d+1, slots) for one
    polynomial per slot (per-channel fits): the products by a coefficient are then plaintext
    products (the same one level), encoded once under ``key`` + the coefficient's position.
    """
    coefficients = np.asarray(coefficients, dtype=np.float64)
    nonzero = np.flatnonzero(np.any(coefficients.reshape(len(coefficients), -1) != 0, axis=1))
    coefficients = coefficients[:nonzero[-1] + 1] if nonzero.size else coefficients[:1]
    degree = len(coefficients) - 1
    powers = {1: x}
    while 2 * max(powers) <= degree:
        top = max(powers)
        powers[2 * top] = engine.multiply(powers[top], powers[top])

    def is_zero(c: Any) -> bool:
        return not np.any(c)

    def uniform(c: Any) -> float | None:
        """The coefficient as a scalar when it is the same in every slot."""
        c = np.asarray(c)
        return float(c.flat[0]) if np.all(c == c.flat[0]) else None

    def scale(ciphertext: Any, c: Any, start: int) -> Any:
        value = uniform(c)
        if value == 1.0:
            return ciphertext  # a unit coefficient (folded square): no product, no level
        if value is None:
            return engine.multiply_plain(ciphertext, c, key + ("coefficient", start))
        return engine.multiply_scalar(ciphertext, value)

    def shift(ciphertext: Any, c: Any, start: int) -> Any:
        value = uniform(c)
        if value is None:
            return engine.add_plain(ciphertext, c, key + ("constant", start))
        return engine.add_scalar(ciphertext, value)

    def evaluate(c: np.ndarray, start: int) -> tuple[Any | None, Any]:
        """(ciphertext part or None, constant part) of Σ c_i x^(i - start)."""
        rows = np.flatnonzero(np.any(c.reshape(len(c), -1) != 0, axis=1))
        c = c[:rows[-1] + 1] if rows.size else c[:0]
        if len(c) <= 1:
            return None, c[0] if len(c) else 0.0
        if len(c) == 2:
            return scale(x, c[1], start + 1), c[0]
        top = 1 << ((len(c) - 1).bit_length() - 1)
        low, constant = evaluate(c[:top], start)
        high, high_constant = evaluate(c[top:], start + top)
        if high is None:
            product = scale(powers[top], high_constant, start + top)
        else:
            if not is_zero(high_constant):
                high = shift(high, high_constant, start + top)
            product = engine.multiply(high, powers[top])
        return (product if low is None else engine.add(low, product)), constant

    result, constant = evaluate(coefficients, 0)
    if result is None:
        result = scale(x, np.zeros_like(coefficients[0]), 1)
        return shift(result, constant, 0)
    return result if is_zero(constant) else shift(result, constant, 0)


def substituted(coefficients: np.ndarray, gain: float) -> np.ndarray:
    """Power coefficients (degree first axis) of p(x / gain): c_i / gain^i."""
    if gain == 1.0:
        return coefficients
    powers = float(gain) ** -np.arange(len(coefficients), dtype=np.float64)
    return coefficients * powers.reshape((-1,) + (1,) * (np.ndim(coefficients) - 1))


def pad_to_slots(vector: np.ndarray, slots: int) -> np.ndarray:
    full = np.zeros(slots)
    full[:vector.size] = vector.reshape(-1)
    return full


def fill_slots(vector: np.ndarray, slots: int, period: int | None = None) -> np.ndarray:
    """A full slot vector: ``vector`` zero-padded to ``period`` and repeated (a replicated
    value, ``packing.assign_periods``), or zero-padded to ``slots``."""
    if not period or period >= slots:
        return pad_to_slots(vector, slots)
    return np.tile(pad_to_slots(vector, period), slots // period)


def pad_rows(rows: np.ndarray, slots: int, period: int | None = None) -> np.ndarray:
    """(k, slots) from (k, n ≤ slots), padded with the first column (per-slot coefficients:
    slots past the tensor evaluate the same polynomial as the other unused slots) to
    ``period`` and repeated when the value is replicated."""
    width = period if period and period < slots else slots
    full = np.repeat(rows[:, :1], width, axis=1)
    full[:, :rows.shape[1]] = rows
    return np.tile(full, (1, slots // width))


def slot_map(plan: Plan, name: str) -> np.ndarray:
    """Slots of a plan input's or output's elements (``packing`` pass; compact by default)."""
    maps = plan.layout.slot_maps if plan.layout is not None else {}
    if name in maps:
        return np.asarray(maps[name], dtype=np.int64)
    return np.arange(int(np.prod(plan.values[name].shape)), dtype=np.int64)


def pack(plan: Plan, name: str, x: np.ndarray, slots: int) -> np.ndarray:
    """The slot vector of one sample of input ``name`` (repeated every ``period`` slots when the
    plan replicates it; whole blocks of ``slots`` when it spans several ciphertexts)."""
    positions = slot_map(plan, name)
    blocks = block_count(positions, slots)
    if blocks > 1:
        packed = np.zeros(blocks * slots)
        packed[positions] = np.asarray(x, dtype=np.float64).reshape(-1)
        return packed
    period = plan.layout.periods.get(name) if plan.layout is not None else None
    packed = np.zeros(min(slots, period or slots))
    packed[positions] = np.asarray(x, dtype=np.float64).reshape(-1)
    return fill_slots(packed, slots, period)


def inputs_per_ciphertext(plan: Plan) -> int:
    """Client inputs one ciphertext carries (``--batch`` at compile; 1 by default)."""
    return plan.layout.batch if plan.layout is not None else 1


def pack_samples(plan: Plan, name: str, samples: np.ndarray, slots: int) -> np.ndarray:
    """The slot vector of up to ``inputs_per_ciphertext`` samples of input ``name``: sample b
    in block b (a batched plan), or one sample as :func:`pack`."""
    samples = np.asarray(samples, dtype=np.float64)
    if inputs_per_ciphertext(plan) == 1:
        if len(samples) != 1:
            raise ValueError(f"this plan packs one input per ciphertext, got {len(samples)}")
        return pack(plan, name, samples[0], slots)
    block = plan.layout.block
    if not 1 <= len(samples) <= plan.layout.batch:
        raise ValueError(f"this plan packs 1..{plan.layout.batch} inputs per ciphertext, got "
                         f"{len(samples)}")
    vector = np.zeros(slots)
    positions = slot_map(plan, name)
    for index, sample in enumerate(samples):
        vector[index * block + positions] = sample.reshape(-1)
    return vector


def unpack_samples(plan: Plan, name: str, vector: np.ndarray, count: int) -> np.ndarray:
    """``count`` samples of value ``name`` (batch axis first) from one slot vector."""
    vector = np.asarray(vector)
    if inputs_per_ciphertext(plan) == 1:
        return unpack(plan, name, vector)[None]
    block = plan.layout.block
    return np.stack([unpack(plan, name, vector[index * block:(index + 1) * block])
                     for index in range(count)])


def unpack(plan: Plan, name: str, vector: np.ndarray) -> np.ndarray:
    """One sample of value ``name`` (its shape without the batch axis) from its slot vector."""
    return np.asarray(vector)[slot_map(plan, name)].reshape(plan.values[name].shape[1:])


def rotated_diagonals(plan: Plan, step: Step, slots: int) -> list[tuple[int, int, np.ndarray]]:
    """(giant, baby, pre-rotated diagonal) per diagonal of a linear step."""
    layout = fhe_step(step).linear
    baby = layout.baby_step
    diagonals = plan.param(step, "diagonals")
    period = fhe_step(step).period
    result = []
    for offset, row in zip(layout.offsets, diagonals, strict=True):
        giant = (int(offset) // baby) * baby
        result.append((giant, int(offset) - giant,
                       np.roll(fill_slots(row, slots, period), giant)))
    return result


#: Pre-rotated diagonals kept across runs (beyond this they are rolled again per run: ResNet-20
#: on 16384 slots has 14k diagonals, 1.9 GB rolled).
DIAGONAL_CACHE_BYTES = 256 << 20


def fhe_step(step: Step) -> FheStep:
    """The step's CKKS contract (a step lowered without one runs as a plain step)."""
    return step.fhe if step.fhe is not None else FheStep()


class SlotProgram:
    """Runs a laid-out plan on one engine; keeps pre-rotated diagonals across runs."""

    def __init__(self, plan: Plan, engine: SlotEngine) -> None:
        self.plan = plan
        self.engine = engine
        # step → pre-rotated diagonals: a list (one ciphertext) or per block pair (blocked)
        self._diagonals: dict[str, Any] = {}
        self._cached_bytes = 0

    def diagonals(self, step: Step) -> list[tuple[int, int, np.ndarray]]:
        """Pre-rotated diagonals, kept across runs while they fit ``DIAGONAL_CACHE_BYTES``."""
        if step.name not in self._diagonals:
            entries = rotated_diagonals(self.plan, step, self.engine.slots)
            return self._keep(step, entries, len(entries))
        return self._diagonals[step.name]

    def _keep(self, step: Step, entries: Any, count: int) -> Any:
        """Keep ``entries`` (``count`` slot vectors) for later runs while the cache has room."""
        size = count * self.engine.slots * 8
        if self._cached_bytes + size <= DIAGONAL_CACHE_BYTES:
            self._diagonals[step.name] = entries
            self._cached_bytes += size
        return entries

    def giants(self, step: Step) -> dict[int, int]:
        """Giant step → number of diagonals under it, for a linear step (independent parts:
        each giant step's baby-step sum can be computed apart and the parts added)."""
        counts: dict[int, int] = {}
        for giant, _, _ in self.diagonals(step):
            counts[giant] = counts.get(giant, 0) + 1
        return dict(sorted(counts.items()))

    def linear_part(self, step: Step, ciphertext: Any, giants: list[int] | None = None,
                    factor: float = 1.0) -> Any:
        """Σ over ``giants`` (default: all) of rot_g(Σ_b diag'_(g+b) ⊙ rot_b(x)), no bias:
        the baby rotations these giants need are hoisted once. ``ciphertext`` must be
        prepared (:meth:`SlotEngine.prepare`)."""
        engine = self.engine
        entries = self.diagonals(step)
        chosen = sorted({g for g, _, _ in entries} if giants is None else set(giants))
        babies = sorted({b for g, b, _ in entries if b and g in chosen})
        rotated = engine.rotations(ciphertext, babies) if babies else {}
        rotated[0] = ciphertext
        result = None
        for giant in chosen:
            inner = None
            for index, (g, b, diagonal) in enumerate(entries):
                if g != giant:
                    continue
                term = engine.multiply_plain(rotated[b], diagonal * factor if factor != 1.0
                                             else diagonal, (step.name, index))
                inner = term if inner is None else engine.add(inner, term)
            if giant:
                inner = engine.rotate(inner, giant)
            result = inner if result is None else engine.add(result, inner)
        return result

    def add_bias(self, step: Step, result: Any, factor: float = 1.0) -> Any:
        """A linear step's bias added to its summed parts."""
        bias = self.plan.param(step, "bias_slots")
        if np.any(bias):
            engine = self.engine
            result = engine.add_plain(result, fill_slots(bias * factor, engine.slots,
                                                         fhe_step(step).period),
                                      (step.name, "bias"))
        return result

    def linear(self, step: Step, ciphertext: Any, factor: float = 1.0) -> Any:
        ciphertext = self.engine.prepare(ciphertext)
        return self.add_bias(step, self.linear_part(step, ciphertext, None, factor), factor)

    def blocked_linear(self, step: Step, blocks: list[Any], factor: float = 1.0) -> list[Any]:
        """A linear step over several ciphertexts (``Step.fhe.blocked``): each input block's
        baby rotations hoisted once, each output block Σ_g rot_g(Σ_pairs Σ_b diag' ⊙ rot_b(x_i))
        plus its part of the bias."""
        engine = self.engine
        layout = fhe_step(step).blocked
        if len(blocks) != layout.input_blocks:
            raise PlanError(f"step {step.name!r} reads {layout.input_blocks} ciphertexts, got "
                            f"{len(blocks)}")
        entries = self._diagonals.get(step.name)
        if entries is None:
            entries = blocked_diagonals(self.plan, step, engine.slots)
            self._keep(step, entries, sum(len(e) for e in entries.values()))
        prepared = [engine.prepare(block) for block in blocks]
        rotated: dict[int, dict[int, Any]] = {}
        for (_, i), pair in entries.items():
            rotated.setdefault(i, {0: prepared[i]})
            wanted = sorted({b for _, b, _ in pair if b} - set(rotated[i]))
            if wanted:
                rotated[i].update(engine.rotations(prepared[i], wanted))
        bias = self.plan.param(step, "bias_slots")
        outputs = []
        for o in range(layout.output_blocks):
            sums: dict[int, Any] = {}
            for (out_block, i), pair in entries.items():
                if out_block != o:
                    continue
                for index, (giant, baby, diagonal) in enumerate(pair):
                    term = engine.multiply_plain(
                        rotated[i][baby], diagonal * factor if factor != 1.0 else diagonal,
                        (step.name, o, i, index))
                    sums[giant] = term if giant not in sums else engine.add(sums[giant], term)
            result = None
            for giant in sorted(sums):
                part = engine.rotate(sums[giant], giant) if giant else sums[giant]
                result = part if result is None else engine.add(result, part)
            if result is None:  # no weight reaches this block: its bias alone
                result = engine.multiply_scalar(prepared[0], 0.0)
            part = block_slice(bias, o, engine.slots)
            if np.any(part):
                result = engine.add_plain(result, fill_slots(part * factor, engine.slots),
                                          (step.name, o, "bias"))
            outputs.append(result)
        return outputs

    def execute_blocks(self, step: Step, args: list[list[Any]], factor: float = 1.0,
                       gain: float = 1.0) -> list[Any]:
        """One step on values held as lists of ciphertexts (one per block)."""
        if fhe_step(step).blocked is not None:
            if gain != 1.0:
                raise PlanError(f"step {step.name} ({step.op}) reads a value its refresh "
                                f"multiplied by {gain:g}: only polynomial steps absorb that")
            return self.blocked_linear(step, args[0], factor)
        counts = {len(a) for a in args}
        if len(counts) > 1:
            raise PlanError(f"step {step.name!r} combines values over different numbers of "
                            "ciphertexts")
        return [self.execute_step(step, [a[k] for a in args], factor, gain, k)
                for k in range(counts.pop() if counts else 1)]

    def execute_step(self, step: Step, args: list[Any], factor: float = 1.0,
                     gain: float = 1.0, block: int = 0) -> Any:
        """One step; ``factor`` (only where ``Step.fhe.scales_for_free``) scales its output;
        ``gain`` is the power of two its input carries from an up-scaled refresh (only a
        polynomial reads such a value: it evaluates p(x / gain) by rescaling its coefficients
        or its Chebyshev interval); ``block`` is the ciphertext of a value spanning several
        (its part of the step's slot vectors)."""
        engine = self.engine
        period = fhe_step(step).period
        if gain != 1.0 and step.op != "Polynomial":
            raise PlanError(f"step {step.name} ({step.op}) reads a value its refresh multiplied "
                            f"by {gain:g}: only polynomial steps absorb that")
        if step.op in SLOT_MATRIX_OPS:
            return self.linear(step, args[0], factor)
        if step.op == "Reshape":
            return args[0]
        if step.op == "Add":
            if len(args) == 2:
                return engine.add(args[0], args[1])
            constant = fill_slots(block_slice(self.plan.param(step, "constant_slots"), block,
                                              engine.slots), engine.slots, period)
            return engine.add_plain(args[0], constant, (step.name, "constant", block))
        if step.op == "Product":
            return engine.multiply(args[0], args[1])
        if step.op == "Polynomial":
            if "coefficient_slots" in step.params:  # one polynomial per channel
                coefficients = pad_rows(block_slice(self.plan.param(step, "coefficient_slots"),
                                                    block, engine.slots), engine.slots, period)
                return power_series(engine, args[0], substituted(coefficients, gain) * factor,
                                    (step.name, block))
            if fhe_step(step).basis == POWER_BASIS:
                power = self.plan.param(step, "power_coefficients")[0]
                return power_series(engine, args[0], substituted(power, gain) * factor)
            coefficients = self.plan.param(step, "coefficients") * factor
            a, b = (float(v) * gain for v in self.plan.param(step, "interval"))
            return engine.chebyshev(args[0], coefficients[0], a, b)
        raise NotImplementedError(f"no slot-level kernel for {step.op}")

    def run(self, inputs: dict[str, Any]) -> tuple[dict[str, Any], list[StepTiming]]:
        """Run every step. A refresh with ``scale`` > 1 divides the value into the bootstrap's
        range and doubles it back after; one with ``scale`` < 1 multiplies it up (folded into
        its step) so the bootstrap's absolute error is smaller relative to it, and the value
        keeps that gain for its consumers (polynomials) to absorb."""
        env = {name: value if isinstance(value, list) else [value]
               for name, value in inputs.items()}
        gains: dict[str, float] = {}
        timings = []
        for step in self.plan.steps:
            start = time.perf_counter()
            refresh = fhe_step(step).bootstrap_after
            scale = refresh.scale if refresh is not None else 1.0
            divided = scale != 1.0 and fhe_step(step).scales_for_free
            if scale < 1.0 and not divided:
                raise PlanError(f"step {step.name} ({step.op}) cannot fold the up-scaling its "
                                "refresh asks for")
            gain = gains.get(step.inputs[0], 1.0) if step.inputs else 1.0
            result = self.execute_blocks(step, [env[v] for v in step.inputs],
                                         1.0 / scale if divided else 1.0, gain)
            if refresh is not None:
                result = [self.engine.bootstrap(block, scale, divided) for block in result]
                if scale < 1.0:
                    gains[step.outputs[0]] = 1.0 / scale
            env[step.outputs[0]] = result
            timings.append(StepTiming(step.name, step.op, time.perf_counter() - start))
        for spec in self.plan.outputs:
            if gains.get(spec.name, 1.0) != 1.0:
                raise PlanError(f"plan output {spec.name} carries an up-scaled refresh's gain")
        return {t.name: env[t.name] if is_blocked(self.plan) else env[t.name][0]
                for t in self.plan.outputs}, timings


def partition_giants(giants: dict[int, int], parts: int) -> list[list[int]]:
    """Giant steps (→ diagonal count) in ≤ ``parts`` groups of near-equal diagonal counts
    (largest first, each to the lightest group); empty groups dropped."""
    groups: list[list[int]] = [[] for _ in range(max(1, parts))]
    loads = [0] * len(groups)
    for giant, count in sorted(giants.items(), key=lambda item: (-item[1], item[0])):
        lightest = loads.index(min(loads))
        groups[lightest].append(giant)
        loads[lightest] += count
    return [sorted(group) for group in groups if group]


def has_layouts(plan: Plan) -> bool:
    """True for a laid-out FHE plan (its linear steps carry diagonals' layouts)."""
    return any(step.fhe is not None and (step.fhe.linear is not None
                                         or step.fhe.blocked is not None)
               for step in plan.steps)


def is_blocked(plan: Plan) -> bool:
    """True when the plan's tensors span several ciphertexts: its values (inputs, outputs and
    :meth:`SlotProgram.run`'s results) are lists of ciphertexts, one per block."""
    return plan.layout is not None and plan.layout.ciphertexts > 1
