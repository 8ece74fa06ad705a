"""Two-party correlations (OT between client and server) against the trusted dealer.

For each model, an all-ReLU hybrid plan and a ReLU-budget plan (half the ReLUs kept exact, the
rest degree-2 ``--method quad`` polynomials evaluated with Beaver squares) run over loopback TCP
twice: ``--correlations two-party`` (client and server processes only) and ``--correlations
dealer`` (plus a ``picompile dealer`` process). Every party is a separate ``picompile`` process
whose peak RSS is read from ``/usr/bin/time``. Prints per inference: offline bytes (total over
every link, and the correlations alone: the ``ot`` messages, or the dealer's traffic on both of
its links as the dealer process reports it; base OTs and keys are once per session and spread
over the inferences), offline client↔server flights, offline and correlation
seconds, online bytes/flights/seconds, peak RSS per process, and top-1 agreement with the plain
backend; then the two-party/dealer ratios.

    .venv/bin/python bench/two_party_correlations.py --models cnn_digits --count 5
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
from common import INPUT_KINDS, ROOT, calibration_set, model_input, split, start_service

import picompile
from picompile.runtime import run_plan
from picompile.runtime.hybrid import client_view

TIMED = ["/usr/bin/time", "-f", "peak_rss_kib %M", sys.executable, "-m", "picompile.cli"]


def start(args: list[str], log: Path) -> tuple[subprocess.Popen, int]:
    """``common.start_service`` under ``/usr/bin/time`` (the log ends with the peak RSS)."""
    return start_service(args, log, TIMED)


def peak_mib(text: str) -> float:
    return int(text.rsplit("peak_rss_kib", 1)[1].split()[0]) / 1024


def run(folder: Path, mode: str, x_path: Path) -> dict:
    """Server (+ dealer) and client as processes; the client's stats and each peak RSS."""
    services, extra = [], []
    if mode == "dealer":
        dealer, dealer_port = start(["dealer", "--port", "0", "--once"], folder / "dealer.log")
        services.append(("dealer", dealer, folder / "dealer.log"))
        extra = ["--dealer", f"127.0.0.1:{dealer_port}"]
    server, port = start(["serve", str(folder / "server.piplan"), "--port", "0", "--once",
                          "--timeout", "3600", "--correlations", mode] + extra,
                         folder / "server.log")
    services.append(("server", server, folder / "server.log"))
    done = subprocess.run(TIMED + ["client", str(folder / "client.piplan"), "--connect",
                                   f"127.0.0.1:{port}", "--input", str(x_path), "--output",
                                   str(folder / f"y-{mode}.npy"), "--stats",
                                   str(folder / f"stats-{mode}.json"), "--correlations", mode,
                                   "--timeout", "3600"] + extra,
                          capture_output=True, text=True, cwd=ROOT)
    if done.returncode != 0:
        raise SystemExit(done.stdout + done.stderr)
    stats = json.loads((folder / f"stats-{mode}.json").read_text())
    stats["peak_mib"] = {"client": peak_mib(done.stderr)}
    for name, process, log in services:
        process.wait(timeout=120)
        stats["peak_mib"][name] = peak_mib(log.read_text())
    stats["correlation_bytes"] = stats["ot_bytes"] * stats["inferences"]
    stats["correlation_messages"] = 0
    if mode == "dealer":  # both links, as the dealer measured them
        text = (folder / "dealer.log").read_text().split("dealer session:")[1].split()
        stats["correlation_messages"], stats["correlation_bytes"] = 2 * int(text[0]), int(text[2])
        # the client's offline bytes hold its own dealer link; add the server's
        stats["offline_bytes"] += (stats["correlation_bytes"] / stats["inferences"]
                                   - stats["dealer_bytes"])
    stats["correlation_bytes"] /= stats["inferences"]
    return stats


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["cnn_digits"],
                        choices=sorted(INPUT_KINDS))
    parser.add_argument("--count", type=int, default=5, help="inferences per run")
    parser.add_argument("--relu-budget", type=float, default=0.5)
    parser.add_argument("--plans", nargs="+", default=["all-relu", "budget"],
                        choices=["all-relu", "budget"])
    args = parser.parse_args()
    print("command:", " ".join([".venv/bin/python"] + sys.argv), flush=True)
    for model in args.models:
        data = split(model)
        calib = calibration_set(data, model)
        x = model_input(model, data["test_images"][:args.count])
        plans = {"all-relu": ("all-ReLU", {}),
                 "budget": (f"ReLU budget {args.relu_budget}",
                            {"relu_budget": args.relu_budget, "method": "quad", "degree": 2})}
        for label, options in (plans[name] for name in args.plans):
            folder = Path(tempfile.mkdtemp(prefix="picompile-ot-"))
            plan = picompile.compile(str(ROOT / "examples" / f"{model}.onnx"),
                                     folder / "server.piplan", protocol="hybrid", calib=calib,
                                     **options)
            client_view(plan).save(folder / "client.piplan")
            np.save(folder / "x.npy", x)
            want = run_plan(plan, x, backend="plain").server_outputs[plan.outputs[0].name]
            kinds = [s.hybrid.protocol for s in plan.dealer_steps()]
            print(f"\n{model}, {label}: {len(kinds)} steps need correlations "
                  f"({', '.join(sorted(set(kinds)))}); {args.count} inferences", flush=True)
            results = {}
            for mode in ("two-party", "dealer"):
                stats = results[mode] = run(folder, mode, folder / "x.npy")
                got = np.load(folder / f"y-{mode}.npy")
                correlation_bytes = stats["correlation_bytes"]
                memory = ", ".join(f"{k} {v:.0f}" for k, v in stats["peak_mib"].items())
                print(f"  {mode:9}: offline {stats['offline_bytes'] / 2**20:8.2f} MiB "
                      f"(correlations {correlation_bytes / 2**20:7.3f} MiB), "
                      f"{stats['offline_flights']:.0f} flights, {stats['offline_seconds']:6.2f} s "
                      f"(correlations {stats['correlation_seconds']:5.2f} s); online "
                      f"{stats['online_bytes'] / 2**10:7.1f} KiB, "
                      f"{stats['online_flights']:.0f} flights, "
                      f"{stats['online_seconds'] * 1e3:6.1f} ms; peak RSS MiB: {memory}; "
                      f"top-1 = plain: {np.mean(got.argmax(-1) == want.argmax(-1)):.2f}",
                      flush=True)
            two, dealer = results["two-party"], results["dealer"]
            ratio = two["offline_bytes"] / dealer["offline_bytes"]
            print(f"  two-party / dealer: offline bytes {ratio:.2f}x, correlation bytes "
                  f"{two['correlation_bytes'] / max(dealer['correlation_bytes'], 1):.1f}x, "
                  f"offline time {two['offline_seconds'] / dealer['offline_seconds']:.2f}x, "
                  f"online bytes {two['online_bytes'] / dealer['online_bytes']:.3f}x",
                  flush=True)


if __name__ == "__main__":
    main()
