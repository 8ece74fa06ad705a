"""blocks — tensors spread over several ciphertexts, and generalized diagonals.

A value whose packed slot vector is longer than one ciphertext's ``slots`` is split into
consecutive blocks: packed slot ``s`` lives in ciphertext ``s // slots`` at slot ``s % slots``
(the ``packing`` pass's slot maps do not change; they simply run past the slot count).
Elementwise steps and bootstraps act block by block; a linear step is a block matrix whose
(output block, input block) pairs each have their own generalized diagonals
(:class:`~picompile.plan.contract.BlockedLinear`).

Reads: a plan's blocked linear steps — their weights (through the plain kernel's sparse matrix,
:func:`~picompile.runtime.kernels.op_matrix`) and their ``input_slots``/``output_slots`` arrays.
Writes: per pair, the pre-rotated diagonals the slot program multiplies with
(:func:`blocked_diagonals`); slot vectors split into and joined from blocks; several serialized
ciphertexts framed as one message (:func:`frame`/:func:`unframe`).

The compiler's layout pass uses :func:`generalized_diagonals`, :func:`pair_offsets` and
:func:`block_count` from here (through ``runtime/interface``), so the compiled offsets and the
runtime's diagonals are computed by one function.
"""

from __future__ import annotations

import struct

import numpy as np

from picompile.errors import PlanError
from picompile.plan import Plan, Step
from picompile.runtime.kernels import op_matrix

#: Prefix of a framed message of several serialized ciphertexts (one value's blocks).
FRAME_MAGIC = b"PCB1"


def block_count(slot_map: np.ndarray, slots: int) -> int:
    """Ciphertexts a value with this slot map spans."""
    return int(slot_map.max()) // slots + 1 if slot_map.size else 1


