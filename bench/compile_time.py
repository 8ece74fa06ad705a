"""Compile time of the post-training FHE path on ResNet-20-sized models, phase by phase.

For each model: ``picompile.compile(MODEL, calib=256 images, accuracy_budget=1)`` (the degree
search over polynomial and composite forms, levels with bootstrap placement, layout, cost),
printing the wall time, each pass's seconds, the closed-loop rounds, the forms chosen, the
calibration accuracy against the exact model and the machine's load average (the bound is for
a machine otherwise idle). With ``--full-test`` the plan's top-1 accuracy on the whole test
split (plain backend, tensor level) is printed next to the exact model's.

Run: .venv/bin/python bench/compile_time.py [--models resnet20_fashion resnet20_digits]
     [--calib-count 256] [--full-test]
"""

from __future__ import annotations

import argparse
import os
import time
from collections import Counter

from common import EXAMPLES, calibration_set, peak_rss_gib, split, test_accuracy

import picompile


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["resnet20_fashion", "resnet20_digits"])
    parser.add_argument("--calib-count", type=int, default=256)
    parser.add_argument("--accuracy-budget", type=float, default=1.0)
    parser.add_argument("--full-test", action="store_true")
    args = parser.parse_args()
    print(f"command: .venv/bin/python bench/compile_time.py --models {' '.join(args.models)} "
          f"--calib-count {args.calib_count}" + (" --full-test" if args.full_test else ""))
    for model in args.models:
        data = split(model, full_test=args.full_test)
        calib = {k: v[:args.calib_count] for k, v in calibration_set(data, model).items()}
        load = os.getloadavg()[0]
        start = time.perf_counter()
        plan = picompile.compile(EXAMPLES / f"{model}.onnx", calib=calib,
                                 accuracy_budget=args.accuracy_budget)
        seconds = time.perf_counter() - start
        phases = ", ".join(f"{r['name']} {r['seconds']:.1f}" for r in plan.passes)
        degrees = plan.analysis["degrees"]
        forms = Counter(degrees["iterations"][-1]["forms"]) if degrees["iterations"] else {}
        chosen = Counter(s.meta["approximation"]["degree"] for s in plan.steps
                         if s.meta.get("approximation") and not s.meta["approximation"]
                         .get("kept_exact"))
        print(f"{model}: compiled in {seconds:.1f} s (load average {load:.2f} at start; "
              f"peak RSS {peak_rss_gib():.2f} GB)")
        print(f"  phases (s): {phases}")
        print(f"  degree search: {len(degrees['iterations'])} closed-loop rounds, calibration "
              f"accuracy {degrees['achieved_accuracy']:.2f} vs exact {degrees['base_accuracy']:.2f}"
              f", forms chosen {dict(chosen)} (last round {dict(forms)})")
        cost = plan.analysis.get("cost", {})
        if cost:
            print(f"  predicted {cost['predicted_seconds']:.0f} s per encrypted inference, "
                  f"{cost['bootstraps']} bootstraps")
        if args.full_test:
            exact = picompile.compile(EXAMPLES / f"{model}.onnx")
            print(f"  test accuracy ({len(data['test_labels'])} images): plan "
                  f"{test_accuracy(plan, data, model):.2f}, exact "
                  f"{test_accuracy(exact, data, model):.2f}")


if __name__ == "__main__":
    main()
