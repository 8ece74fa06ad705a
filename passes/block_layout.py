"""block_layout — the layout pass for FHE plans whose tensors span several ciphertexts.

Reads: the plan the ``layout`` pass simulates, the packing (``passes/packing.py``: slot maps may
run past the slot count) and ``slots`` (``analysis["ckks"]["slots"]``).
Writes, per step: ``meta["ciphertexts"]`` (ciphertexts its output spans: packed slot ``s`` lives
in ciphertext ``s // slots`` at ``s % slots``) and ``meta["packing"]``; per linear step
``meta["blocked"]`` (the :class:`~picompile.plan.contract.BlockedLinear` record: one
(output ciphertext, input ciphertext) pair per block of the matrix with its signed diagonal
offsets, one baby-step size for all pairs, the distinct baby and giant rotations, the rotation
and diagonal counts), ``meta["input_slots"]``/``meta["output_slots"]`` (the slot maps the
runtime turns the step's weights into per-pair diagonals with — no diagonals are stored: a
ResNet stage over four ciphertexts has thousands of them) and ``meta["bias_slots"]``; Add of
a constant and per-channel polynomials get their slot vectors over the whole packed extent, as
in one ciphertext. ``context.analysis["layout"]``: as the one-ciphertext layout, with
``ciphertexts`` the most any value spans.

Execution (``runtime/slot_program.py``): elementwise steps and bootstraps run block by block;
a linear step hoists each input ciphertext's baby rotations once and gives each output
ciphertext one rotation per giant step over all its pairs, so it costs
``input blocks × babies + output blocks × giants`` rotations and one plaintext product per
pair diagonal. Replication (``periods``) and ``--batch`` do not apply to blocked plans (every
period is the slot count).
"""

from __future__ import annotations

import numpy as np

from picompile.errors import UnsupportedOpError
from picompile.ir import Graph
from picompile.passes.slot_vectors import baby_giant_split, elementwise_vectors, scatter
from picompile.plan.ops import SLOT_MATRIX_OPS as MATRIX_OPS
from picompile.runtime.interface import block_count, op_matrix, pair_offsets


def blocked_linear(rows: np.ndarray, cols: np.ndarray, slots: int, input_blocks: int,
                   output_blocks: int) -> dict:
    """The ``BlockedLinear`` record (as a dict) of a sparse matrix between packed slots, from a
    value of ``input_blocks`` ciphertexts to one of ``output_blocks`` (a block no weight
    touches still counts: the values keep their ciphertext counts)."""
    pairs = pair_offsets(rows, cols, slots)
    union = np.unique(np.concatenate(list(pairs.values()))) if pairs else np.zeros(1, np.int64)
    baby, babies, giants = baby_giant_split(union)
    babies_of: dict[int, set[int]] = {}
    giants_of: dict[int, set[int]] = {}
    for (output_block, input_block), offsets in pairs.items():
        giant = np.floor_divide(offsets, baby) * baby
        babies_of.setdefault(input_block, set()).update(int(b) for b in offsets - giant if b)
        giants_of.setdefault(output_block, set()).update(int(g) for g in giant if g)
    rotations = sum(map(len, babies_of.values())) + sum(map(len, giants_of.values()))
    return {"slots": slots,
            "input_blocks": input_blocks,
            "output_blocks": output_blocks,
            "baby_step": baby,
            "baby_rotations": sorted(set().union(*babies_of.values())) if babies_of else [],
            "giant_rotations": sorted(set().union(*giants_of.values())) if giants_of else [],
            "pairs": [{"output_block": o, "input_block": i, "offsets": offsets.tolist()}
                      for (o, i), offsets in sorted(pairs.items())],
            "rotations": rotations,
            "diagonal_count": int(sum(len(v) for v in pairs.values()))}


def run_blocked(graph: Graph, context, plan, packing, slots: int) -> list[str]:
    """Lay out a plan over several ciphertexts (see the module docstring)."""
    if int(getattr(context.options, "batch", 1)) != 1:
        raise UnsupportedOpError(
            f"--batch: one input of this model needs {packing.extent()} slots, more than the "
            f"{slots} of one ciphertext, so inputs cannot share a ciphertext")
    rotation_keys: set[int] = set()
    total_rotations = diagonals = widest = 0
    for value, slot_map in packing.slot_maps.items():
        packing.periods[value] = slots
        widest = max(widest, block_count(slot_map, slots))
    for step in plan.steps:
        node = graph.node(step.name)
        out_map = packing.slot_maps[step.outputs[0]]
        blocks = block_count(out_map, slots)
        node.meta["ciphertexts"] = blocks
        node.meta["packing"] = packing.describe(step.outputs[0]) + (
            f", {blocks} ciphertexts" if blocks > 1 else "")
        vectors = elementwise_vectors(plan, step, packing)
        if vectors:
            node.meta.update(vectors)
            continue
        if step.op not in MATRIX_OPS:
            continue
        in_map = packing.slot_maps[step.inputs[0]]
        rows, cols, values, bias = op_matrix(plan, step)
        layout = blocked_linear(out_map[rows], in_map[cols], slots,
                                block_count(in_map, slots), blocks)
        node.meta["blocked"] = layout
        node.meta["input_slots"] = in_map.astype(np.float64)
        node.meta["output_slots"] = out_map.astype(np.float64)
        node.meta["bias_slots"] = scatter(bias, out_map)
        rotation_keys.update(layout["baby_rotations"] + layout["giant_rotations"])
        total_rotations += layout["rotations"]
        diagonals += layout["diagonal_count"]
    keys = sorted(rotation_keys)
    context.analysis["layout"] = {
        "slots": slots, "rotation_keys": keys, "rotations_per_inference": total_rotations,
        "replicated_values": 0, "diagonals_per_inference": diagonals,
        "slot_maps": {spec.name: packing.slot_maps[spec.name].tolist()
                      for spec in plan.inputs + plan.outputs},
        "periods": {spec.name: slots for spec in plan.inputs},
        "packing": {spec.name: packing.describe(spec.name) for spec in plan.inputs},
        "batch": 1, "block": 0, "ciphertexts": widest}
    return [f"{total_rotations} rotations per inference, {len(keys)} distinct rotation keys, "
            f"{slots} slots, tensors over up to {widest} ciphertexts"]
