"""The plain backend against onnxruntime on the ONNX wheel's light model zoo (ImageNet-size).

Compiles each ``light_*.onnx`` (no calibration: exact activations), then times the plain
backend and onnxruntime on the same seeded random input in the same run (median of
``--repeats``), and prints the ratio and the process's peak RSS after each model. (Agreement
with onnxruntime is tests/test_model_zoo.py's job: these light models' weights are constants, so
their softmax outputs are nearly uniform and say little; the test compares the logits.)
onnxruntime's session is built once (not timed).

Run: .venv/bin/python bench/plain_vs_onnxruntime.py [--models resnet50 vgg19] [--repeats 5]
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np
import onnx.backend.test
import onnxruntime
from common import peak_rss_gib

import picompile
from picompile.runtime import run_plan
from picompile.runtime.cost_measurement import median_seconds

ZOO = Path(os.path.dirname(onnx.backend.test.__file__)) / "data" / "light"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["resnet50"],
                        help="zoo names without light_ (default: resnet50)")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    print(f"command: .venv/bin/python bench/plain_vs_onnxruntime.py --models "
          f"{' '.join(args.models)} --repeats {args.repeats}")
    print(f"{'model':14} {'compile s':>9} {'plain s':>8} {'ort s':>7} {'ratio':>6} "
          f"{'peak RSS GiB':>12}")
    for name in args.models:
        path = ZOO / f"light_{name}.onnx"
        if not path.exists():
            choices = sorted(p.stem.removeprefix("light_") for p in ZOO.glob("light_*.onnx"))
            parser.error(f"no light_{name}.onnx in the zoo: choose from {', '.join(choices)}")
        start = time.perf_counter()
        plan = picompile.compile(path)
        compiled = time.perf_counter() - start
        x = np.random.default_rng(0).normal(size=plan.inputs[0].shape).astype(np.float32)
        session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        feed = {session.get_inputs()[0].name: x}
        plain = median_seconds(lambda plan=plan, x=x: run_plan(plan, x), args.repeats)
        ort = median_seconds(lambda session=session, feed=feed: session.run(None, feed),
                             args.repeats)
        print(f"{name:14} {compiled:9.2f} {plain:8.3f} {ort:7.3f} {plain / ort:6.2f} "
              f"{peak_rss_gib():12.2f}", flush=True)


if __name__ == "__main__":
    main()
