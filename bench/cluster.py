"""picompile on Ray (``serve --ray``, ``--workers``), measured on a local Ray started here.

Three parts (``--parts``, default all):

* ``sessions`` — K clients at once (``picompile client`` processes, S samples each) against
  ``picompile serve`` (one process: sessions one after another) and ``picompile serve --ray``
  (each session in a Ray actor, the server starts its own local Ray): wall time until every
  client is done, inferences per second, every client's outputs against the plain run;
* ``split`` — one large CKKS linear step (the first Gemm of the Fashion MLP: 1,024 diagonals,
  38 giant steps) in one process, offloaded to 1 worker, split over 2 workers: median step time,
  speed-up, and the overheads (key shipping = worker start with its keys, ciphertext bytes each
  way, Ray's cost per part, (de)serialization) — and the cost model's prediction of the same;
  then the step once more with a worker killed 50 ms in (Ray restarts it, the part is retried);
* ``table`` — the scale-out table of the ResNet-20 plan (``analysis["cost"]["scale_out"]``)
  with the measured per-part overhead and (de)serialization rate as assumptions.

Run: .venv/bin/python bench/cluster.py [--parts sessions split table] [--clients 4]
     [--samples 8] [--repeats 5]
Plans use ``--insecure-test-params`` rings (N=4096) except the ResNet-20 table (128-bit).
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import tempfile
import threading
import time
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
from common import EXAMPLES, PICOMPILE, ROOT, calibration_set, model_input, split, start_service

import picompile
from picompile.cost import (
    ScaleOutAssumptions,
    StepCost,
    ciphertext_bytes,
    load_operation_costs,
    operation_costs_for,
    scale_out,
    split_step_seconds,
)
from picompile.runtime import run_plan
from picompile.runtime.fhe_session import fhe_client_view


def local_ray():
    import ray

    ray.init(num_cpus=2, object_store_memory=500 << 20, include_dashboard=False,
             logging_level="warning")
    return ray


def sessions(args: argparse.Namespace) -> None:
    data = split("cnn_digits")
    plan = picompile.compile(EXAMPLES / "cnn_digits.onnx",
                             calib=calibration_set(data, "cnn_digits"), degree=3,
                             insecure_test_params=True)
    name = plan.outputs[0].name
    with tempfile.TemporaryDirectory(prefix="picompile-cluster-") as folder:
        folder = Path(folder)
        plan_path = plan.save(folder / "cnn.piplan")
        client_path = fhe_client_view(plan).save(folder / "cnn.client.piplan")
        inputs = []
        for index in range(args.clients):
            images = data["test_images"][index * args.samples:(index + 1) * args.samples]
            inputs.append(model_input("cnn_digits", images))
            np.save(folder / f"x{index}.npy", inputs[-1])
        print(f"{args.clients} clients x {args.samples} samples, small CNN (FHE, N=4096)")
        print("| server | start (until listening) | wall, all clients | inferences/s | "
              "all outputs right |")
        print("|---|---|---|---|---|")
        for label, extra in (("serve (one process)", []),
                             ("serve --ray (session actors)", ["--ray", "--session-cpus",
                                                               "0.25"])):
            start = time.perf_counter()
            server, port = start_service(["serve", str(plan_path), "--port", "0", *extra],
                                         folder / "server.log")
            started = time.perf_counter() - start
            try:
                start = time.perf_counter()
                clients = [subprocess.Popen(
                    PICOMPILE + ["client", str(client_path), "--connect", f"127.0.0.1:{port}",
                                 "--input", str(folder / f"x{i}.npy"),
                                 "--output", str(folder / f"y{i}.npy")],
                    stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, cwd=ROOT)
                    for i in range(args.clients)]
                for client in clients:
                    _, err = client.communicate(timeout=1200)
                    if client.returncode != 0:
                        raise SystemExit(f"client failed: {err}\nserver log:\n"
                                         + (folder / "server.log").read_text())
                wall = time.perf_counter() - start
            finally:
                server.send_signal(2)
                server.wait(timeout=120)
            right = all(np.max(np.abs(np.load(folder / f"y{i}.npy")
                                      - run_plan(plan, inputs[i]).server_outputs[name])) < 1e-4
                        for i in range(args.clients))
            print(f"| {label} | {started:.1f} s | {wall:.1f} s | "
                  f"{args.clients * args.samples / wall:.2f} | {right} |")


def split_step(args: argparse.Namespace) -> ScaleOutAssumptions:
    from picompile.runtime.ckks import CkksClient, CkksServer
    from picompile.runtime.cluster.spec import SessionSpec
    from picompile.runtime.cluster.workers import distributed_server_factory

    data = split("mlp_fashion")
    plan = picompile.compile(EXAMPLES / "mlp_fashion.onnx",
                             calib=calibration_set(data, "mlp_fashion"), degree=3,
                             insecure_test_params=True)
    step = max((s for s in plan.steps if s.fhe is not None and s.fhe.linear is not None),
               key=lambda s: len(s.fhe.linear.offsets))
    client = CkksClient(plan)
    material = client.public_material()
    x = model_input("mlp_fashion", data["test_images"][:1])[0]
    local = CkksServer(plan, material)
    ciphertext = local.adopt(client.encrypt(x, plan.inputs[0].name))
    ray = local_ray()
    rows, results, cpu_seconds = [], {}, {}
    try:
        def timed(server, label: str) -> None:
            server.program.linear(step, ciphertext)  # warm-up: diagonals rolled and encoded
            if hasattr(server.program, "stats"):
                server.program.stats = type(server.program.stats)()
            times, cpu = [], []
            for _ in range(args.repeats):
                start, start_cpu = time.perf_counter(), time.process_time()
                result = server.program.linear(step, ciphertext)
                times.append(time.perf_counter() - start)
                cpu.append(time.process_time() - start_cpu)
            cpu_seconds[label] = statistics.median(cpu)
            results[label] = client.decrypt(server.serialize(result), 64)
            rows.append((label, statistics.median(times), getattr(server.program, "stats", None),
                         args.repeats))

        timed(local, "one process")
        servers = {}
        for workers in (1, 2):
            start = time.perf_counter()
            servers[workers] = distributed_server_factory(
                SessionSpec(workers=workers, timeout=300))(plan, material)
            shipping = time.perf_counter() - start
            timed(servers[workers], f"{workers} worker{'s' if workers > 1 else ''}")
            rows[-1] = rows[-1] + (shipping,)
            if workers == 2:  # a worker killed while the step runs: restarted, part retried
                pool = servers[2].program.pool
                killer = threading.Timer(0.05, ray.kill, (pool.workers[0],),
                                         {"no_restart": False})
                start = time.perf_counter()
                killer.start()
                result = servers[2].program.linear(step, ciphertext)
                recovered = time.perf_counter() - start
                killer.join()
                recovery = (recovered, float(np.max(np.abs(
                    client.decrypt(servers[2].serialize(result), 64) - results["one process"]))))
            servers.pop(workers).close()  # its CPUs for the next pool
        # (de)serialization rate of this ciphertext
        blob = local.serialize(local.program.engine.prepare(ciphertext))
        start = time.perf_counter()
        for _ in range(10):
            local.adopt(local.serialize(local.program.engine.prepare(ciphertext)))
        serialize_rate = 2 * 10 * len(blob) / (time.perf_counter() - start)
    finally:
        for server in servers.values():
            server.close()
        ray.shutdown()
    base = rows[0][1]
    print(f"\nstep {step.name}: {len(step.fhe.linear.offsets)} diagonals, "
          f"{len(local.program.giants(step))} giant steps, N={plan.ckks.ring_dimension}, "
          f"ciphertext {len(blob) / 2**10:.0f} KiB, material {material.size / 2**20:.1f} MiB")
    print("| run | step median (wall) | wall speed-up | critical path CPU (slowest part) | "
          "CPU speed-up | Ray overhead per step | bytes out / back per step | key shipping "
          "(workers start) | max |Δ| vs one process |")
    print("|---|---|---|---|---|---|---|---|---|")
    overheads = []
    for row in rows:
        label, seconds, stats, repeats = row[:4]
        if stats is None:
            print(f"| {label} | {seconds * 1000:.0f} ms | 1.00 | "
                  f"{cpu_seconds[label] * 1000:.0f} ms (all of it) | 1.00 | — | — | — | 0 |")
            continue
        critical_cpu = stats.critical_cpu_seconds / stats.steps
        overhead = (stats.wait_seconds - stats.critical_seconds) / stats.steps
        overheads.append(overhead)
        delta = float(np.max(np.abs(results[label] - results["one process"])))
        print(f"| {label} | {seconds * 1000:.0f} ms | {base / seconds:.2f} | "
              f"{critical_cpu * 1000:.0f} ms | {cpu_seconds['one process'] / critical_cpu:.2f} | "
              f"{overhead * 1000:.0f} ms | "
              f"{stats.bytes_out / stats.steps / 2**10:.0f} / "
              f"{stats.bytes_back / stats.steps / 2**10:.0f} KiB | {row[4]:.2f} s | "
              f"{delta:.1e} |")
    print(f"2 workers, worker 0 killed 50 ms into the step: {recovery[0] * 1000:.0f} ms "
          f"(restart, keys re-read from the object store, part retried), max |Δ| vs one "
          f"process {recovery[1]:.1e}")
    costs = operation_costs_for(load_operation_costs(), plan.ckks.ring_dimension)
    layout = asdict(step.fhe.linear)
    towers = plan.ckks.multiplicative_depth + 1 - step.fhe.level_in
    assumptions = ScaleOutAssumptions(task_seconds=min(overheads),
                                      serialize_bytes_per_second=serialize_rate)
    predicted = {w: split_step_seconds(layout, towers, costs, w, plan.ckks.ring_dimension,
                                       True, None, assumptions) for w in (1, 2)}
    print(f"cost model (measured overheads: {min(overheads) * 1000:.0f} ms per part, "
          f"(de)serialization {serialize_rate / 1e9:.2f} GB/s, ciphertext "
          f"{ciphertext_bytes(plan.ckks.ring_dimension, towers) / 2**10:.0f} KiB): "
          f"1 worker {predicted[1] * 1000:.0f} ms, 2 workers {predicted[2] * 1000:.0f} ms, "
          f"speed-up {predicted[1] / predicted[2]:.2f}")
    return assumptions


def table(args: argparse.Namespace, assumptions: ScaleOutAssumptions) -> None:
    """The ResNet-20 plan's scale-out prediction, re-run with the measured assumptions."""
    data = split("resnet20_digits")
    plan = picompile.compile(EXAMPLES / "resnet20_digits.onnx",
                             calib=calibration_set(data, "resnet20_digits"), degree=7)
    analysis = plan.analysis["cost"]
    ckks = plan.ckks
    costs = operation_costs_for(load_operation_costs(), ckks.ring_dimension)
    refresh = analysis["predicted_bootstrap_seconds"] / max(analysis["bootstraps"], 1)
    steps = []
    for step in plan.steps:
        fhe = step.fhe
        extra = refresh if fhe is not None and fhe.bootstrap_after is not None else 0.0
        linear = None if fhe is None or fhe.linear is None else asdict(fhe.linear)
        towers = ckks.multiplicative_depth + 1 - (fhe.level_in if fhe is not None else 0)
        bias = "bias_slots" in step.params and bool(np.any(plan.param(step, "bias_slots")))
        steps.append(StepCost(linear, towers, step.meta["estimated_seconds"] - extra, extra,
                              bias))
    keys = analysis["predicted_server_memory_bytes"]["evaluation_keys"]
    rows = scale_out(steps, costs, ckks.ring_dimension, keys, ckks.slots, assumptions,
                     (1, 4, 16, 64))
    linear_seconds = sum(s.seconds for s in steps if s.layout is not None)
    print(f"\nResNet-20 (digits, 3x32x32, uniform degree 7, 128-bit, N={ckks.ring_dimension}): "
          f"predicted {analysis['predicted_seconds']:.0f} s per inference, of which linear "
          f"steps {linear_seconds:.0f} s, {analysis['bootstraps']} bootstraps "
          f"{analysis['predicted_bootstrap_seconds']:.0f} s; evaluation keys "
          f"{keys / 2**30:.1f} GiB, session memory "
          f"{analysis['predicted_server_memory_bytes']['total'] / 2**30:.1f} GiB")
    print(f"assumptions: {assumptions}")
    alone = analysis["predicted_seconds"]
    print("| workers | latency, one client (giant steps split) | speed-up | key shipping (once "
          "per session) | throughput, workers as independent sessions |")
    print("|---|---|---|---|---|")
    for row in rows:
        print(f"| {row['workers']} | {row['predicted_seconds']:.0f} s | {row['speedup']:.2f} | "
              f"{row['key_shipping_seconds']:.0f} s | "
              f"{row['workers'] * 3600 / alone:.1f} inferences/h |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--parts", nargs="+", default=["sessions", "split", "table"])
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--samples", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    if "sessions" in args.parts:
        sessions(args)
    assumptions = ScaleOutAssumptions()
    if "split" in args.parts:
        assumptions = split_step(args)
    if "table" in args.parts:
        table(args, replace(assumptions))


if __name__ == "__main__":
    main()
