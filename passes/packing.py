"""packing — where every element of every encrypted tensor lives in the CKKS slots (FHE plans).

Reads: a lowered plan's steps and value shapes (used by the ``levels`` pass for the slot count
and by the ``layout`` pass for the matrices of linear ops).
Writes: a :class:`Packing` — per value, a *slot map* (flat tensor index → slot index) and, for
image tensors, the grid description it was generated from.

Layouts (multiplexed packing, Lee et al. 2022, "Low-complexity deep convolutional neural
networks on fully homomorphic encryption using multiplexed parallel convolutions"):

* an image input ``(1, C, H, W)`` is packed channel after channel on an ``H×W`` grid
  (``slot = c·H·W + i·W + j``: the row-major flattening);
* a convolution of stride ``s`` does **not** compact its output: output pixel ``(i, j)`` stays at
  grid position ``(g·i, g·j)`` with the gap ``g`` multiplied by ``s``, and the ``g²`` channels
  that now share one grid are interleaved into the gaps: channel ``c`` sits at offset
  ``((c mod g²) // g, c mod g)`` inside each ``g×g`` cell of grid ``c // g²``. So
  ``slot(c, i, j) = (c // g²)·H₀W₀ + (g·i + (c mod g²)//g)·W₀ + g·j + c mod g``.
  A strided convolution then has about as few generalized diagonals as a stride-1 one, and
  every tensor of a ResNet stays as dense as its input (16×32×32, 32×16×16 and 64×8×8 all fill
  their slots) — where compacting after each stride costs one diagonal per output pixel;
* elementwise steps (activations, folded batch norm, residual Add, constants) keep their
  input's slots; a global average pool leaves each channel's mean at its cell's first slot;
  Reshape/Flatten keep the slots of every element; any other op (dense layers, pooling with
  windows, padding, transposes) writes its output compactly from slot 0.

Slots outside a tensor's map hold don't-care values: every linear step reads only mapped slots
(its diagonals are zero elsewhere) and writes zeros (plus nothing) outside its output map.

Replication (:func:`assign_periods`): a tensor whose map spans ``P`` slots (``P`` the next power
of two, ``P < slots``) is stored ``slots / P`` times, the slot vector periodic with period
``P`` — the client tiles the inputs, a linear step writes every copy (its diagonals are
periodic), elementwise steps keep periodicity. A linear step reading a ``P``-periodic input
needs only its offsets modulo ``P``: the channel-group offsets of multiplexed convolutions
merge (ResNet-20 3×32×32: 14,316 → 8,800 diagonals per inference; stage 3 runs four copies).
An output is replicated only while it spans at least half its input's period (a 10-logit head
replicated 1024 times would need a diagonal per copy); otherwise its period is the slot count.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from picompile.errors import UnsupportedOpError
from picompile.plan import Plan
from picompile.plan.ops import ELEMENTWISE_OPS


@dataclass(frozen=True)
class Grid:
    """A (channels, height, width) tensor on a gapped, channel-multiplexed grid."""

    channels: int
    height: int
    width: int
    gap: int
    grid_height: int
    grid_width: int

    @property
    def groups(self) -> int:
        return -(-self.channels // self.gap**2)

    def slot_map(self) -> np.ndarray:
        g = self.gap
        c = np.arange(self.channels)[:, None, None]
        i = np.arange(self.height)[None, :, None]
        j = np.arange(self.width)[None, None, :]
        slots = ((c // g**2) * self.grid_height * self.grid_width
                 + (g * i + (c % g**2) // g) * self.grid_width + g * j + c % g)
        return slots.reshape(-1).astype(np.int64)

    def describe(self) -> str:
        if self.gap == 1:
            return f"{self.channels}×{self.height}×{self.width} channel-major"
        return (f"{self.channels}×{self.height}×{self.width} on {self.grid_height}×"
                f"{self.grid_width} grids, gap {self.gap}, {self.gap**2} channels multiplexed")


@dataclass
class Packing:
    """Slot map of every encrypted value (flat index → slot) and the grids they came from."""

    slot_maps: dict[str, np.ndarray] = field(default_factory=dict)
    grids: dict[str, Grid | None] = field(default_factory=dict)
    #: period of each value's slot vector (``assign_periods``; the slot count: not replicated)
    periods: dict[str, int] = field(default_factory=dict)

    def extent(self) -> int:
        """Slots the plan needs: one past the highest slot any value uses."""
        return max(int(m.max()) + 1 for m in self.slot_maps.values() if m.size)

    def describe(self, value: str) -> str:
        grid = self.grids.get(value)
        if grid is not None:
            return grid.describe()
        slot_map = self.slot_maps[value]
        compact = np.array_equal(slot_map, np.arange(slot_map.size))
        return f"{slot_map.size} values " + ("compact" if compact else "scattered")

    def describe_replication(self, value: str, slots: int) -> str:
        period = self.periods.get(value, slots)
        return "" if period >= slots else f", {slots // period} copies (period {period})"


def image_shape(shape: list[int]) -> tuple[int, int, int] | None:
    if len(shape) == 4 and shape[0] == 1:
        return int(shape[1]), int(shape[2]), int(shape[3])
    return None


def _compact(size: int) -> np.ndarray:
    return np.arange(size, dtype=np.int64)


def _conv_output_grid(grid: Grid, step, out_shape: tuple[int, int, int]) -> Grid | None:
    strides = [int(s) for s in step.attrs.get("strides", [1, 1])]
    dilations = [int(d) for d in step.attrs.get("dilations", [1, 1])]
    if len(strides) != 2 or strides[0] != strides[1] or any(d != 1 for d in dilations):
        return None
    channels, height, width = out_shape
    gap = grid.gap * strides[0]
    if height * gap > grid.grid_height or width * gap > grid.grid_width:
        return None
    return Grid(channels, height, width, gap, grid.grid_height, grid.grid_width)


def assign_packing(plan: Plan, encrypted: set[str] | None = None) -> Packing:
    """Slot maps for every value computed by the plan's steps (see the module docstring)."""
    packing = Packing()
    for spec in plan.inputs:
        image = image_shape(spec.shape)
        grid = Grid(*image, 1, image[1], image[2]) if image else None
        packing.grids[spec.name] = grid
        packing.slot_maps[spec.name] = (grid.slot_map() if grid
                                        else _compact(int(np.prod(spec.shape))))
    for step in plan.steps:
        out = step.outputs[0]
        out_shape = list(plan.values[out].shape)
        size = int(np.prod(out_shape))
        source = step.inputs[0] if step.inputs else None
        grid_in = packing.grids.get(source)
        grid: Grid | None = None
        slot_map: np.ndarray | None = None
        if step.op in ELEMENTWISE_OPS and source in packing.slot_maps:
            encrypted_inputs = [v for v in step.inputs if v in packing.slot_maps]
            maps = [packing.slot_maps[v] for v in encrypted_inputs]
            if any(not np.array_equal(m, maps[0]) for m in maps[1:]):
                raise UnsupportedOpError(
                    f"step {step.name!r} ({step.op}) adds tensors packed differently "
                    f"({'; '.join(packing.describe(v) for v in encrypted_inputs)}); "
                    "re-packing one operand is not implemented")
            if maps[0].size == size:
                grid, slot_map = grid_in, maps[0]
        elif step.op == "Reshape" and source in packing.slot_maps:
            slot_map = packing.slot_maps[source]
            image = image_shape(out_shape)
            if grid_in is not None and image == (grid_in.channels, grid_in.height,
                                                  grid_in.width):
                grid = grid_in
        elif step.op == "Conv" and grid_in is not None and image_shape(out_shape):
            grid = _conv_output_grid(grid_in, step, image_shape(out_shape))
        elif step.op == "GlobalAveragePool" and grid_in is not None:
            grid = Grid(grid_in.channels, 1, 1, grid_in.gap, grid_in.grid_height,
                        grid_in.grid_width)
        if slot_map is None:
            slot_map = grid.slot_map() if grid is not None else _compact(size)
        packing.grids[out] = grid
        packing.slot_maps[out] = slot_map
    return packing


def span_period(slot_map: np.ndarray) -> int:
    """The power of two a slot map fits in."""
    extent = int(slot_map.max()) + 1 if slot_map.size else 1
    return 1 << max(0, (extent - 1).bit_length())


def assign_periods(plan: Plan, packing: Packing, slots: int,
                   linear_ops: frozenset[str]) -> None:
    """Fill ``packing.periods`` (see the module docstring): inputs and linear outputs are
    replicated at the power of two their map spans (outputs only while that is at least half
    their input's period), elementwise outputs inherit the largest period of their inputs."""
    for spec in plan.inputs:
        packing.periods[spec.name] = min(slots, span_period(packing.slot_maps[spec.name]))
    for step in plan.steps:
        out = step.outputs[0]
        inputs = [packing.periods[v] for v in step.inputs if v in packing.periods]
        if step.op in linear_ops and inputs:
            period = min(slots, span_period(packing.slot_maps[out]))
            packing.periods[out] = period if 2 * period >= inputs[0] else slots
        else:
            packing.periods[out] = max(inputs, default=slots)
