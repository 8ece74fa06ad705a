"""AutoReP-style ReLU selection: accuracy vs ReLU budget for hybrid plans.

Compiles hybrid plans where the non-kept activations are per-channel quadratics (Flash-style
``quad``) and prints held-out test accuracy (plain backend) per ReLU budget.

Run: .venv/bin/python bench/relu_budget_curve.py [--models cnn_digits resnet20_digits]
     [--full-test]   (Fashion-MNIST models: all 10,000 test images instead of the subset)
"""

from __future__ import annotations

import argparse
import warnings

from common import calibration_set, split, test_accuracy

import picompile

#: Fractions of all ReLUs (a budget >= 1 would be a count of ReLUs).
BUDGETS = (0.0, 0.02, 0.05, 0.1, 0.25, 0.5, 0.75, 0.999)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["cnn_digits", "resnet20_digits"])
    parser.add_argument("--method", default="quad")
    parser.add_argument("--full-test", action="store_true",
                        help="Fashion-MNIST: the full 10,000-image test split")
    args = parser.parse_args()
    warnings.simplefilter("ignore", RuntimeWarning)
    print(f"command: .venv/bin/python bench/relu_budget_curve.py --models {' '.join(args.models)}"
          f" --method {args.method}" + (" --full-test" if args.full_test else ""))
    for model in args.models:
        path = f"examples/{model}.onnx"
        data = split(model, args.full_test)
        calib = calibration_set(data, model)
        print(f"\n{model} (method {args.method}, degree 2; exact test accuracy "
              f"{test_accuracy(picompile.compile(path), data, model):.2f})")
        print(f"  {'budget':>8} {'ReLUs kept':>12} {'of':>8} {'layers kept':>11} {'test acc':>9}")
        for budget in BUDGETS:
            try:
                plan = picompile.compile(path, calib=calib, protocol="hybrid",
                                         relu_budget=budget, method=args.method, degree=2)
            except picompile.PicompileError as error:  # e.g. the polynomials diverge
                print(f"  {budget:8.2f} refused: {error}", flush=True)
                continue
            select = plan.analysis["select"]
            assert select["relus_kept"] <= (budget * select["relus_total"] if budget < 1
                                            else budget)
            print(f"  {budget:8.2f} {select['relus_kept']:12d} {select['relus_total']:8d} "
                  f"{len(select['layers_kept']):11d} {test_accuracy(plan, data, model):9.2f}",
                  flush=True)


if __name__ == "__main__":
    main()
