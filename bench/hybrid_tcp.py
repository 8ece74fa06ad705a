"""Hybrid plan over loopback TCP: server (and dealer) processes, this process the client.

Compiles the model's hybrid plan (all ReLUs exact unless options are given), writes the server
plan and the client plan (no weights), starts ``picompile serve`` (and ``picompile dealer`` with
``--correlations dealer``), runs
``--count`` test images through ``client_run`` and compares every output with the plain backend.
Prints per-inference online/offline bytes and times, top-1 agreement, the largest output
difference, and peak RSS of the client and of the server/dealer processes.

    .venv/bin/python bench/hybrid_tcp.py --model resnet20_digits --count 20
"""

from __future__ import annotations

import argparse
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from common import INPUT_KINDS, ROOT, calibration_set, model_input, peak_rss_gib, split
from common import start_service as start

import picompile
from picompile.runtime import run_plan
from picompile.runtime.hybrid import client_run, client_view


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="cnn_digits", choices=sorted(INPUT_KINDS))
    parser.add_argument("--count", type=int, default=20)
    parser.add_argument("--method", help="polynomial method (default: all ReLUs exact)")
    parser.add_argument("--degree", type=int)
    parser.add_argument("--correlations", choices=["two-party", "dealer"], default="two-party",
                        help="MPC correlations from OT between the parties or a dealer process")
    args = parser.parse_args()
    print("command:", " ".join([".venv/bin/python"] + sys.argv), flush=True)
    data = split(args.model)
    options = {k: v for k, v in (("method", args.method), ("degree", args.degree)) if v}
    folder = Path(tempfile.mkdtemp(prefix="picompile-hybrid-"))
    start_time = time.perf_counter()
    plan = picompile.compile(str(ROOT / "examples" / f"{args.model}.onnx"),
                             folder / "server.piplan", protocol="hybrid",
                             calib=calibration_set(data, args.model), **options)
    client_view(plan).save(folder / "client.piplan")
    print(f"compiled in {time.perf_counter() - start_time:.1f} s; "
          f"{plan.analysis['layout']['plaintext_products_per_inference']} plaintext products "
          f"and {len(plan.layout.rotation_keys)} rotation keys per prime", flush=True)
    x = model_input(args.model, data["test_images"][:args.count])
    dealer, address = None, None
    if args.correlations == "dealer":
        dealer, dealer_port = start(["dealer", "--port", "0", "--once"], folder / "dealer.log")
        address = f"127.0.0.1:{dealer_port}"
    server, server_port = start(["serve", str(folder / "server.piplan"), "--port", "0",
                                 "--once", "--correlations", args.correlations,
                                 "--timeout", "3600"]
                                + (["--dealer", address] if address else []),
                                folder / "server.log")
    client_plan = picompile.load_plan(folder / "client.piplan")
    result = client_run(client_plan, f"127.0.0.1:{server_port}", x, dealer=address,
                        correlations=args.correlations, timeout=3600)
    server.wait(timeout=120)
    if dealer is not None:
        dealer.wait(timeout=120)
    name = plan.outputs[0].name
    got = result.server_outputs[name]
    want = run_plan(plan, x, backend="plain").server_outputs[name]
    stats = result.communication
    labels = data["test_labels"][:args.count]
    print(f"model {args.model}, {args.count} inferences, {args.correlations} correlations, "
          "client here, server (and dealer) as separate processes over loopback TCP")
    print(f"top-1 equal to plain backend: {np.mean(got.argmax(-1) == want.argmax(-1)):.3f}; "
          f"accuracy {100 * np.mean(got.argmax(-1) == labels):.1f}% (plain "
          f"{100 * np.mean(want.argmax(-1) == labels):.1f}%); max |hybrid − plain| "
          f"{np.max(np.abs(got - want)):.2e}")
    print(f"per inference: online {stats['online_bytes'] / 2**20:.2f} MiB, "
          f"{stats['online_flights']:.0f} flights, {stats['online_seconds']:.2f} s; offline "
          f"{stats['offline_bytes'] / 2**20:.1f} MiB, {stats['offline_seconds']:.1f} s; "
          f"setup keys {stats['setup_key_bytes'] / 2**20:.0f} MiB, key generation "
          f"{stats['keygen_seconds']:.1f} s")
    own = peak_rss_gib()
    children = peak_rss_gib(resource.RUSAGE_CHILDREN)
    print(f"peak RSS: client {own:.2f} GiB, largest of server/dealer {children:.2f} GiB")
    print((folder / "server.log").read_text().strip())


if __name__ == "__main__":
    main()
