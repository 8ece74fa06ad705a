"""OLA layerwise degrees vs uniform degrees: accuracy and estimated cost.

For each model: compile the layerwise plan (``--accuracy-budget 1``) and uniform-degree plans,
measure held-out test accuracy with the plain backend (which evaluates the polynomials), and
compare the layerwise plan's estimated activation cost with the cheapest uniform plan within
``--budget`` points of the original model (the issue's criterion) and with the cheapest uniform
plan at least as accurate as the layerwise one.

Run: .venv/bin/python bench/layerwise_vs_uniform.py [--models resnet20_digits cnn_digits]
     [--full-test]   (Fashion-MNIST models: all 10,000 test images instead of the subset)
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
    parser.add_argument("--full-test", action="store_true",
                        help="Fashion-MNIST: the full 10,000-image test split")
    parser.add_argument("--degrees", nargs="+", type=int, default=list(UNIFORM_DEGREES))
    args = parser.parse_args()
    warnings.simplefilter("ignore", RuntimeWarning)  # overflowing low-degree plans
    print(f"command: .venv/bin/python bench/layerwise_vs_uniform.py --models "
          f"{' '.join(args.models)} --budget {args.budget} --baseline-methods "
          f"{' '.join(args.baseline_methods)} --degrees {' '.join(map(str, args.degrees))}"
          + (" --full-test" if args.full_test else ""))
    for model in args.models:
        path = f"examples/{model}.onnx"
        data = split(model, args.full_test)
        calib = calibration_set(data, model)
        exact = test_accuracy(picompile.compile(path), data, model)
        start = time.perf_counter()
        layerwise = picompile.compile(path, calib=calib, accuracy_budget=args.budget)
        compile_seconds = time.perf_counter() - start
        layer_acc = test_accuracy(layerwise, data, model)
        layer_cost = activation_cost(layerwise)
        degrees = [s.attrs["degree"] for s in layerwise.steps if s.op == "Polynomial"]
        print(f"\n{model}: exact test accuracy {exact:.2f} on {len(data['test_labels'])} images")
        print(f"  layerwise (budget {args.budget} pt): test accuracy {layer_acc:.2f}, estimated "
              f"activation cost {layer_cost:.1f} s, compile {compile_seconds:.1f} s")
        print(f"    degrees {degrees}")
        for method in args.baseline_methods:
            results = []
            for degree in args.degrees:
                uniform = picompile.compile(path, calib=calib, degree=degree, method=method)
                acc, cost = test_accuracy(uniform, data, model), activation_cost(uniform)
                results.append((degree, acc, cost))
                print(f"  uniform {method} degree {degree:2d}: test accuracy {acc:6.2f}, "
                      f"estimated activation cost {cost:7.1f} s", flush=True)
            floors = ((f"within {args.budget:g} pt of the original", exact - args.budget),
                      (f"at least the layerwise accuracy {layer_acc:.2f}", layer_acc))
            for label, floor in floors:
                passing = [r for r in results if r[1] >= floor]
                if not passing:
                    print(f"  no uniform {method} degree is {label}")
                    continue
                degree, acc, cost = min(passing, key=lambda r: r[2])
                print(f"  cheapest uniform {method} plan {label}: degree {degree} ({acc:.2f}), "
                      f"cost {cost:.1f} s; ratio uniform/layerwise = {cost / layer_cost:.2f}x")

if __name__ == "__main__":
    main()
