"""Tensors larger than one CKKS ciphertext: a Tiny-ImageNet-shaped ResNet-18 (3×64×64, random
weights, ``examples/resnet18_tiny.py``).

``compile`` (default): the whole network at 128-bit (N=2^16, bootstrapped, 16384 slots: the
64×32×32 activations span 4 ciphertexts) — predicted latency, bootstraps (one per ciphertext),
rotation keys the server holds, predicted server memory, compile time per pass, peak RSS.

``stage``: one stage cut out of the network (``--stage K``), calibrated on what enters it in the
full network, compiled at the insecure test ring over ``--slots`` slots (or at 128-bit with
``--secure``: the ring OpenFHE picks for the stage's depth, its full slots) and run encrypted on
``--count`` inputs: server time, ciphertexts, max |encrypted − slot-level model|, and top-1 of
the stage's flattened output against onnxruntime's stage (the activations are polynomials, so
the value differs from the ReLU stage; the relative error says by how much).

Run: .venv/bin/python bench/multi_ciphertext.py compile [--calib-count 16] [--degree 3]
     .venv/bin/python bench/multi_ciphertext.py stage --stage 4 --slots 2048 [--count 2]
     .venv/bin/python bench/multi_ciphertext.py stage --stage 1 --secure [--count 1]
"""

from __future__ import annotations

import argparse
import importlib.util
import time

import numpy as np
import onnx
import onnxruntime as ort
from common import EXAMPLES, peak_rss_gib

import picompile
from picompile.runtime.ckks import CkksBackend
from picompile.runtime.plain import PlainBackend


def resnet18_module():
    spec = importlib.util.spec_from_file_location("resnet18_tiny",
                                                  EXAMPLES / "resnet18_tiny.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def images(count: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(count, 3, 64, 64)).astype(np.float32)


def compile_whole(args: argparse.Namespace) -> None:
    model = resnet18_module().resnet18_tiny(width=args.width)
    start = time.perf_counter()
    plan = picompile.compile(model, calib=images(args.calib_count), degree=args.degree)
    seconds = time.perf_counter() - start
    cost, ckks = plan.analysis["cost"], plan.ckks
    memory = cost["predicted_server_memory_bytes"]
    print(f"ResNet-18 3×64×64 (width {args.width}), degree {args.degree}, 128-bit: ring "
          f"2^{ckks.ring_dimension.bit_length() - 1}, {ckks.slots} slots, "
          f"{ckks.scaling_mod_bits}-bit scaling, tensors over up to {plan.layout.ciphertexts} "
          "ciphertexts")
    print(f"  predicted {cost['predicted_seconds']:.0f} s per image, {cost['bootstraps']} "
          f"bootstraps ({cost['predicted_bootstrap_seconds']:.0f} s), "
          f"{plan.layout.rotations_per_inference} rotations, "
          f"{plan.layout.diagonals_per_inference} plaintext products")
    print(f"  rotation keys held by the server: {cost['rotation_keys']} (power-of-two and "
          f"bootstrapping keys; {len(plan.layout.rotation_keys)} distinct rotation amounts); "
          f"predicted server memory {memory['total'] / 2**30:.1f} GiB (keys "
          f"{memory['evaluation_keys'] / 2**30:.1f}, bootstrap transforms "
          f"{memory.get('bootstrap_transforms', 0) / 2**30:.1f}, ciphertexts "
          f"{memory['ciphertexts'] / 2**30:.1f})")
    passes = ", ".join(f"{r['name']} {r.get('seconds', 0):.1f}" for r in plan.passes)
    print(f"  compile {seconds:.1f} s ({passes}); peak RSS {peak_rss_gib():.2f} GiB")


def stage_inputs(module, full: onnx.ModelProto, stage: int, count: int,
                 seed: int) -> np.ndarray:
    """What enters ``stage`` in the full network on ``count`` random images."""
    entering, _ = module.stage_tensors(stage)
    probe = onnx.ModelProto()
    probe.CopyFrom(full)
    probe.graph.output.append(onnx.helper.make_tensor_value_info(entering,
                                                                 onnx.TensorProto.FLOAT, None))
    session = ort.InferenceSession(probe.SerializeToString())
    batch = images(count, seed)
    return np.concatenate([session.run([entering], {"input": batch[i:i + 1]})[0]
                           for i in range(count)])


def run_stage(args: argparse.Namespace) -> None:
    module = resnet18_module()
    full = module.resnet18_tiny(width=args.width)
    model = module.stage_model(full, args.stage)
    calib = stage_inputs(module, full, args.stage, args.calib_count, seed=0)
    start = time.perf_counter()
    plan = picompile.compile(model, calib=calib, degree=args.degree,
                             insecure_test_params=not args.secure,
                             slots=None if args.secure else args.slots)
    compile_seconds = time.perf_counter() - start
    name = plan.inputs[0].name
    x = stage_inputs(module, full, args.stage, args.count, seed=1)
    print(f"ResNet-18 stage {args.stage} (width {args.width}): input {list(x.shape[1:])}, "
          f"{plan.ckks.slots} slots (ring 2^{plan.ckks.ring_dimension.bit_length() - 1}, "
          f"{plan.ckks.security}), depth {plan.ckks.multiplicative_depth}, tensors over up "
          f"to {plan.layout.ciphertexts} ciphertexts; compile {compile_seconds:.1f} s; "
          f"predicted {plan.analysis['cost']['predicted_seconds']:.1f} s per input")
    start = time.perf_counter()
    result = CkksBackend().execute(plan, {name: x})
    total = time.perf_counter() - start
    output = plan.outputs[0].name
    encrypted = result.server_outputs[output]
    modelled = PlainBackend(slot_level=True).execute(plan, {name: x}).server_outputs[output]
    session = ort.InferenceSession(model.SerializeToString())
    reference = np.concatenate([session.run(None, {session.get_inputs()[0].name: x[i:i + 1]})[0]
                                for i in range(len(x))])
    server = sum(t.seconds for t in result.timings)
    error = np.abs(encrypted - modelled).max()
    relative = np.abs(encrypted - reference).max() / np.abs(reference).max()
    print(f"  encrypted: {total:.1f} s for {len(x)} inputs with key generation, server "
          f"{server:.1f} s for the last; max |encrypted − slot model| {error:.2e}; "
          f"max |encrypted − onnxruntime (ReLU)| / max |onnxruntime| {relative:.3f}; "
          f"peak RSS {peak_rss_gib():.2f} GiB")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("mode", choices=["compile", "stage"], nargs="?", default="compile")
    parser.add_argument("--width", type=int, default=64)
    parser.add_argument("--degree", type=int, default=3)
    parser.add_argument("--calib-count", type=int, default=16)
    parser.add_argument("--stage", type=int, default=4)
    parser.add_argument("--slots", type=int, default=2048)
    parser.add_argument("--count", type=int, default=2)
    parser.add_argument("--secure", action="store_true",
                        help="stage: 128-bit parameters instead of the insecure test ring")
    args = parser.parse_args()
    (compile_whole if args.mode == "compile" else run_stage)(args)


if __name__ == "__main__":
    main()
