"""``--protocol auto`` checked: predicted against measured cost of both protocols on one model.

For the model, compile the FHE plan and the hybrid plan that ``--protocol auto`` weighs (same
options), predict each one's online compute, offline compute and bytes
(:mod:`picompile.deployment`), run both encrypted in this process on ``--count`` test images
(FHE: encryption, the server's evaluation and decryption in this process; hybrid: the server
and — if the plan needs one — the dealer as ``picompile`` processes over loopback TCP, the
client here, so transfer and round trips cost ~nothing and compute is what is measured), print
predicted vs measured with the ratio, then the choice ``--protocol auto``
makes on each ``--networks`` link with its table. The operation cost tables are measured first,
in the same run (as ``picompile calibrate-costs`` does), so that predictions and measurements
see the same machine load.

    .venv/bin/python bench/protocol_choice.py --model cnn_digits --count 5
    .venv/bin/python bench/protocol_choice.py --model cnn_digits --count 5 --method quad \\
        --degree 2 --quadratic-protocol flash
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from common import ROOT, calibration_set, model_input, peak_rss_gib, split, start_service

import picompile
from picompile.cost import cost_cache_path
from picompile.deployment import Network, choose_protocol, fhe_cost, hybrid_cost
from picompile.runtime.ckks import CkksClient, CkksServer
from picompile.runtime.cost_measurement import measure_cost_table
from picompile.runtime.hybrid import client_run, client_view


def fhe_online_seconds(plan, x: np.ndarray) -> float:
    """Median over the inputs after the first of encrypt + server evaluation + decrypt (keys
    generated once before)."""
    client = CkksClient(plan)
    server = CkksServer(plan, client.public_material())
    name, output = plan.inputs[0].name, plan.outputs[0].name
    seconds = []
    for row in x:
        start = time.perf_counter()
        outputs, _ = server.evaluate({name: client.encrypt(row, name)})
        client.decrypt(outputs[output], output)
        seconds.append(time.perf_counter() - start)
    return float(np.median(seconds[1:] or seconds))


def hybrid_seconds_over_tcp(plan, x: np.ndarray) -> tuple[float, float]:
    """Online and offline seconds per inference, the server (and the dealer, if the plan needs
    one) as separate processes over loopback TCP, the client here."""
    folder = Path(tempfile.mkdtemp(prefix="picompile-choice-"))
    plan.save(folder / "server.piplan")
    processes, dealer = [], None
    if plan.dealer_steps():
        process, port = start_service(["dealer", "--port", "0", "--once"], folder / "dealer.log")
        processes.append(process)
        dealer = f"127.0.0.1:{port}"
    server, port = start_service(["serve", str(folder / "server.piplan"), "--port", "0",
                                  "--once", "--timeout", "600"]
                                 + (["--dealer", dealer] if dealer else []),
                                 folder / "server.log")
    processes.append(server)
    result = client_run(client_view(plan), f"127.0.0.1:{port}", x, dealer=dealer, timeout=600)
    for process in processes:
        process.wait(timeout=120)
    return result.communication["online_seconds"], result.communication["offline_seconds"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="cnn_digits")
    parser.add_argument("--count", type=int, default=5)
    parser.add_argument("--method", default="wls")
    parser.add_argument("--degree", type=int)
    parser.add_argument("--quadratic-protocol", default="beaver", choices=["beaver", "flash"])
    parser.add_argument("--networks", nargs="+",
                        default=["10Gbit,0.1ms", "100Mbit,20ms", "1Gbit,100ms", "10Mbit,100ms"])
    parser.add_argument("--no-calibrate", action="store_true",
                        help="predict from the cached/default cost tables instead of measuring "
                             "them first in this run")
    args = parser.parse_args()
    print("command:", " ".join([".venv/bin/python"] + sys.argv))
    data = split(args.model)
    calib = calibration_set(data, args.model)
    model = str(ROOT / "examples" / f"{args.model}.onnx")
    options = {"method": args.method, "degree": args.degree,
               "quadratic_protocol": args.quadratic_protocol}
    if not args.no_calibrate:
        # predictions from operation costs measured now, under the same machine load as the
        # runs they are compared with (what `picompile calibrate-costs --ring-dimensions N
        # --depth D` caches), at the FHE plan's ring dimension and depth
        ckks = picompile.compile(model, calib=calib, **options).ckks
        os.environ["XDG_CACHE_HOME"] = tempfile.mkdtemp(prefix="picompile-costs-")
        table = measure_cost_table([ckks.ring_dimension], depth=ckks.multiplicative_depth,
                                   repeats=7)
        cost_cache_path().parent.mkdir(parents=True)
        cost_cache_path().write_text(json.dumps(table))
        print(f"cost tables measured in this run (CKKS N={ckks.ring_dimension} depth "
              f"{ckks.multiplicative_depth}, hybrid BFV)")
    x = model_input(args.model, data["test_images"][:args.count])
    costs, measured = {}, {}
    for protocol, cost in (("fhe", fhe_cost), ("hybrid", hybrid_cost)):
        plan = picompile.compile(model, calib=calib, protocol=protocol, **options)
        predicted = cost(plan)
        costs[protocol] = predicted
        if protocol == "fhe":
            online, offline = fhe_online_seconds(plan, x), 0.0
        else:
            # steady state: a one-inference session's time taken out of an n-inference one
            # (the first inference of a session encodes and caches the server's diagonals)
            n = len(x)
            first = hybrid_seconds_over_tcp(plan, x[:1])
            every = hybrid_seconds_over_tcp(plan, x)
            online, offline = ((n * e - f) / (n - 1) for e, f in zip(every, first, strict=True))
        measured[protocol] = (online, offline)
        print(f"{protocol:6}: online compute predicted {predicted.online_compute_seconds:.3f} s, "
              f"measured {online:.3f} s (measured/predicted "
              f"{online / max(predicted.online_compute_seconds, 1e-9):.2f}); offline compute "
              f"predicted {predicted.offline_compute_seconds:.3f} s, measured {offline:.3f} s"
              + (f" ({offline / predicted.offline_compute_seconds:.2f})"
                 if predicted.offline_compute_seconds else ""), flush=True)
    for text in args.networks:
        choice = choose_protocol(costs, Network.parse(text))
        print(f"\n{choice.network}: {choice.reason}")
        for row in choice.rows:
            print(f"  {row['protocol']:6} online {row['online_seconds']:.3f} s (compute "
                  f"{row['online_compute_seconds']:.3f} + transfer "
                  f"{row['online_transfer_seconds']:.3f} + {row['online_round_trips']} round "
                  f"trips), {row['online_bytes'] / 1024:.0f} KiB online + "
                  f"{row['offline_bytes'] / 2**20:.1f} MiB offline, end to end "
                  f"{row['end_to_end_seconds']:.3f} s, keys {row['key_bytes'] / 2**20:.0f} MiB")
    print(f"peak RSS {peak_rss_gib():.2f} GiB")


if __name__ == "__main__":
    main()
