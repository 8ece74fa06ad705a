"""Training data of ``picompile finetune``: load, check, split.

Reads: ``--data`` — a ``.npz`` with the model's input (by input name, or one array under any
name such as ``input``) and ``labels`` (the format ``--calib`` reads), or the same as in-memory
arrays; the model's input shape and its number of classes.
Writes: :class:`TrainingData` (float32 inputs, int64 labels) and its seeded train/held-out split.
Missing labels, a wrong shape, an empty or unreadable file, labels outside the model's classes
are one-line :class:`~picompile.errors.CalibrationError` s.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from picompile.calibration_data import load_calibration
from picompile.errors import CalibrationError

#: Fraction of the data held out for the accuracy shown while training (at least one batch of
#: :data:`MIN_HELD_OUT` samples when there are enough).
HELD_OUT_FRACTION = 0.1
MIN_HELD_OUT = 32


@dataclass
class TrainingData:
    """Inputs (samples on axis 0) and one integer label per sample."""

    inputs: np.ndarray
    labels: np.ndarray

    @property
    def size(self) -> int:
        return int(self.inputs.shape[0])

    def take(self, index: np.ndarray) -> TrainingData:
        return TrainingData(self.inputs[index], self.labels[index])

    def split(self, seed: int, fraction: float = HELD_OUT_FRACTION
              ) -> tuple[TrainingData, TrainingData]:
        """(train, held out): a seeded permutation; the held-out part is ``fraction`` of the
        samples (at least :data:`MIN_HELD_OUT` while half the data remains for training)."""
        order = np.random.default_rng(seed).permutation(self.size)
        count = max(int(round(fraction * self.size)), min(MIN_HELD_OUT, self.size // 2))
        count = min(max(count, 1), self.size - 1)
        return self.take(order[count:]), self.take(order[:count])


def load_training_data(source: Any, input_shapes: dict[str, tuple[int, ...]], classes: int
                       ) -> TrainingData:
    """Read ``source`` for a model with one input of ``input_shapes`` and ``classes`` logits."""
    if len(input_shapes) != 1:
        raise CalibrationError(f"fine-tuning needs a model with one input, this one has "
                               f"{len(input_shapes)}")
    data = load_calibration(source, input_shapes)
    inputs = next(iter(data.inputs.values()))
    if data.labels is None:
        raise CalibrationError("training data has no labels: add an integer array 'labels' "
                               "(one per sample) next to 'input'")
    labels = np.asarray(data.labels)
    if labels.ndim != 1:
        raise CalibrationError(f"training labels have shape {labels.shape}; expected "
                               f"({inputs.shape[0]},) class indices")
    if inputs.shape[0] < 2:
        raise CalibrationError("training data needs at least 2 samples (one is held out)")
    if labels.min() < 0 or labels.max() >= classes:
        raise CalibrationError(f"training labels must be class indices in 0..{classes - 1}; "
                               f"found {int(labels.min())}..{int(labels.max())}")
    return TrainingData(inputs.astype(np.float32), labels.astype(np.int64))
