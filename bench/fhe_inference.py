"""Encrypted (CKKS, FHE-only) inference of the example models: latency, memory, keys.

For each model: compile its plan(s), generate keys once, run encrypted inference on test
digits, and print per-inference latency (server evaluation) against the plan's prediction, key
generation time, public key material size, rotation keys, multiplicative depth, ring dimension,
Python overhead, peak RSS, agreement of top-1 with onnxruntime and the plain backend, and the max
difference to the slot-level plain model.

Run: .venv/bin/python bench/fhe_inference.py [--models mlp_digits cnn_digits] [--count 5]
     [--insecure-test-params] [--method quad --degree 2]
     .venv/bin/python bench/fhe_inference.py --models resnet20_digits --count 5
     [--plans layerwise uniform] [--degree 7] [--accuracy-budget 1]
     [--activation-form auto|polynomial|composite] [--calib-count 256]

``resnet20_digits`` / ``resnet20_fashion`` (3x32x32 ResNet-20s, multiplexed packing in 16384
slots) and ``resnet20_img8`` (the digits network and weights on 3x8x8 inputs) need
bootstrapping; they run the layerwise-DP plan (``--accuracy-budget``) and/or the uniform-degree
plan (``--degree``) and print their latency ratio when both run. Bootstrapped runs also print
bootstraps and their time.
``resnet20_fashion_quad2`` (fine-tuned, ``picompile finetune --method quad --degree 2``) runs
its exported quadratics as they are.
``--bootstrap-only SLOTS [--scaling-bits 45] [--first-mod-bits 60]`` measures one sparse
bootstrap with the levels pass's parameters (or another scaling or first modulus).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections import Counter
from pathlib import Path

import numpy as np
import onnx
from common import EXAMPLES, calibration_set, digits, model_input, peak_rss_gib, split

import picompile
from picompile.reference import reference_outputs
from picompile.runtime import run_plan
from picompile.runtime.ckks import CkksClient, CkksServer


def resnet20_img8() -> bytes:
    """The ResNet-20 example with its input fixed to 3x8x8 (same weights)."""
    model = onnx.load(EXAMPLES / "resnet20_digits.onnx")
    dims = model.graph.input[0].type.tensor_type.shape.dim
    dims[2].dim_value = dims[3].dim_value = 8
    return model.SerializeToString()


def img8x3(images: np.ndarray) -> np.ndarray:
    return np.repeat(digits.to_model_input(images, "img8"), 3, axis=1)


def plans(model: str, data: dict, args: argparse.Namespace) -> list[tuple[str, object]]:
    """(label, plan) to benchmark for one model."""
    if model == "resnet20_fashion_quad2":  # fine-tuned: its exported quadratics, no degree search
        return [("fine-tuned quadratics", picompile.compile(
            EXAMPLES / f"{model}.onnx", calib=calibration_set(data, model),
            insecure_test_params=args.insecure_test_params))]
    if model not in ("resnet20_img8", "resnet20_digits", "resnet20_fashion"):
        return [(f"uniform degree {args.degree}", picompile.compile(
            EXAMPLES / f"{model}.onnx", calib=calibration_set(data, model), degree=args.degree,
            method=args.method, insecure_test_params=args.insecure_test_params))]
    if model != "resnet20_img8":  # the 3x32x32 networks (multiplexed packing)
        calib = {k: v[:args.calib_count] for k, v in calibration_set(data, model).items()}
        source = EXAMPLES / f"{model}.onnx"
    else:
        calib = {"input": img8x3(data["calib_images"]), "labels": data["calib_labels"]}
        source = resnet20_img8()
    result = []
    for label, options in (("layerwise DP", {"accuracy_budget": args.accuracy_budget,
                                             "activation_form": args.activation_form}),
                           (f"uniform degree {args.degree}", {"degree": args.degree})):
        if label.split()[0] in args.plans:
            result.append((label, picompile.compile(
                source, calib=calib, insecure_test_params=args.insecure_test_params,
                method=args.method, **options)))
    return result


def measure_bootstrap(slots: int, insecure: bool, first_mod_bits: int | None,
                      scaling_bits: int) -> None:
    """One sparse bootstrap with the levels pass's parameters for ``scaling_bits`` (its context
    depth from ``BOOTSTRAP_PRECISIONS``; ``first_mod_bits``: the first modulus, scaling + 6 by
    default; the correction factor is the smallest OpenFHE accepts for it): set-up, key
    generation, time, and the max error on values in ±1, ±4, ±16, ±64."""
    from picompile.passes.bootstrap_placement import (
        BOOTSTRAP_PRECISIONS,
        bootstrap_level_budget,
    )
    from picompile.runtime.ckks import bootstrap_parameters
    from picompile.runtime.openfhe_loader import (
        BOOTSTRAP_HEADROOM_BITS,
        bootstrap_correction_factor,
        load_openfhe,
    )

    openfhe = load_openfhe()
    # 48-bit (depth 25) is measured but not offered to plans (no better than 46-bit)
    depths = {**dict(BOOTSTRAP_PRECISIONS), 48: 25}
    depth, budget = depths[scaling_bits], list(bootstrap_level_budget(slots))
    first_mod_bits = first_mod_bits or scaling_bits + BOOTSTRAP_HEADROOM_BITS
    correction = bootstrap_correction_factor(first_mod_bits, scaling_bits)
    ring = max(4096, 2 * slots) if insecure else None
    context = openfhe.GenCryptoContext(bootstrap_parameters(openfhe, depth, insecure, ring,
                                                            slots, first_mod_bits, scaling_bits))
    for feature in (openfhe.PKE, openfhe.KEYSWITCH, openfhe.LEVELEDSHE, openfhe.ADVANCEDSHE,
                    openfhe.FHE):
        context.Enable(feature)
    start = time.perf_counter()
    context.EvalBootstrapSetup(budget, [0, 0], slots, correction)
    setup = time.perf_counter() - start
    keys = context.KeyGen()
    start = time.perf_counter()
    context.EvalMultKeyGen(keys.secretKey)
    context.EvalBootstrapKeyGen(keys.secretKey, slots)
    keygen = time.perf_counter() - start
    unit = np.random.default_rng(0).uniform(-1, 1, slots)
    errors, seconds = {}, []
    for magnitude in (1.0, 4.0, 16.0, 64.0):  # absolute at N=2^16: flat up to the bound
        x = magnitude * unit
        plaintext = context.MakeCKKSPackedPlaintext(x.tolist(), 1, depth - 1, None, slots)
        ciphertext = context.Encrypt(keys.publicKey, plaintext)
        start = time.perf_counter()
        refreshed = context.EvalBootstrap(ciphertext)
        seconds.append(time.perf_counter() - start)
        result = context.Decrypt(refreshed, keys.secretKey)
        result.SetLength(slots)
        errors[magnitude] = float(np.max(np.abs(np.array(result.GetRealPackedValue()) - x)))
    left = depth - refreshed.GetLevel() - refreshed.GetNoiseScaleDeg() + 1
    print(f"bootstrap: N={context.GetRingDimension()}, depth {depth}, level budget {budget}, "
          f"{slots} slots, scaling 2^{scaling_bits}, q0 2^{first_mod_bits}, correction "
          f"{correction}: set-up "
          f"{setup:.1f} s, keys {keygen:.1f} s, one bootstrap {min(seconds):.1f} s, max error "
          + ", ".join(f"{e:.2g} on ±{m:g}" for m, e in errors.items())
          + f", {left} levels left, peak RSS {peak_rss_gib():.2f} GB")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["mlp_digits", "cnn_digits"])
    parser.add_argument("--count", type=int, default=5)
    parser.add_argument("--degree", type=int, default=3)
    parser.add_argument("--method", default="wls",
                        help="approximation method (wls, minimax, chebyshev, hermite, quad)")
    parser.add_argument("--accuracy-budget", type=float, default=1.0)
    parser.add_argument("--plans", nargs="+", default=["layerwise", "uniform"])
    parser.add_argument("--activation-form", default="auto",
                        choices=["auto", "polynomial", "composite"],
                        help="layerwise plan: the ReLU forms the degree search may choose")
    parser.add_argument("--calib-count", type=int, default=None,
                        help="calibration images (default: all of the split's)")
    parser.add_argument("--insecure-test-params", action="store_true")
    parser.add_argument("--bootstrap-only", type=int, metavar="SLOTS",
                        help="measure one sparse bootstrap with SLOTS slots and exit")
    parser.add_argument("--first-mod-bits", type=int, default=None,
                        help="--bootstrap-only: the first modulus (default scaling + 6, the "
                             "plans'; 60 = before)")
    parser.add_argument("--scaling-bits", type=int, default=50, choices=[45, 46, 48, 50],
                        help="--bootstrap-only: the scaling modulus (45: depth 27; 46: 26; "
                             "48: 25; 50: 24)")
    args = parser.parse_args()
    if args.bootstrap_only:
        measure_bootstrap(args.bootstrap_only, args.insecure_test_params, args.first_mod_bits,
                          args.scaling_bits)
        return
    print("command: .venv/bin/python bench/fhe_inference.py --models "
          f"{' '.join(args.models)} --count {args.count} --degree {args.degree}"
          f"{' --insecure-test-params' if args.insecure_test_params else ''}"
          f" --plans {' '.join(args.plans)} --accuracy-budget {args.accuracy_budget}"
          f" --method {args.method} --activation-form {args.activation_form}"
          + (f" --calib-count {args.calib_count}" if args.calib_count else ""))
    latency = {}
    for model in args.models:
        data = split("resnet20_digits" if model == "resnet20_img8" else model)
        for label, plan in plans(model, data, args):
            latency[(model, label)] = bench_plan(model, label, plan, data, args)
    for model in args.models:
        runs = {label: t for (m, label), t in latency.items() if m == model}
        if len(runs) == 2:
            (a, ta), (b, tb) = runs.items()
            print(f"\n{model}: latency {b} / {a} = {tb / ta:.2f}x")


def bench_plan(model: str, label: str, plan, data: dict, args: argparse.Namespace) -> float:
    ckks = plan.ckks
    if not ckks.runnable:
        print(f"\n{model} ({label}): not runnable under CKKS: {ckks.reason}")
        return float("nan")
    start = time.perf_counter()
    client = CkksClient(plan)
    if ckks.bootstrapping is not None:  # keys through files: ~6 GB of them at N=2^16
        with tempfile.TemporaryDirectory(prefix="picompile-keys-") as folder:
            client.write_public_material(folder)
            material_size = sum(f.stat().st_size for f in Path(folder).iterdir())
            server = CkksServer(plan, folder)
    else:
        material = client.public_material()
        material_size = material.size
        server = CkksServer(plan, material)
        del material
    setup = time.perf_counter() - start
    if model == "resnet20_img8":
        x = img8x3(data["test_images"][:args.count])
        expected = None
    else:
        x = model_input(model, data["test_images"][:args.count])
        expected = reference_outputs(EXAMPLES / f"{model}.onnx", {"input": x})
    plain = run_plan(plan, x).server_outputs[plan.outputs[0].name]
    latencies, agree, agree_plain, worst, native, encode = [], 0, 0, 0.0, [], []
    per_op: Counter = Counter()
    engine = server.program.engine
    for index in range(args.count):
        ciphertext = client.encrypt(x[index])
        start = time.perf_counter()
        outputs, timings = server.evaluate({"input": ciphertext})
        latencies.append(time.perf_counter() - start)
        native.append(server.last_native_seconds)
        encode.append(server.last_encode_seconds)
        for timing in timings:
            per_op[timing.op] += timing.seconds
        result = client.decrypt(outputs[plan.outputs[0].name], plan.outputs[0].name)
        worst = max(worst, float(np.max(np.abs(result - plain[index].reshape(-1)))))
        if expected is None:
            reference = int(np.argmax(plain[index]))
        elif "output_label" in expected:
            reference = expected["output_label"][index]
        else:
            reference = int(np.argmax(expected["logits"][index]))
        agree += int(np.argmax(result) == reference)
        agree_plain += int(np.argmax(result) == int(np.argmax(plain[index])))
        print(f"  [{model} {label}] input {index}: {latencies[-1]:.1f} s, top-1 "
              f"{int(np.argmax(result))} (reference {reference}, plain "
              f"{int(np.argmax(plain[index]))}), peak RSS {peak_rss_gib():.2f} GB", flush=True)
    layout = [s.fhe.linear for s in plan.steps if s.fhe is not None and s.fhe.linear is not None]
    boot = ckks.bootstrapping
    print(f"\n{model} ({label}): ring dimension 2^{ckks.ring_dimension.bit_length() - 1}, "
          f"depth {ckks.multiplicative_depth}"
          + (f" (leveled depth {ckks.leveled_depth})" if boot else "")
          + f", {ckks.slots} slots, {ckks.security}")
    print(f"  rotation keys {client.rotation_key_count}"
          + (f" (power-of-two; the plan's {len(plan.layout.rotation_keys)} distinct "
             "rotations composed) + EvalBootstrapKeyGen's keys" if boot else "")
          + f", rotations per inference {sum(item.rotations for item in layout)}, diagonals "
          f"{sum(item.diagonal_count for item in layout)}")
    if boot:
        print(f"  bootstraps per inference {engine.bootstraps // args.count} (greedy placement "
              f"{boot.greedy_count}), level budget {boot.level_budget}, "
              f"{boot.levels_after_bootstrap} levels after each, bootstrap time "
              f"{engine.bootstrap_seconds / args.count:.1f} s per inference")
    print(f"  key generation + server set-up {setup:.1f} s, public material "
          f"{material_size / 2**20:.0f} MiB")
    steady = latencies[1:] or latencies
    overhead = 1 - np.median(native[1:] or native) / np.median(steady)
    outside = 1 - (np.median(native[1:] or native) + np.median(encode[1:] or encode)) / np.median(
        steady)
    predicted = plan.analysis.get("cost", {}).get("predicted_seconds", float("nan"))
    print(f"  latency per inference: first {latencies[0]:.2f} s, then "
          f"median {np.median(steady):.2f} s; predicted {predicted:.2f} s "
          f"(measured/predicted {np.median(steady) / predicted:.2f}); Python overhead "
          f"(outside OpenFHE evaluation and encoding calls) {100 * outside:.1f} %; encoding "
          f"diagonals {100 * (overhead - outside):.1f} %")
    print("  server time by op (all runs): "
          + ", ".join(f"{op} {seconds:.1f} s" for op, seconds in per_op.most_common()))
    versus = "the plain backend" if expected is None else "onnxruntime"
    print(f"  top-1 agreement with {versus} {agree}/{args.count}"
          + (f", with the plain backend {agree_plain}/{args.count}" if expected is not None
             else "") + ", max |encrypted - plain| "
          f"{worst:.2e}, peak RSS {peak_rss_gib():.2f} GB", flush=True)
    return float(np.median(steady))

if __name__ == "__main__":
    main()