def split_blocks(vector: np.ndarray, slots: int) -> list[np.ndarray]:
    """A packed slot vector (length a multiple of ``slots``) as one vector per ciphertext."""
    vector = np.asarray(vector)
    if vector.size % slots:
        raise ValueError(f"a slot vector of {vector.size} values is not whole blocks of {slots}")
    return [vector[k * slots:(k + 1) * slots] for k in range(vector.size // slots)]


def block_slice(vector: np.ndarray, block: int, slots: int) -> np.ndarray:
    """The part of a packed vector (last axis) that falls in ciphertext ``block``."""
    return np.asarray(vector)[..., block * slots:(block + 1) * slots]


def signed_offsets(shifts: np.ndarray, period: int) -> np.ndarray:
    """Rotation amounts reduced into (−period/2, period/2] (rotations are cyclic)."""
    return np.mod(shifts + period // 2 - 1, period) - period // 2 + 1


def generalized_diagonals(rows: np.ndarray, cols: np.ndarray, values: np.ndarray,
                          out_size: int, period: int | None = None
                          ) -> tuple[np.ndarray, np.ndarray]:
    """Signed offsets (col − row) and the (offsets, out_size) diagonal matrix. With ``period``
    (rotations are cyclic over the slots, and the input's slot vector repeats every ``period``
    slots: the slot count, or the replication period) offsets are reduced into
    (−period/2, period/2] so that entries equal modulo the period share a diagonal."""
    shifts = cols - rows
    if period is not None:
        shifts = signed_offsets(shifts, period)
    offsets, index = np.unique(shifts, return_inverse=True)
    diagonals = np.zeros((len(offsets), out_size))
    diagonals[index, rows] = values
    return offsets, diagonals


def pair_offsets(rows: np.ndarray, cols: np.ndarray, slots: int
                 ) -> dict[tuple[int, int], np.ndarray]:
    """(output block, input block) → the signed diagonal offsets of that pair, for a sparse
    matrix from packed input slots ``cols`` to packed output slots ``rows`` (a bitmap over
    pairs × slots: no sort of the matrix's entries)."""
    width = int(cols.max()) // slots + 1 if cols.size else 1
    height = int(rows.max()) // slots + 1 if rows.size else 1
    present = np.zeros(height * width * slots, dtype=bool)
    shifts = np.mod(cols % slots - rows % slots, slots)  # in [0, slots)
    present[((rows // slots) * width + cols // slots) * slots + shifts] = True
    result = {}
    for key in np.flatnonzero(present.reshape(-1, slots).any(axis=1)):
        found = np.flatnonzero(present[key * slots:(key + 1) * slots])
        result[(int(key) // width, int(key) % width)] = np.unique(signed_offsets(found, slots))
    return result


def slot_matrix(plan: Plan, step: Step) -> tuple[np.ndarray, np.ndarray, np.ndarray,
                                                 np.ndarray]:
    """A blocked linear step's sparse matrix in packed slots: (rows, cols, values) and the
    packed bias vector (``bias_slots``)."""
    for key in ("input_slots", "output_slots", "bias_slots"):
        if key not in step.params:
            raise PlanError(f"blocked linear step {step.name!r} lacks its {key} array")
    rows, cols, values, _ = op_matrix(plan, step)
    out_map = plan.param(step, "output_slots").astype(np.int64)
    in_map = plan.param(step, "input_slots").astype(np.int64)
    return out_map[rows], in_map[cols], values, plan.param(step, "bias_slots")


def blocked_diagonals(plan: Plan, step: Step, slots: int
                      ) -> dict[tuple[int, int], list[tuple[int, int, np.ndarray]]]:
    """(output block, input block) → [(giant, baby, pre-rotated diagonal)] of a blocked linear
    step, in the order of the pair's offsets in its layout (the compiler's)."""
    layout = step.fhe.blocked
    rows, cols, values, _ = slot_matrix(plan, step)
    baby = layout.baby_step
    keys = (rows // slots) * layout.input_blocks + cols // slots
    order = np.argsort(keys, kind="stable")
    keys = keys[order]
    result = {}
    for pair in layout.pairs:
        key = pair.output_block * layout.input_blocks + pair.input_block
        chosen = order[np.searchsorted(keys, key):np.searchsorted(keys, key, side="right")]
        offsets, diagonals = generalized_diagonals(rows[chosen] % slots, cols[chosen] % slots,
                                                   values[chosen], slots, slots)
        if offsets.tolist() != list(pair.offsets):
            raise PlanError(f"step {step.name!r}: the weights do not match the layout's offsets "
                            f"of block pair ({pair.output_block}, {pair.input_block})")
        entries = []
        for offset, row in zip(offsets, diagonals, strict=True):
            giant = (int(offset) // baby) * baby
            entries.append((giant, int(offset) - giant, np.roll(row, giant)))
        result[(pair.output_block, pair.input_block)] = entries
    return result


def frame(parts: list[bytes]) -> bytes:
    """Several serialized ciphertexts (one value's blocks) as one message; one part is sent as
    it is."""
    if len(parts) == 1:
        return parts[0]
    header = FRAME_MAGIC + struct.pack("<I", len(parts))
    return header + b"".join(struct.pack("<Q", len(p)) + p for p in parts)


def unframe(data: bytes, count: int) -> list[bytes]:
    """The ``count`` serialized ciphertexts of a framed message (:func:`frame`)."""
    if count == 1:
        return [data]
    if data[:4] != FRAME_MAGIC or len(data) < 8:
        raise PlanError(f"expected {count} ciphertexts in one framed message, got a "
                        f"{len(data)}-byte message without the frame header")
    found = struct.unpack_from("<I", data, 4)[0]
    if found != count:
        raise PlanError(f"expected {count} ciphertexts, the message holds {found}")
    parts, position = [], 8
    for _ in range(count):
        if position + 8 > len(data):
            raise PlanError("a framed ciphertext message is truncated")
        size = struct.unpack_from("<Q", data, position)[0]
        position += 8
        if position + size > len(data):
            raise PlanError("a framed ciphertext message is truncated")
        parts.append(data[position:position + size])
        position += size
    if position != len(data):
        raise PlanError("a framed ciphertext message has trailing bytes")
    return parts
