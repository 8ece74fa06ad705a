"""layout — pack every tensor into CKKS slots and every linear op into rotations (FHE plans).

Reads: the approximated IR, ``context.analysis["ckks"]["slots"]`` (from the levels pass) or, for
hybrid plans, ``context.analysis["bfv"]["slots"]`` (from the hybrid_parameters pass; BFV rows
rotate like CKKS slots). In hybrid plans activations run on secret shares and get no layout.
Writes, per linear node (Conv, Linear, ChannelAffine, Mul by constant, AveragePool,
GlobalAveragePool, ReduceMean/ReduceSum, Pad, Transpose):

* ``meta["diagonals"]`` — (number of diagonals, output size) generalized diagonals of the op's
  matrix from input slots to output slots: ``diagonals[j][o] = M[o, o + offsets[j]]``;
* ``meta["bias_slots"]`` — the op's constant term per output slot (``M·0``);
* ``meta["layout"]`` — ``offsets`` (signed rotation amounts, one per diagonal), the baby-step
  size ``baby_step`` of the baby-step giant-step split (chosen per op to minimize rotations),
  the distinct ``baby_rotations`` and ``giant_rotations``, and the rotation count.

Add of a constant gets ``meta["constant_slots"]``; a per-channel Polynomial (``hermite``,
``quad``) gets ``meta["coefficient_slots"]``, its power-basis coefficients per slot. Where
each tensor element lives is the ``packing`` module's slot map (multiplexed channel packing:
strided convolutions keep their outputs on the input grid with channels interleaved into the
gaps); every step also gets
``meta["packing"]``, a description of its output's packing. The matrix of each op is derived
from the plain kernel (Conv directly from its weights; other ops by applying the kernel to
basis vectors in chunks, kept sparse) and mapped from tensor indices to slots, so every op the
plain runtime executes gets a layout without op-specific code; offsets are reduced modulo the
slot count (rotations are cyclic). ``context.analysis["layout"]`` records the plan's rotation-key
set and counts and the slot maps of the plan's inputs and outputs (the client packs and unpacks
with them).

Hybrid plans get a blocked layout instead (:func:`blocked_layout`): tensors of any size are split
into blocks of one BFV row, each linear op into (output block, input block) pairs with their own
offsets and BSGS split in ``meta["hybrid_layout"]``; no diagonals are stored (the server derives
them from the weights).

With ``--batch B`` (``CompileOptions.batch``; 0: as many as fit) every value gets period
``block`` = the power of two holding the widest packed tensor, B ≤ slots/block client inputs
share one ciphertext (input b in block b), and offsets are not reduced modulo the block: an
entry's source slot always lies in its own block, so inputs never mix (a diagonal may split into
two rotations where a single input would wrap); ``analysis["layout"]`` records ``batch`` and
``block``.

A packing wider than the slots is laid out over several ciphertexts by
:mod:`picompile.passes.block_layout`. Not yet: a search over alternative packings.
"""

from __future__ import annotations

import numpy as np

from picompile.errors import UnsupportedOpError
from picompile.ir import Graph
from picompile.passes.block_layout import run_blocked
from picompile.passes.packing import assign_packing, assign_periods
from picompile.passes.slot_vectors import baby_giant_split, elementwise_vectors, scatter
from picompile.plan.ops import ACTIVATION_OPS, PLAN_OPS, POOL_MAX
from picompile.plan.ops import FHE_OPS as SLOT_OPS
from picompile.plan.ops import SLOT_MATRIX_OPS as MATRIX_OPS
from picompile.runtime.interface import generalized_diagonals, op_matrix, row_rotation
from picompile.simulate import GraphSimulator

NAME = "layout"


