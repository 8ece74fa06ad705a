"""``make demo``: private inference of one handwritten digit, end to end, as two processes.

Reads: ``examples/cnn_digits.onnx`` (a small CNN on 8×8 digits), the digits split
(``digits_data.npz``), the installed ``picompile`` command.
Writes: under ``--out`` (default ``build/demo``): the calibration set and the digit (``.npz`` /
``.npy``), the FHE and hybrid plans with their client plans, the HTML report of the FHE plan,
each client's statistics (JSON); a summary on stdout.

What it runs, with the same commands a user types:

1. ``picompile compile`` with calibration → an FHE plan (CKKS, 128-bit) whose ReLUs are
   layerwise polynomial fits chosen by the degree search under a 1-point accuracy budget;
   ``picompile report --html``.
2. ``picompile serve PLAN --port 0 --once`` as one process (it holds the weights) and
   ``picompile client PLAN.client.piplan`` as another (it holds the input and the secret key;
   its plan has no weights): the digit goes out encrypted, the prediction comes back encrypted.
3. The same digit through the hybrid protocol (BFV linear layers + two-party shares) with Flash
   quadratics: client and server only, no dealer.

It prints, per protocol, the decrypted prediction next to the label and onnxruntime's, the
latency, the bytes each way and the key sizes. Exit status 1 if a prediction differs from
onnxruntime's.

    .venv/bin/python examples/demo.py [--out build/demo] [--index 0]
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
MODEL = HERE / "cnn_digits.onnx"
sys.path.insert(0, str(HERE))

import digits  # noqa: E402


def picompile_command() -> list[str]:
    """The ``picompile`` entry point of this interpreter's environment (else on PATH)."""
    beside = Path(sys.executable).parent / "picompile"
    found = str(beside) if beside.exists() else shutil.which("picompile")
    if found is None:
        raise SystemExit("error: the picompile command is not installed (pip install -e .)")
    return [found]


def run(arguments: list[str], label: str) -> str:
    """Run one picompile command; its stdout, or exit with its error."""
    command = picompile_command() + arguments
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        raise SystemExit(f"error: {label} failed: {result.stderr.strip() or result.stdout}")
    return result.stdout


def serve_and_query(plan: Path, client_plan: Path, digit: Path, stats: Path,
                    timeout: float = 300.0) -> dict:
    """``picompile serve PLAN --port 0 --once`` in one process, ``picompile client`` in
    another; returns the client's statistics."""
    server = subprocess.Popen(picompile_command() + ["serve", str(plan), "--port", "0",
                                                     "--once", "--timeout", str(timeout)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = server.stdout.readline()
        match = re.search(r"listening on ([\w.]+):(\d+)", line)
        if match is None:
            raise SystemExit(f"error: the server did not start: {line}{server.stderr.read()}")
        address = f"{match.group(1)}:{match.group(2)}"
        print(f"    server  (pid {server.pid}): picompile serve {plan.name} --port 0 --once "
              f"→ listening on {address}")
        print(f"    client: picompile client {client_plan.name} --connect {address} "
              f"--input {digit.name}")
        run(["client", str(client_plan), "--connect", address, "--input", str(digit),
             "--stats", str(stats), "--timeout", str(timeout)], "the client")
        served, _ = server.communicate(timeout=timeout)
        print(f"    server: {served.strip().splitlines()[-1]} (keys received and loaded included)")
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()
    return json.loads(stats.read_text())


def mib(count: float) -> str:
    return f"{count / 2**20:.1f} MiB"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="build/demo", help="folder for plans and reports")
    parser.add_argument("--index", type=int, default=0, help="which test digit")
    args = parser.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()

    data = digits.load_split()
    x = digits.to_model_input(data["test_images"][args.index:args.index + 1], "img8")
    label = int(data["test_labels"][args.index])
    digit = out / "digit.npy"
    np.save(digit, x)
    calib = out / "calib.npz"
    np.savez(calib, input=digits.to_model_input(data["calib_images"], "img8"),
             labels=data["calib_labels"])
    import onnxruntime as ort

    session = ort.InferenceSession(str(MODEL), providers=["CPUExecutionProvider"])
    reference = int(np.argmax(session.run(None, {session.get_inputs()[0].name: x})[0]))
    print(f"picompile demo: private inference of test digit #{args.index} (label {label}) "
          f"with {MODEL.name}; onnxruntime predicts {reference}\n")

    protocols = [
        ("FHE: CKKS 128-bit, layerwise polynomial activations (accuracy budget 1 point)",
         "cnn_fhe", ["--accuracy-budget", "1"]),
        ("hybrid: BFV 128-bit linear layers + two-party shares, Flash quadratics (no dealer)",
         "cnn_hybrid", ["--protocol", "hybrid", "--method", "quad", "--degree", "2",
                        "--quadratic-protocol", "flash"]),
    ]
    agree = True
    for number, (title, name, options) in enumerate(protocols, start=1):
        print(f"[{number}/{len(protocols)}] {title}")
        plan = out / f"{name}.piplan"
        start = time.perf_counter()
        run(["compile", str(MODEL), "--calib", str(calib), "-o", str(plan)] + options,
            "compile")
        print(f"    picompile compile {MODEL.name} --calib calib.npz {' '.join(options)} "
              f"→ {plan.name} ({time.perf_counter() - start:.1f} s)")
        if number == 1:
            html = out / f"{name}.html"
            run(["report", str(plan), "--html", str(html)], "report")
            print(f"    report: {html}")
        stats = serve_and_query(plan, out / f"{name}.client.piplan", digit,
                                out / f"{name}.stats.json")
        prediction = int(stats["prediction"][0])
        agree &= prediction == reference
        mark = "✔" if prediction == reference else "✘ differs from onnxruntime"
        print(f"    decrypted prediction {prediction} (label {label}, onnxruntime {reference})"
              f" {mark}")
        if stats["protocol"] == "fhe":
            keys = stats["key_bytes"]
            sent, received = stats["bytes_sent"] - keys, stats["bytes_received"]
            print(f"    {stats['seconds']:.1f} s on the client, key generation included; "
                  f"client → server {mib(sent)} of ciphertexts + {mib(keys)} of public keys "
                  f"(once per session); server → client {mib(received)}")
        else:
            online = stats["online_bytes"]
            offline = stats["offline_bytes"]
            keys = stats["setup_key_bytes"]
            print(f"    {stats['seconds']:.1f} s on the client, key generation included; "
                  f"online {online / 1024:.1f} KiB in {stats['online_flights']:.0f} flights, "
                  f"{stats['online_seconds'] * 1000:.0f} ms; offline {mib(offline)}; public "
                  f"keys {mib(keys)} (once per session); dealer bytes "
                  f"{stats['dealer_bytes']:.0f}")
        print()
    print(f"done in {time.perf_counter() - started:.0f} s: both encrypted predictions "
          + ("equal onnxruntime's" if agree else "do NOT all equal onnxruntime's")
          + f"; plans and the report are in {out}/")
    return 0 if agree else 1


if __name__ == "__main__":
    sys.exit(main())
