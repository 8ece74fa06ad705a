"""The plain backend against onnxruntime on the ONNX wheel's light model zoo (ImageNet-size).

Compiles each ``light_*.onnx`` (no calibration: exact activations), then times the plain
backend (float64, the reference, and float32, onnxruntime's precision) and onnxruntime on the
same seeded random input in the same run (median of ``--repeats``, the three interleaved), and
prints the ratios and the process's peak RSS after each model. (Agreement
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
    print(f"{'model':14} {'compile s':>9} {'f64 s':>7} {'f32 s':>7} {'ort s':>7} "
          f"{'f64/ort':>7} {'f32/ort':>7} {'peak RSS GiB':>12}")
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
        run_plan(plan, x), session.run(None, feed)  # warm-up (allocations, thread pools)
        times: dict[str, list[float]] = {"float64": [], "float32": [], "ort": []}
        for _ in range(args.repeats):  # interleaved: the machine's load hits all three alike
            for precision in ("float64", "float32"):
                times[precision].append(median_seconds(
                    lambda plan=plan, x=x, p=precision: run_plan(plan, x, precision=p), 1))
            times["ort"].append(median_seconds(
                lambda session=session, feed=feed: session.run(None, feed), 1))
        f64, f32, ort = (float(np.median(times[k])) for k in ("float64", "float32", "ort"))
        print(f"{name:14} {compiled:9.2f} {f64:7.3f} {f32:7.3f} {ort:7.3f} {f64 / ort:7.2f} "
              f"{f32 / ort:7.2f} {peak_rss_gib():12.2f}", flush=True)


if __name__ == "__main__":
    main()
