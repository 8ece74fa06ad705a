"""OLA layerwise degrees vs uniform degrees: accuracy and estimated cost.

For each model: compile the layerwise plan (``--accuracy-budget 1``) and uniform-degree plans,
measure held-out test accuracy with the plain backend (which evaluates the polynomials), and
compare the layerwise plan's estimated activation cost with the cheapest uniform plan that
reaches at least the same test accuracy.

Run: .venv/bin/python bench/layerwise_vs_uniform.py [--models resnet20_digits cnn_digits]
"""

from __future__ import annotations

import argparse
import time
import warnings

from common import activation_cost, calibration_set, split, test_accuracy

import picompile

UNIFORM_DEGREES = (2, 3, 5, 7, 9, 13, 19, 27)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["resnet20_digits", "cnn_digits"])
    parser.add_argument("--budget", type=float, default=1.0)
    parser.add_argument("--baseline-methods", nargs="+", default=["wls"],
                        help="methods of the uniform-degree baselines (e.g. wls minimax)")
    args = parser.parse_args()
    warnings.simplefilter("ignore", RuntimeWarning)  # overflowing low-degree plans
    print(f"command: .venv/bin/python bench/layerwise_vs_uniform.py --models "
          f"{' '.join(args.models)} --budget {args.budget} --baseline-methods "
          f"{' '.join(args.baseline_methods)}")
    for model in args.models:
        path = f"examples/{model}.onnx"
        data = split(model)
        calib = calibration_set(data, model)
        exact = test_accuracy(picompile.compile(path), data, model)
        start = time.perf_counter()
        layerwise = picompile.compile(path, calib=calib, accuracy_budget=args.budget)
        compile_seconds = time.perf_counter() - start
        layer_acc = test_accuracy(layerwise, data, model)
        layer_cost = activation_cost(layerwise)
        degrees = [s.attrs["degree"] for s in layerwise.steps if s.op == "Polynomial"]
        print(f"\n{model}: exact test accuracy {exact:.2f}")
        print(f"  layerwise (budget {args.budget} pt): test accuracy {layer_acc:.2f}, estimated "
              f"activation cost {layer_cost:.1f} s, compile {compile_seconds:.1f} s")
        print(f"    degrees {degrees}")
        for method in args.baseline_methods:
            cheapest = None
            for degree in UNIFORM_DEGREES:
                uniform = picompile.compile(path, calib=calib, degree=degree, method=method)
                acc, cost = test_accuracy(uniform, data, model), activation_cost(uniform)
                print(f"  uniform {method} degree {degree:2d}: test accuracy {acc:6.2f}, "
                      f"estimated activation cost {cost:7.1f} s")
                if acc >= layer_acc and (cheapest is None or cost < cheapest[1]):
                    cheapest = (degree, cost, acc)
            if cheapest is None:
                print(f"  no uniform {method} degree reaches the layerwise plan's accuracy")
            else:
                print(f"  cheapest uniform {method} plan with accuracy >= {layer_acc:.2f}: degree "
                      f"{cheapest[0]} ({cheapest[2]:.2f}), cost {cheapest[1]:.1f} s; ratio "
                      f"uniform/layerwise = {cheapest[1] / layer_cost:.2f}x")

if __name__ == "__main__":
    main()
