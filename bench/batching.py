"""Throughput of small models: several client inputs in one CKKS ciphertext (``--batch``).

Compiles the model twice (one input per ciphertext, and ``--batch 0``: as many as fit), generates
keys once per plan, encrypts ``--count`` test digits, and prints the server's evaluation time per
ciphertext and amortised per input, the ratio, agreement of the batched outputs with the
one-per-ciphertext run, and peak RSS.

Run: .venv/bin/python bench/batching.py [--model cnn_digits] [--count 32] [--degree 3]
     [--insecure-test-params]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from common import EXAMPLES, calibration_set, model_input, peak_rss_gib, split

import picompile
from picompile.runtime.ckks import CkksClient, CkksServer
from picompile.runtime.slot_program import inputs_per_ciphertext


def measure(plan, x: np.ndarray) -> tuple[np.ndarray, float, int]:
    """(outputs, server seconds in all, ciphertexts) for every sample of ``x``."""
    client = CkksClient(plan)
    server = CkksServer(plan, client.public_material())
    name, output = plan.inputs[0].name, plan.outputs[0].name
    per = inputs_per_ciphertext(plan)
    server.evaluate({name: client.encrypt_samples(x[:1], name)})  # warm-up: encoding caches
    rows, seconds, ciphertexts = [], 0.0, 0
    for start in range(0, len(x), per):
        chunk = x[start:start + per]
        encrypted = {name: client.encrypt_samples(chunk, name)}
        begin = time.perf_counter()
        outputs, _ = server.evaluate(encrypted)
        seconds += time.perf_counter() - begin
        ciphertexts += 1
        rows.append(client.decrypt_samples(outputs[output], output, len(chunk)))
    return np.concatenate(rows), seconds, ciphertexts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="cnn_digits")
    parser.add_argument("--count", type=int, default=32)
    parser.add_argument("--degree", type=int, default=3)
    parser.add_argument("--insecure-test-params", action="store_true")
    args = parser.parse_args()
    print(f"command: .venv/bin/python bench/batching.py --model {args.model} --count "
          f"{args.count} --degree {args.degree}"
          + (" --insecure-test-params" if args.insecure_test_params else ""))
    data = split(args.model)
    calib = calibration_set(data, args.model)
    x = model_input(args.model, data["test_images"][:args.count])
    source = EXAMPLES / f"{args.model}.onnx"
    common = {"calib": calib, "degree": args.degree,
              "insecure_test_params": args.insecure_test_params}
    single = picompile.compile(source, **common)
    batched = picompile.compile(source, batch=0, **common)
    one, one_seconds, one_count = measure(single, x)
    many, many_seconds, many_count = measure(batched, x)
    per_one, per_many = one_seconds / len(x), many_seconds / len(x)
    layout = batched.layout
    print(f"{args.model}: ring 2^{int(np.log2(2 * layout.slots))}, {layout.slots} slots, "
          f"{layout.batch} inputs per ciphertext ({layout.block} slots each)")
    print(f"one input per ciphertext: {one_count} ciphertexts, {one_seconds / one_count:.3f} s "
          f"each, {per_one:.3f} s per input, {single.layout.rotations_per_inference} rotations")
    print(f"batched: {many_count} ciphertexts, {many_seconds / many_count:.3f} s each, "
          f"{per_many:.3f} s per input, {layout.rotations_per_inference} rotations")
    print(f"amortised speed-up per input: {per_one / per_many:.1f}x; max |batched - single| "
          f"{np.max(np.abs(many - one)):.2e}; top-1 agree "
          f"{np.mean(np.argmax(many, 1) == np.argmax(one, 1)):.3f}; "
          f"peak RSS {peak_rss_gib():.2f} GB")


if __name__ == "__main__":
    main()
