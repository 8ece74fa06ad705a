"""slot_vectors — per-slot vectors of a step's parameters, and the baby-step giant-step split.

Reads: parameter arrays (values per tensor element, per-channel polynomial coefficients), slot
maps (``passes/packing.py``) and a linear step's diagonal offsets.
Writes: slot vectors (:func:`scatter`, :func:`channel_coefficient_slots`; per step
:func:`elementwise_vectors`) and the baby-step size
with its distinct baby and giant rotations (:func:`baby_giant_split`), for the one-ciphertext
layout (``passes/layout.py``) and the layout over several ciphertexts
(``passes/block_layout.py``).
"""

from __future__ import annotations

import numpy as np

from picompile.approx.basis import chebyshev_to_power


def scatter(values: np.ndarray, slot_map: np.ndarray) -> np.ndarray:
    """A slot vector (up to the highest mapped slot) holding ``values`` at ``slot_map``."""
    slots = np.zeros(int(slot_map.max()) + 1 if slot_map.size else 0)
    slots[slot_map] = np.asarray(values, dtype=np.float64).reshape(-1)
    return slots


def channel_coefficient_slots(coefficients: np.ndarray, interval: np.ndarray,
                              shape: tuple[int, ...], slot_map: np.ndarray) -> np.ndarray:
    """(degree+1, slots) power-basis coefficients of a per-channel polynomial, per slot.

    ``coefficients`` is (channels, degree+1) in the Chebyshev basis on ``interval``; element
    ``i`` of the (batch-free) tensor of ``shape`` (channels first) lives in slot
    ``slot_map[i]``. Unused slots (never read by a later step) get the first channel's
    polynomial, as every slot does in a per-layer activation: a coefficient the channels share
    then stays a scalar product (``power_series``).
    """
    power = chebyshev_to_power(coefficients, interval, snap=True)
    channels = power.shape[0]
    per_channel = int(np.prod(shape[2:])) if len(shape) > 2 else 1
    channel_of_element = np.repeat(np.arange(channels), per_channel)
    slots = np.repeat(power[:1].T, int(slot_map.max()) + 1, axis=1)
    slots[:, slot_map] = power[channel_of_element].T
    return slots


def baby_giant_split(offsets: np.ndarray) -> tuple[int, list[int], list[int]]:
    """Baby-step size minimizing distinct baby + giant rotations (0 needs no rotation)."""
    best = None
    span = int(offsets.max() - offsets.min()) + 1 if len(offsets) else 1
    candidates = sorted({1, *(2**k for k in range(1, span.bit_length() + 1)),
                         *range(max(1, int(np.sqrt(span)) - 8), int(np.sqrt(span)) + 9)})
    for baby in candidates:
        giants = np.unique(np.floor_divide(offsets, baby) * baby)
        babies = np.unique(offsets - np.floor_divide(offsets, baby) * baby)
        rotations = int(np.count_nonzero(babies)) + int(np.count_nonzero(giants))
        if best is None or rotations < best[0]:
            best = (rotations, baby, babies.tolist(), giants.tolist())
    return best[1], [int(b) for b in best[2]], [int(g) for g in best[3]]


def elementwise_vectors(plan, step, packing) -> dict[str, np.ndarray]:
    """The slot vectors an elementwise step reads, as ``node.meta`` entries: an Add of a
    constant its ``constant_slots``, a per-channel Polynomial its ``coefficient_slots`` (both
    over the output's whole packed extent); {} for any other step."""
    out_map = packing.slot_maps[step.outputs[0]]
    if step.op == "Add" and "constant" in step.params:
        shape = tuple(plan.values[step.outputs[0]].shape)
        constant = np.broadcast_to(plan.param(step, "constant"), shape).reshape(-1)
        return {"constant_slots": scatter(constant, out_map)}
    if step.op == "Polynomial" and plan.param(step, "coefficients").shape[0] > 1:
        return {"coefficient_slots": channel_coefficient_slots(
            plan.param(step, "coefficients"), plan.param(step, "interval"),
            tuple(plan.values[step.inputs[0]].shape), packing.slot_maps[step.inputs[0]])}
    return {}
