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

Add of a constant gets ``meta["constant_slots"]``. The packing is the row-major flattening of
the tensor (batch 1) in the first slots of one ciphertext; Reshape/Flatten are therefore free.
The matrix of each op is derived by applying the plain kernel to basis vectors (in chunks,
kept sparse), so every op the plain runtime executes gets a packing without op-specific code.
``context.analysis["layout"]`` records the plan's rotation-key set and counts.

Not yet: multi-ciphertext tensors (size > slots), channel-gap layouts after strides, and a
search over layouts; tensors larger than the slot count are a clear UnsupportedOpError.
"""

from __future__ import annotations

import numpy as np

from picompile.errors import UnsupportedOpError
from picompile.ir import Graph
from picompile.plan import SLOT_MATRIX_OPS, Plan, Step
from picompile.runtime.plain import execute_step
from picompile.simulate import GraphSimulator

NAME = "layout"
MATRIX_OPS = SLOT_MATRIX_OPS
FREE_OPS = frozenset({"Reshape"})
SLOT_OPS = MATRIX_OPS | FREE_OPS | {"Add", "Polynomial"}
SHARE_OPS = frozenset({"Relu", "Polynomial", "MaxPool"})  # hybrid: evaluated on shares
BASIS_CHUNK = 512


def op_matrix(plan: Plan, step: Step) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(rows, cols, values) of the op's sparse matrix, and its constant term, over flat tensors."""
    in_shape = tuple(plan.values[step.inputs[0]].shape)
    in_size = int(np.prod(in_shape))
    bias = execute_step(plan, step, [np.zeros((1,) + in_shape[1:])]).reshape(-1)
    rows, cols, values = [], [], []
    for start in range(0, in_size, BASIS_CHUNK):
        count = min(BASIS_CHUNK, in_size - start)
        basis = np.zeros((count, in_size))
        basis[np.arange(count), start + np.arange(count)] = 1.0
        response = execute_step(plan, step, [basis.reshape((count,) + in_shape[1:])])
        response = response.reshape(count, -1) - bias
        column, row = np.nonzero(response)
        rows.append(row)
        cols.append(column + start)
        values.append(response[column, row])
    return np.concatenate(rows), np.concatenate(cols), np.concatenate(values), bias


def generalized_diagonals(rows: np.ndarray, cols: np.ndarray, values: np.ndarray,
                          out_size: int) -> tuple[np.ndarray, np.ndarray]:
    """Signed offsets (col − row) and the (offsets, out_size) diagonal matrix."""
    offsets, index = np.unique(cols - rows, return_inverse=True)
    diagonals = np.zeros((len(offsets), out_size))
    diagonals[index, rows] = values
    return offsets, diagonals


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


def run(graph: Graph, context) -> list[str]:
    hybrid = context.options.protocol == "hybrid"
    scheme = context.analysis["bfv" if hybrid else "ckks"]
    if not scheme.get("runnable"):
        return ["skipped: " + scheme.get("reason", "the plan cannot run under CKKS")]
    slots = int(scheme["slots"])
    simulator = GraphSimulator(graph)
    plan = simulator.plan
    rotation_keys: set[int] = set()
    total_rotations = 0
    for step in plan.steps:
        node = graph.node(step.name)
        if hybrid and step.op in SHARE_OPS:
            continue
        if step.op not in SLOT_OPS:
            raise UnsupportedOpError(
                f"step {step.name!r} ({step.op}) cannot run under CKKS yet: FHE plans support "
                f"{', '.join(sorted(SLOT_OPS))} (compile with --calib to make activations "
                "polynomial; MaxPool needs the hybrid protocol)")
        for value in step.inputs + step.outputs:
            size = int(np.prod(plan.values[value].shape))
            if size > slots:
                raise UnsupportedOpError(
                    f"tensor {value!r} has {size} elements, more than the {slots} slots of one "
                    "ciphertext; multi-ciphertext packing is not implemented yet")
        if step.op == "Add" and "constant" in step.params:
            shape = tuple(plan.values[step.outputs[0]].shape)
            node.meta["constant_slots"] = np.broadcast_to(plan.param(step, "constant"),
                                                          shape).reshape(-1).copy()
            continue
        if step.op not in MATRIX_OPS:
            continue
        rows, cols, values, bias = op_matrix(plan, step)
        out_size = int(np.prod(plan.values[step.outputs[0]].shape))
        offsets, diagonals = generalized_diagonals(rows, cols, values, out_size)
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
    context.analysis["layout"] = {"slots": slots, "rotation_keys": keys,
                                  "rotations_per_inference": total_rotations}
    return [f"{total_rotations} rotations per inference, {len(keys)} distinct rotation keys, "
            f"{slots} slots"]
