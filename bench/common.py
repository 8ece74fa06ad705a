"""Shared helpers of the benchmarks: each example model's data (the digits split or the committed
Fashion-MNIST subset), calibration sets, test accuracy."""

from __future__ import annotations

import resource
import subprocess
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"
sys.path.insert(0, str(EXAMPLES))

import digits  # noqa: E402
import fashion  # noqa: E402
import picompile  # noqa: E402
from picompile.listening import wait_for_port  # noqa: E402

#: Example model → (data set, model-input kind).
WORKLOADS = {"mlp_digits": (digits, "flat64"), "cnn_digits": (digits, "img8"),
             "maxpool_digits": (digits, "img8"), "resnet20_digits": (digits, "img32x3"),
             "mlp_fashion": (fashion, "flat784"), "vgg_fashion": (fashion, "img28"),
             "resnet20_fashion": (fashion, "img32x3"),
             "resnet20_fashion_quad2": (fashion, "img32x3")}
INPUT_KINDS = {model: kind for model, (_, kind) in WORKLOADS.items()}


def peak_rss_gib(who: int = resource.RUSAGE_SELF) -> float:
    """Peak resident memory so far (GiB) of this process, or of its waited-for children."""
    return resource.getrusage(who).ru_maxrss / 2**20


def split(model: str = "cnn_digits", full_test: bool = False) -> dict[str, np.ndarray]:
    """The model's test and calibration images and labels: the digits split (360 test, 256
    calibration) or the Fashion-MNIST subset (1,000 test, 512 calibration); ``full_test``
    replaces the subset's test images by all 10,000 (needs ``make fashion-data``)."""
    dataset = WORKLOADS[model][0]
    if dataset is digits:
        return digits.load_split()
    data = fashion.load_subset()
    if full_test:
        data["test_images"], data["test_labels"] = fashion.load("test")
    return data


def model_input(model: str, images: np.ndarray) -> np.ndarray:
    dataset, kind = WORKLOADS[model]
    return dataset.to_model_input(images, kind)


def calibration_set(data: dict[str, np.ndarray], model: str) -> dict[str, np.ndarray]:
    return {"input": model_input(model, data["calib_images"]), "labels": data["calib_labels"]}


def test_accuracy(plan, data: dict[str, np.ndarray], model: str, chunk: int = 1000) -> float:
    """Top-1 test accuracy in points of a plan (plain backend) on the held-out split, run in
    chunks of ``chunk`` images (bounded memory on the 10,000-image split)."""
    x = model_input(model, data["test_images"])
    correct = 0
    for start in range(0, len(x), chunk):
        # tensor level: the slot-level program of an FHE plan computes the same values
        # (tested), 50x slower
        logits = next(iter(picompile.run(plan, x[start:start + chunk], slot_level=False)
                           .values()))
        correct += int(np.sum(np.argmax(logits, axis=1)
                              == data["test_labels"][start:start + chunk]))
    return 100.0 * correct / len(x)


def activation_cost(plan) -> float:
    return float(sum(s.meta.get("approximation", {}).get("estimated_seconds") or 0.0
                     for s in plan.steps))


PICOMPILE = [sys.executable, "-m", "picompile.cli"]


def start_service(args: list[str], log: Path, command: list[str] | None = None
                  ) -> tuple[subprocess.Popen, int]:
    """Start ``picompile ARGS`` (serve or dealer, ``--port 0``) logging to ``log``; the process
    and the port it listens on. ``command``: what runs the CLI (default :data:`PICOMPILE`)."""
    process = subprocess.Popen((command or PICOMPILE) + args, stdout=log.open("w"),
                               stderr=subprocess.STDOUT, cwd=ROOT)
    return process, wait_for_port(process, log, 120.0, args[0], SystemExit, poll=0.2)
