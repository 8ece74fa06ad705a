"""Calibration data: load it and check it against the model's inputs.

Reads: ``--calib`` data — a ``.npy`` array of inputs (samples on axis 0), a ``.npz`` with one
array per model input (by input name, or a single array under any name) and optionally
``labels``, or the same as in-memory arrays / dict.
Writes: a :class:`CalibrationSet` (inputs by name with a leading sample axis, labels or None).
Missing, unreadable or mis-shaped data is a :class:`~picompile.errors.CalibrationError`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from picompile.errors import CalibrationError
from picompile.numpy_files import read_numpy_file

LABEL_KEYS = ("labels", "label", "y", "targets")


@dataclass
class CalibrationSet:
    inputs: dict[str, np.ndarray]
    labels: np.ndarray | None

    @property
    def size(self) -> int:
        return next(iter(self.inputs.values())).shape[0]

    def subset(self, count: int) -> CalibrationSet:
        labels = None if self.labels is None else self.labels[:count]
        return CalibrationSet({k: v[:count] for k, v in self.inputs.items()}, labels)


def _read(source: Any) -> dict[str, np.ndarray]:
    if isinstance(source, dict):
        return {k: np.asarray(v) for k, v in source.items()}
    if isinstance(source, np.ndarray):
        return {"": source}
    loaded = read_numpy_file(source, CalibrationError, "calibration data")
    return loaded if isinstance(loaded, dict) else {"": loaded}


def load_calibration(source: Any, input_shapes: dict[str, tuple[int, ...]]) -> CalibrationSet:
    """Match calibration arrays to the model inputs (shapes given with batch axis 1)."""
    arrays = _read(source)
    labels = next((np.asarray(arrays.pop(k)) for k in LABEL_KEYS if k in arrays), None)
    if not arrays:
        raise CalibrationError("calibration data holds no input arrays")
    if len(input_shapes) == 1 and len(arrays) == 1:
        arrays = {next(iter(input_shapes)): next(iter(arrays.values()))}
    missing = set(input_shapes) - set(arrays)
    if missing:
        raise CalibrationError(f"calibration data lacks input(s) {sorted(missing)}; it has "
                               f"{sorted(arrays)}")
    inputs = {}
    for name, shape in input_shapes.items():
        array = arrays[name]
        if not np.issubdtype(array.dtype, np.number):
            raise CalibrationError(f"calibration input {name!r} is not numeric")
        if array.ndim == len(shape) - 1 and shape[0] == 1:
            array = array[None]
        if array.ndim != len(shape) or tuple(array.shape[1:]) != tuple(shape[1:]):
            raise CalibrationError(
                f"calibration input {name!r} has shape {array.shape}; expected "
                f"(samples, {', '.join(str(d) for d in shape[1:])})"
            )
        if array.shape[0] < 1 or not np.all(np.isfinite(array)):
            raise CalibrationError(f"calibration input {name!r} is empty or not finite")
        inputs[name] = array.astype(np.float32)
    sizes = {a.shape[0] for a in inputs.values()}
    if len(sizes) != 1:
        raise CalibrationError(f"calibration inputs have different sample counts {sizes}")
    if labels is not None and labels.shape[:1] != (sizes.pop(),):
        raise CalibrationError(f"calibration labels have shape {labels.shape}; expected one per "
                               "sample")
    return CalibrationSet(inputs, None if labels is None else labels.astype(np.int64))