def block_pairs(rows: np.ndarray, cols: np.ndarray, slots: int) -> list[dict]:
    """Split a sparse matrix into (output block, input block) pairs of ``slots`` slots each and
    give every pair its signed diagonal offsets and baby-step giant-step split (rotation
    amounts reduced by :func:`row_rotation`)."""
    in_block, out_block = cols // slots, rows // slots
    local = (cols % slots) - (rows % slots)
    pairs = []
    keys = np.stack([out_block, in_block], axis=1)
    unique, index = np.unique(keys, axis=0, return_inverse=True)
    index = np.ravel(index)
    for position, (output_block, input_block) in enumerate(unique):
        offsets = np.unique(local[index == position])
        baby, babies, giants = baby_giant_split(offsets)
        pairs.append({"output_block": int(output_block), "input_block": int(input_block),
                      "offsets": offsets.tolist(), "baby_step": baby,
                      "baby_rotations": sorted({row_rotation(b, slots) for b in babies}),
                      "giant_rotations": sorted({row_rotation(g, slots) for g in giants})})
    return pairs


def blocked_layout(graph: Graph, context, plan, slots: int) -> list[str]:
    """Hybrid plans: each linear op's matrix in blocks of one BFV row, offsets and BSGS splits
    per block pair (``meta["hybrid_layout"]``). Weights and diagonals are not copied into the
    plan: the server derives them from the op's parameters, the client never sees them."""
    rotation_keys: set[int] = set()
    total_rotations = products = 0
    for step in plan.steps:
        if step.meta.get("hybrid", {}).get("protocol") != "he_linear":
            continue  # activations and public linear maps run on shares
        rows, cols, _, _ = op_matrix(plan, step)
        n_in = int(np.prod(plan.values[step.inputs[0]].shape))
        n_out = int(np.prod(plan.values[step.outputs[0]].shape))
        pairs = block_pairs(rows, cols, slots)
        rotations = sum(len([k for k in p["baby_rotations"] if k]) +
                        len([k for k in p["giant_rotations"] if k]) for p in pairs)
        for pair in pairs:
            rotation_keys.update(k for k in pair["baby_rotations"] + pair["giant_rotations"] if k)
        graph.node(step.name).meta["hybrid_layout"] = {
            "slots": slots, "input_blocks": -(-n_in // slots), "output_blocks": -(-n_out // slots),
            "pairs": pairs, "rotations": rotations,
            "plaintext_products": sum(len(p["offsets"]) for p in pairs)}
        total_rotations += rotations
        products += sum(len(p["offsets"]) for p in pairs)
    keys = sorted(rotation_keys)
    context.analysis["layout"] = {"slots": slots, "rotation_keys": keys,
                                  "rotations_per_inference": total_rotations,
                                  "plaintext_products_per_inference": products}
    return [f"{total_rotations} rotations and {products} plaintext products per inference "
            f"(offline), {len(keys)} distinct rotation keys, {slots} slots per block"]


def refuse_non_slot_ops(graph: Graph) -> None:
    """One-line UnsupportedOpError for the first op with no CKKS kernel (in any FHE plan, runnable
    or not): what blocks it and what to do instead."""
    for node in graph.nodes():
        if node.op in SLOT_OPS:
            continue
        if node.op in ACTIVATION_OPS:
            hint = "activations become polynomial with --degree or --accuracy-budget"
        elif PLAN_OPS[node.op].kind == POOL_MAX:
            hint = f"{node.op} needs the hybrid protocol (--protocol hybrid)"
        else:
            hint = (f"{node.op} has no private-inference lowering: compile without --calib for "
                    "a plain-backend plan")
        raise UnsupportedOpError(
            f"step {node.name!r} ({node.op}) cannot run under CKKS: {hint}; FHE plans support "
            f"{', '.join(sorted(SLOT_OPS))}")


def run(graph: Graph, context) -> list[str]:
    hybrid = context.options.protocol == "hybrid"
    if not hybrid:
        refuse_non_slot_ops(graph)
    scheme = context.analysis["bfv" if hybrid else "ckks"]
    if not scheme.get("runnable"):
        return ["skipped: " + scheme.get("reason", "the plan cannot run under CKKS")]
    slots = int(scheme["slots"])
    simulator = GraphSimulator(graph)
    plan = simulator.plan
    if hybrid:
        return blocked_layout(graph, context, plan, slots)
    packing = assign_packing(plan)
    if packing.extent() > slots:
        return run_blocked(graph, context, plan, packing, slots)
    batch, block = batch_blocks(packing, slots, int(getattr(context.options, "batch", 1)))
    if batch > 1:  # every value repeats per block: one client input in each
        for value in packing.slot_maps:
            packing.periods[value] = block
    else:
        assign_periods(plan, packing, slots, MATRIX_OPS)
    # a batched layout never relies on an input copy in the next block: offsets stay unreduced
    diagonal_period = slots if batch > 1 else None
    rotation_keys: set[int] = set()
    total_rotations = 0
    for step in plan.steps:
        node = graph.node(step.name)
        out_map = packing.slot_maps[step.outputs[0]]
        out_period = packing.periods[step.outputs[0]]
        node.meta["packing"] = (packing.describe(step.outputs[0])
                                + packing.describe_replication(step.outputs[0], slots))
        if out_period < slots:
            node.meta["period"] = out_period
        vectors = elementwise_vectors(plan, step, packing)
        if vectors:
            node.meta.update(vectors)
            continue
        if step.op not in MATRIX_OPS:
            continue
        rows, cols, values, bias = op_matrix(plan, step)
        rows = out_map[rows]
        cols = packing.slot_maps[step.inputs[0]][cols]
        in_period = packing.periods[step.inputs[0]]
        width = int(out_map.max()) + 1
        bias = scatter(bias, out_map)
        if out_period < slots:
            # every copy of the output within one diagonal period (the input's or the output's)
            width = max(in_period, out_period)
            copies = np.arange(width // out_period) * out_period
            rows = (rows[None, :] + copies[:, None]).reshape(-1)
            cols = np.tile(cols, copies.size)
            values = np.tile(values, copies.size)
            bias = np.tile(np.pad(bias, (0, out_period - bias.size)), copies.size)
            node.meta["period"] = width
        offsets, diagonals = generalized_diagonals(rows, cols, values, width,
                                                   diagonal_period or in_period)
        baby, babies, giants = baby_giant_split(offsets)
        rotations = int(np.count_nonzero(babies)) + int(np.count_nonzero(giants))
        node.meta["diagonals"] = diagonals
        node.meta["bias_slots"] = bias
        node.meta["layout"] = {"offsets": offsets.tolist(), "baby_step": baby,
                               "baby_rotations": babies, "giant_rotations": giants,
                               "rotations": rotations, "diagonal_count": len(offsets)}
        rotation_keys.update(k for k in babies + giants if k)
        total_rotations += rotations
    keys = sorted(rotation_keys)
    context.analysis["layout"] = {
        "slots": slots, "rotation_keys": keys, "rotations_per_inference": total_rotations,
        "replicated_values": sum(1 for p in packing.periods.values() if p < slots),
        "diagonals_per_inference": sum(len(graph.node(s.name).meta["layout"]["offsets"])
                                       for s in plan.steps if s.op in MATRIX_OPS),
        "slot_maps": {spec.name: packing.slot_maps[spec.name].tolist()
                      for spec in plan.inputs + plan.outputs},
        "periods": {spec.name: packing.periods[spec.name] for spec in plan.inputs},
        "packing": {spec.name: packing.describe(spec.name) for spec in plan.inputs},
        "batch": batch, "block": block if batch > 1 else 0}
    return [f"{total_rotations} rotations per inference, {len(keys)} distinct rotation keys, "
            f"{slots} slots" + (f", {batch} inputs per ciphertext ({block} slots each)"
                                if batch > 1 else "")]


def batch_blocks(packing, slots: int, requested: int) -> tuple[int, int]:
    """(inputs per ciphertext, slots per input) for ``--batch`` (0: as many as fit): blocks of
    the power of two that holds the plan's widest packed tensor."""
    if requested == 1:
        return 1, slots
    block = 1 << max(0, (packing.extent() - 1).bit_length())
    fit = slots // block
    if requested > fit or fit < 2:
        raise UnsupportedOpError(
            f"--batch {requested}: one input of this model needs {block} of the {slots} slots, "
            f"so at most {fit} inputs share a ciphertext" + ("" if fit >= 2 else
                                                             ": batching does not apply"))
    return (requested or fit), block
