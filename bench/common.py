"""Shared helpers of the benchmarks: the digits split, calibration sets, test accuracy."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"
sys.path.insert(0, str(EXAMPLES))

import digits  # noqa: E402
import picompile  # noqa: E402

INPUT_KINDS = {"mlp_digits": "flat64", "cnn_digits": "img8", "maxpool_digits": "img8",
               "resnet20_digits": "img32x3"}


def split() -> dict[str, np.ndarray]:
    return digits.load_split()


def calibration_set(data: dict[str, np.ndarray], model: str) -> dict[str, np.ndarray]:
    return {"input": digits.to_model_input(data["calib_images"], INPUT_KINDS[model]),
            "labels": data["calib_labels"]}


def test_accuracy(plan, data: dict[str, np.ndarray], model: str) -> float:
    """Top-1 test accuracy in points of a plan (plain backend) on the held-out split."""
    x = digits.to_model_input(data["test_images"], INPUT_KINDS[model])
    # tensor level: the slot-level program of an FHE plan computes the same values (tested),
    # 50x slower on 360 images
    logits = next(iter(picompile.run(plan, x, slot_level=False).values()))
    return 100.0 * float(np.mean(np.argmax(logits, axis=1) == data["test_labels"]))


def activation_cost(plan) -> float:
    return float(sum(s.meta.get("approximation", {}).get("estimated_seconds") or 0.0
                     for s in plan.steps))
