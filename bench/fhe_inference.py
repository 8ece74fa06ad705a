"""Encrypted (CKKS, FHE-only) inference of the small example models: latency, memory, keys.

For each model: compile a uniform-degree plan, generate keys once, run encrypted inference on
test digits, and print per-inference latency (server evaluation), key generation time, public
key material size, rotation keys, multiplicative depth, ring dimension, peak RSS, agreement of
top-1 with onnxruntime and the max difference to the slot-level plain model.

Run: .venv/bin/python bench/fhe_inference.py [--models mlp_digits cnn_digits] [--count 5]
     [--insecure-test-params]
"""

from __future__ import annotations

import argparse
import resource
import time
from collections import Counter

import numpy as np
from common import EXAMPLES, INPUT_KINDS, calibration_set, digits, split

import picompile
from picompile.reference import reference_outputs
from picompile.runtime import run_plan
from picompile.runtime.ckks import CkksClient, CkksServer


def peak_rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["mlp_digits", "cnn_digits"])
    parser.add_argument("--count", type=int, default=5)
    parser.add_argument("--degree", type=int, default=3)
    parser.add_argument("--insecure-test-params", action="store_true")
    args = parser.parse_args()
    data = split()
    print("command: .venv/bin/python bench/fhe_inference.py --models "
          f"{' '.join(args.models)} --count {args.count} --degree {args.degree}"
          f"{' --insecure-test-params' if args.insecure_test_params else ''}")
    for model in args.models:
        plan = picompile.compile(EXAMPLES / f"{model}.onnx", calib=calibration_set(data, model),
                                 degree=args.degree,
                                 insecure_test_params=args.insecure_test_params)
        ckks = plan.security["ckks"]
        start = time.perf_counter()
        client = CkksClient(plan)
        material = client.public_material()
        server = CkksServer(plan, material)
        setup = time.perf_counter() - start
        x = digits.to_model_input(data["test_images"][:args.count], INPUT_KINDS[model])
        expected = reference_outputs(EXAMPLES / f"{model}.onnx", {"input": x})
        plain = run_plan(plan, x).server_outputs[plan.outputs[0].name]
        latencies, agree, worst, native = [], 0, 0.0, []
        per_op: Counter = Counter()
        for index in range(args.count):
            ciphertext = client.encrypt(x[index])
            start = time.perf_counter()
            outputs, timings = server.evaluate({"input": ciphertext})
            latencies.append(time.perf_counter() - start)
            native.append(server.last_native_seconds)
            for timing in timings:
                per_op[timing.op] += timing.seconds
            size = int(np.prod(plan.outputs[0].shape))
            result = client.decrypt(outputs[plan.outputs[0].name], size)
            worst = max(worst, float(np.max(np.abs(result - plain[index].reshape(-1)))))
            reference = (expected["output_label"][index] if "output_label" in expected
                         else int(np.argmax(expected["logits"][index])))
            agree += int(np.argmax(result) == reference)
        layout = [s.meta["layout"] for s in plan.steps if "layout" in s.meta]
        print(f"\n{model}: ring dimension 2^{ckks['ring_dimension'].bit_length() - 1}, depth "
              f"{ckks['multiplicative_depth']}, {ckks['security']}")
        print(f"  rotation keys {len(plan.security['rotation_keys'])}, rotations per inference "
              f"{sum(item['rotations'] for item in layout)}, diagonals "
              f"{sum(item['diagonal_count'] for item in layout)}")
        print(f"  key generation + server set-up {setup:.1f} s, public material "
              f"{material.size / 2**20:.0f} MiB")
        steady = latencies[1:] or latencies
        overhead = 1 - np.median(native[1:] or native) / np.median(steady)
        predicted = plan.analysis.get("cost", {}).get("predicted_seconds", float("nan"))
        print(f"  latency per inference: first {latencies[0]:.2f} s (encodes diagonals), then "
              f"median {np.median(steady):.2f} s; predicted {predicted:.2f} s "
              f"(measured/predicted {np.median(steady) / predicted:.2f}); Python overhead "
              f"{100 * overhead:.1f} %")
        print("  server time by op (all runs): "
              + ", ".join(f"{op} {seconds:.1f} s" for op, seconds in per_op.most_common()))
        print(f"  top-1 agreement with onnxruntime {agree}/{args.count}, max |encrypted - plain| "
              f"{worst:.2e}, peak RSS {peak_rss_gb():.2f} GB")


if __name__ == "__main__":
    main()
