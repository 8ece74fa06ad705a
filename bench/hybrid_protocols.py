"""Hybrid (HE + MPC) plans compared in one run: all-ReLU, AESPA, Flash-form quadratic, budget.

For one example model, compiles four hybrid plans from the same calibration set:

* ``all-relu``  — every ReLU exact (comparison circuit on shares);
* ``aespa``     — AESPA: per-channel Hermite degree-2 polynomials (Beaver square on shares);
* ``flash``     — Flash: per-channel a·x²+b·x+c fitted by least squares (``--method quad``),
  evaluated by Flash's no-offline protocol (HE, fused with the next linear layer, no dealer);
* ``quad-beaver`` — the same polynomials evaluated with a Beaver square (dealer);
* ``budget``    — AutoReP selection: the ``--relu-budget`` fraction of ReLUs kept exact,
  Hermite degree 2 elsewhere.

Each plan's test accuracy (plain backend, held-out split) and a hybrid run (client, server and
dealer in one process, bytes through in-memory channels) on ``--count`` test images: online and
offline bytes and time per inference, flights, key bytes, and the ratios to all-ReLU. Prints
the exact command; peak RSS is the process's.

    .venv/bin/python bench/hybrid_protocols.py --model cnn_digits --count 5
    .venv/bin/python bench/hybrid_protocols.py --model resnet20_fashion_quad2 --count 5 \
        --plans flash quad-beaver

Ratios are to the first plan listed.
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np
from common import ROOT, calibration_set, model_input, peak_rss_gib, split, test_accuracy

import picompile
from picompile.runtime import run_plan

PLANS = {
    "all-relu": {},
    "aespa": {"method": "hermite", "degree": 2},
    "flash": {"method": "quad", "degree": 2, "quadratic_protocol": "flash"},
    "quad-beaver": {"method": "quad", "degree": 2},
    "budget": {"method": "hermite", "degree": 2, "relu_budget": None},
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="cnn_digits",
                        choices=["cnn_digits", "maxpool_digits", "resnet20_fashion_quad2"])
    parser.add_argument("--plans", nargs="+", default=list(PLANS), choices=list(PLANS),
                        help="which plans (the fine-tuned ResNet-20's quadratics are kept as "
                             "exported: run it with --plans flash quad-beaver)")
    parser.add_argument("--count", type=int, default=5, help="test images run under the protocol")
    parser.add_argument("--relu-budget", type=float, default=0.5)
    args = parser.parse_args()
    print("command:", " ".join([".venv/bin/python"] + sys.argv))
    data = split(args.model)
    calib = calibration_set(data, args.model)
    model = str(ROOT / "examples" / f"{args.model}.onnx")
    x = model_input(args.model, data["test_images"][:args.count])
    rows = {}
    for name in args.plans:
        options = dict(PLANS[name])
        if "relu_budget" in options:
            options["relu_budget"] = args.relu_budget
        start = time.perf_counter()
        plan = picompile.compile(model, protocol="hybrid", calib=calib, **options)
        compile_seconds = time.perf_counter() - start
        accuracy = test_accuracy(plan, data, args.model)
        result = run_plan(plan, x, backend="hybrid")
        plain = run_plan(plan, x, backend="plain")
        output = plan.outputs[0].name
        agree = float(np.mean(result.server_outputs[output].argmax(-1)
                              == plain.server_outputs[output].argmax(-1)))
        kept = sum(1 for s in plan.steps if s.op == "Relu")
        dealer = "yes" if result.communication.get("dealer_bytes") else "no"
        rows[name] = {**result.communication, "dealer": dealer, "accuracy": accuracy,
                      "agree": agree, "compile": compile_seconds, "relus": kept,
                      "error": float(np.max(np.abs(result.server_outputs[output]
                                                   - plain.server_outputs[output])))}
    base = rows[args.plans[0]]
    print(f"\nmodel {args.model}, {args.count} inference(s) per plan, BFV N="
          f"{plan.bfv.ring_dimension} (128-bit), sigma 40")
    header = (f"{'plan':11} {'acc %':>6} {'ReLU layers':>11} {'online KiB':>10} {'flights':>7} "
              f"{'online ms':>9} {'offline MiB':>11} {'offline s':>9} {'keys MiB':>8} "
              f"{'top1=plain':>10} {'max err':>8} {'dealer':>6} {'online bytes ×':>14} "
              f"{'online time ×':>13}")
    print(header)
    for name, row in rows.items():
        print(f"{name:11} {row['accuracy']:6.2f} {row['relus']:11d} "
              f"{row['online_bytes'] / 1024:10.1f} {row['online_flights']:7.1f} "
              f"{row['online_seconds'] * 1e3:9.1f} {row['offline_bytes'] / 2**20:11.1f} "
              f"{row['offline_seconds']:9.2f} {row['setup_key_bytes'] / 2**20:8.0f} "
              f"{row['agree']:10.2f} {row['error']:8.1e} {row['dealer']:>6} "
              f"{base['online_bytes'] / row['online_bytes']:14.1f} "
              f"{base['online_seconds'] / row['online_seconds']:13.1f}")
    print(f"peak RSS {peak_rss_gib():.2f} GiB")


if __name__ == "__main__":
    main()
