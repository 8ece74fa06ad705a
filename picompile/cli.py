"""The ``picompile`` command line: compile, finetune, report, run, serve/client/dealer,
calibrate-costs.

Reads: command-line arguments, ONNX models, plan files, ``.npy``/``.npz`` inputs.
Writes: plan files, reports and outputs on stdout, ``.npy`` outputs and client statistics
(JSON), each atomically.

Every user-facing error is one line on stderr (``error: ...``) and a non-zero exit code; no
tracebacks unless ``PICOMPILE_DEBUG=1``.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from picompile.atomic_files import atomic_write
from picompile.errors import InputError, PicompileError
from picompile.listening import announcement


def _load_array(path: str) -> np.ndarray | dict[str, np.ndarray]:
    from picompile.numpy_files import read_numpy_file

    return read_numpy_file(path, InputError, "input file")


def _numeric(value: object) -> np.ndarray | None:
    """An output as a float array (ZipMap's list of {label: probability} included)."""
    if isinstance(value, list) and value and isinstance(value[0], dict):
        return np.array([list(row.values()) for row in value], dtype=np.float64)
    if isinstance(value, np.ndarray) and np.issubdtype(value.dtype, np.number):
        return value.astype(np.float64)
    return None


def cmd_compile(args: argparse.Namespace) -> int:
    from rich.console import Console

    from picompile.pipeline import CompileOptions, compile_model

    console = Console(stderr=True)
    options = CompileOptions(
        protocol=args.protocol, calib=args.calib, method=args.method, degree=args.degree,
        max_degree=args.max_degree, accuracy_budget=args.accuracy_budget,
        relu_budget=args.relu_budget, quadratic_protocol=args.quadratic_protocol,
        correlations=args.correlations, insecure_test_params=args.insecure_test_params,
        network=args.network, allow_budget_miss=args.allow_budget_miss,
        activation_form=args.activation_form, range_margin=args.range_margin, batch=args.batch,
        schedule=args.schedule, scaling_bits=args.scaling_bits, slots=args.slots)
    with console.status("compiling") as status:
        plan = compile_model(args.model, options,
                             on_pass=lambda name: status.update(f"compiling: {name}"))
    output = Path(args.output) if args.output else Path(args.model).with_suffix(".piplan")
    plan.save(output)
    total = sum(r["seconds"] for r in plan.passes)
    print(f"wrote {output}: {len(plan.steps)} steps, compiled in {total:.2f} s")
    choice = plan.analysis.get("protocol_choice")
    if choice:
        print(f"--protocol auto on {choice['network']}: {choice['reason']} "
              "(`picompile report` shows the comparison)")
    client_path = output.with_name(output.stem + ".client" + output.suffix)
    if plan.protocol == "hybrid":
        from picompile.runtime.hybrid import client_view

        client_view(plan).save(client_path)
        print(f"wrote {client_path}: the client's plan (no weights) for `picompile client`")
    elif plan.ckks is not None and plan.ckks.runnable:
        from picompile.runtime.fhe_session import fhe_client_view

        fhe_client_view(plan).save(client_path)
        print(f"wrote {client_path}: the client's plan (no weights) for `picompile client`")
    return 0


def cmd_finetune(args: argparse.Namespace) -> int:
    from picompile.finetuning.stage import finetune_model

    output = Path(args.output) if args.output else Path(args.model).with_suffix(
        ".finetuned.onnx")
    result = finetune_model(args.model, args.data, output, method=args.method,
                            degree=args.degree, epochs=args.epochs, batch_size=args.batch_size,
                            lr=args.lr, seed=args.seed, relu_budget=args.relu_budget,
                            schedule=args.schedule, resume=args.resume,
                            progress=not args.quiet)
    summary = result.summary
    print(f"wrote {output}: {summary['method']} degree {summary['degree']}, "
          f"{summary['epochs']} epochs in {summary['seconds']:.1f} s; held-out accuracy "
          f"{summary['accuracy_before']:.2f} % -> {summary['accuracy_after']:.2f} % "
          f"(ReLU model {summary['relu_accuracy']:.2f} %)"
          + (f"; {summary['relus_kept']} of {summary['relus_total']} ReLUs kept exact "
             f"(budget {summary['relu_budget_count']})" if "relus_kept" in summary else ""))
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from picompile.plan import Plan
    from picompile.report import render_text

    plan = Plan.load(args.plan)
    profile = None
    if args.profile:
        from picompile.profile import load_profile

        profile = load_profile(args.profile, plan)
    print(render_text(plan, width=args.width, profile=profile))
    if args.html:
        from picompile.report import write_html

        print(f"wrote {write_html(plan, args.html, profile=profile)}")
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from picompile.plan import Plan
    from picompile.runtime import run_plan
    from picompile.runtime.backend import normalize_inputs

    plan = Plan.load(args.plan)
    x = _load_array(args.input)
    if args.backend in ("ckks", "hybrid"):
        from rich.progress import Progress

        with Progress(transient=True) as bar:
            task = bar.add_task("encrypted run", total=None)

            def progress(description: str, done: int, total: int) -> None:
                bar.update(task, description=description, completed=done, total=total)

            options = {"correlations": args.correlations} if args.backend == "hybrid" else {}
            result = run_plan(plan, x, backend=args.backend, progress=progress, **options)
    else:
        result = run_plan(plan, x, backend=args.backend, precision=args.precision)
    if args.profile:
        from picompile.profile import write_profile

        samples = next(iter(result.server_outputs.values())).shape[0]
        print(f"wrote {write_profile(plan, result, samples, args.profile)}")
    np.set_printoptions(precision=6, suppress=True, linewidth=120)
    for name, value in result.outputs.items():
        print(f"{name}: {value if not isinstance(value, np.ndarray) else np.asarray(value)}")
    print(f"backend {result.backend}: {result.seconds * 1000:.2f} ms")
    _print_communication(result.communication)
    if args.output:
        output = result.server_outputs[plan.outputs[0].name]
        atomic_write(args.output, lambda file: np.save(file, output))
        print(f"wrote {args.output}")
    if args.reference:
        from picompile.reference import reference_outputs

        expected = reference_outputs(Path(args.reference), normalize_inputs(plan, x))
        differences = []
        for name, value in result.outputs.items():
            got, want = _numeric(value), _numeric(expected[name])
            if got is not None and want is not None and got.shape == want.shape:
                diff = float(np.max(np.abs(got - want))) if got.size else 0.0
                differences.append(diff)
                print(f"max |difference| to onnxruntime on {name}: {diff:.3e}")
        if not differences:
            print("no numeric outputs to compare with onnxruntime")
    return 0


def _print_communication(stats: dict) -> None:
    if not stats:
        return
    print(f"per inference: online {stats['online_bytes'] / 1024:.1f} KiB in "
          f"{stats['online_flights']:.0f} flights, {stats['online_seconds'] * 1000:.1f} ms; "
          f"offline {stats['offline_bytes'] / 2**20:.1f} MiB, "
          f"{stats['offline_seconds']:.2f} s; key generation {stats['keygen_seconds']:.2f} s")
    if stats.get("ot_bytes"):
        print(f"correlations: two-party (OT), {stats['ot_bytes'] / 2**20:.2f} MiB and "
              f"{stats['correlation_seconds']:.2f} s of the offline phase")
    elif stats.get("dealer_bytes"):
        print(f"correlations: dealer, {stats['dealer_bytes'] / 2**20:.2f} MiB (this party's link)")


def cmd_serve(args: argparse.Namespace) -> int:
    from picompile.errors import OptionError
    from picompile.plan import Plan

    plan = Plan.load(args.plan)

    def listening(port: int) -> None:
        print(announcement(args.host, port), flush=True)

    def served(count: int, seconds: float) -> None:
        print(f"served {count} inference(s) in {seconds:.2f} s", flush=True)

    if plan.protocol == "fhe" and args.dealer:
        raise OptionError("FHE plans need no dealer: drop --dealer")
    if args.ray is not None:
        return _serve_ray(args, plan, listening, served)
    if args.workers:
        raise OptionError("--workers needs --ray (the workers are Ray actors)")
    if plan.protocol == "fhe":
        from picompile.runtime import fhe_session

        fhe_session.serve(plan, args.port, host=args.host, once=args.once,
                          timeout=args.timeout, on_listen=listening, on_session=served)
        return 0
    from picompile.runtime.hybrid import serve

    serve(plan, args.port, host=args.host, dealer=args.dealer,
          correlations=args.correlations, once=args.once,
          timeout=args.timeout, on_listen=listening, on_session=served)
    return 0


def _serve_ray(args: argparse.Namespace, plan, listening, served) -> int:
    """``serve --ray``: each session in a Ray actor requesting the plan's predicted memory."""
    from picompile.cost import plan_server_memory_bytes
    from picompile.errors import OptionError
    from picompile.runtime.cluster.relay import ClusterOptions, serve_ray
    from picompile.runtime.cluster.spec import SessionSpec

    if args.workers < 0:
        raise OptionError("--workers must be 0 or more")
    if args.workers and plan.protocol != "fhe":
        raise OptionError("--workers splits CKKS linear steps: it needs an FHE plan")
    predicted = plan_server_memory_bytes(plan)
    memory = int(args.session_memory * 2**30) if args.session_memory is not None else predicted
    spec = SessionSpec(timeout=args.timeout, dealer=args.dealer,
                       correlations=args.correlations, workers=args.workers,
                       worker_memory=memory if args.workers else 0,
                       worker_cpus=args.session_cpus)
    options = ClusterOptions(address=None if args.ray == "local" else args.ray,
                             session_memory=memory, session_cpus=args.session_cpus)
    where = "a local Ray" if options.address is None else f"the Ray cluster at {args.ray}"
    print(f"sessions run as Ray actors on {where}, {memory / 2**30:.2f} GiB each"
          + (f", {args.workers} giant-step workers per session" if args.workers else ""),
          flush=True)

    def refused(reason: str) -> None:
        print(f"refused a client: {reason}", flush=True)

    def failed(reason: str) -> None:
        print(f"a session ended with an error: {reason}", flush=True)

    serve_ray(plan, args.port, spec, options, host=args.host, once=args.once,
              timeout=args.timeout, on_listen=listening, on_session=served, on_refuse=refused,
              on_failure=failed)
    return 0


def cmd_client(args: argparse.Namespace) -> int:
    from picompile.plan import Plan
    from picompile.runtime.backend import normalize_inputs

    plan = Plan.load(args.plan)
    inputs = normalize_inputs(plan, _load_array(args.input))
    if plan.protocol == "fhe":
        from picompile.runtime.fhe_session import client_run as fhe_client_run

        result = fhe_client_run(plan, args.connect, inputs, timeout=args.timeout)
    else:
        from picompile.runtime.hybrid import client_run

        result = client_run(plan, args.connect, next(iter(inputs.values())),
                            dealer=args.dealer, correlations=args.correlations,
                            timeout=args.timeout)
    server_output = result.server_outputs[plan.outputs[0].name]
    if plan.head is not None:
        from picompile.runtime.client_head import run_head

        outputs = run_head(plan, server_output)
    else:
        outputs = {plan.outputs[0].name: server_output}
    np.set_printoptions(precision=6, suppress=True, linewidth=120)
    for name, value in outputs.items():
        print(f"{name}: {value}")
    if plan.protocol == "fhe":
        communication = result.communication
        print(f"FHE over TCP: {result.seconds:.2f} s (key generation included); sent "
              f"{communication['bytes_sent'] / 2**20:.1f} MiB (public keys "
              f"{communication['key_bytes'] / 2**20:.1f} MiB), received "
              f"{communication['bytes_received'] / 2**20:.1f} MiB")
    else:
        print(f"hybrid over TCP: {result.seconds * 1000:.2f} ms")
        _print_communication(result.communication)
    if args.output:
        atomic_write(args.output, lambda file: np.save(file, server_output))
        print(f"wrote {args.output}")
    if args.stats:
        import json

        stats = {"protocol": plan.protocol, "seconds": result.seconds,
                 "prediction": np.argmax(server_output.reshape(len(server_output), -1),
                                         axis=1).tolist(),
                 **{key: float(value) for key, value in result.communication.items()}}
        atomic_write(args.stats, lambda file: file.write(json.dumps(stats, indent=1).encode()))
        print(f"wrote {args.stats}")
    return 0


def cmd_dealer(args: argparse.Namespace) -> int:
    from picompile.runtime.hybrid import dealer_service

    def listening(port: int) -> None:
        print(announcement(args.host, port, "dealer"), flush=True)

    def finished(requests: int, nbytes: int) -> None:
        print(f"dealer session: {requests} requests, {nbytes} bytes", flush=True)

    dealer_service(args.port, host=args.host, sessions=1 if args.once else None,
                   timeout=args.timeout, on_listen=listening, on_session_end=finished)
    return 0


def cmd_calibrate_costs(args: argparse.Namespace) -> int:
    import json

    from rich.console import Console

    from picompile.cost import cost_cache_path
    from picompile.runtime.cost_measurement import measure_cost_table

    console = Console(stderr=True)
    with console.status("measuring OpenFHE operation costs") as status:
        table = measure_cost_table(args.ring_dimensions, depth=args.depth,
                                   repeats=args.repeats, progress=status.update)
    output = Path(args.output) if args.output else cost_cache_path()
    output.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(output, lambda file: file.write(json.dumps(table, indent=1).encode()))
    for ring, costs in table["ring_dimensions"].items():
        print(f"N={ring}: rotate {costs['rotate'] * 1e3:.1f} ms, hoisted rotate "
              f"{costs['hoisted_rotate'] * 1e3:.1f} ms, diagonal {costs['diagonal'] * 1e3:.2f} ms, "
              f"Chebyshev degree 7 {costs['chebyshev']['7'] * 1e3:.0f} ms")
    hybrid = table["hybrid"]
    print(f"hybrid (BFV N={hybrid['ring_dimension']}, per prime): encrypt "
          f"{hybrid['encrypt'] * 1e3:.1f} ms, hoisted rotate {hybrid['hoisted_rotate'] * 1e3:.1f} "
          f"ms, diagonal {hybrid['diagonal'] * 1e3:.2f} ms; secure ReLU "
          f"{hybrid['relu'] * 1e9:.0f} ns per element")
    print(f"wrote {output}; compiles now predict step times from it")
    return 0


def _timeout_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--timeout", type=float, default=300.0,
                        help="seconds to wait for any message (default 300)")


def _correlations_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--correlations", choices=["two-party", "dealer"],
                        help="hybrid: MPC correlations from OT between client and server "
                             "(two-party) or from a trusted dealer (dealer); default: the "
                             "plan's (compile --correlations, two-party unless set)")


def _listen_options(parser: argparse.ArgumentParser) -> None:
    """--port, --host, --once and --timeout of a TCP service (serve, dealer)."""
    parser.add_argument("--port", type=int, required=True, help="TCP port (0: any free)")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on")
    parser.add_argument("--once", action="store_true", help="serve one session and exit")
    _timeout_option(parser)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="picompile",
        description="Compile trained ONNX models into private-inference plans and run them.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    compile_parser = sub.add_parser("compile", help="compile an ONNX model into a .piplan",
                                    description="Compile an ONNX model into a plan file.")
    compile_parser.add_argument("model", help="the ONNX model file")
    compile_parser.add_argument("-o", "--output", help="plan file (default: MODEL.piplan)")
    compile_parser.add_argument("--calib", help="calibration inputs (.npy, or .npz by input "
                                "name with optional 'labels'); enables polynomial activations")
    compile_parser.add_argument("--protocol", choices=["fhe", "hybrid", "auto"], default="fhe",
                                help="FHE-only (CKKS) or hybrid HE+MPC plan; auto: compile "
                                     "both and keep the one with the lower predicted online "
                                     "latency on --network")
    compile_parser.add_argument("--allow-budget-miss", action="store_true",
                                help="write the plan even when the degree search cannot meet "
                                     "--accuracy-budget (the reports flag it); default: fail")
    compile_parser.add_argument("--network", metavar="BANDWIDTH,RTT",
                                help="the client-server link --protocol auto assumes, e.g. "
                                     "1Gbit,0.5ms or 10Mbit,100ms (default 100Mbit,20ms)")
    compile_parser.add_argument("--method", default="wls",
                                choices=["wls", "minimax", "chebyshev", "hermite", "quad"],
                                help="polynomial approximation method (default: wls, OLA)")
    compile_parser.add_argument("--degree", type=int,
                                help="one uniform polynomial degree for every activation")
    compile_parser.add_argument("--max-degree", type=int, default=31,
                                help="largest degree the layerwise search may pick")
    compile_parser.add_argument("--accuracy-budget", type=float, metavar="POINTS",
                                help="allowed top-1 accuracy drop in points (layerwise degrees "
                                "by dynamic programming; default 1 when --calib is given)")
    compile_parser.add_argument("--activation-form", default="auto",
                                choices=["auto", "polynomial", "composite"],
                                help="FHE ReLUs: one polynomial per layer, a composite "
                                     "sign-based form x(1+sign x)/2 evaluated across "
                                     "bootstraps, or auto (the degree search picks per layer "
                                     "by predicted cost under the accuracy budget)")
    compile_parser.add_argument("--range-margin", type=float, default=0.25, metavar="FRAC",
                                help="composite ReLUs: the calibrated max |x| widened by this "
                                     "fraction; inputs beyond it are the documented failure "
                                     "mode (default 0.25)")
    compile_parser.add_argument("--scaling-bits", type=int, default=None, choices=[45, 46, 50],
                                help="bootstrapped FHE plans: the CKKS scaling modulus (45: 7 "
                                     "levels between bootstraps, refresh error 0.16; 46: 6, "
                                     "0.06; 50: 4 levels, 0.008); default: the fewest "
                                     "bootstraps whose simulated precision keeps top-1")
    compile_parser.add_argument("--schedule", default="auto",
                                choices=["auto", "bootstrapped", "leveled"],
                                help="FHE: bootstrapping or one leveled context for the whole "
                                     "depth; auto compiles a deep degree-2 plan both ways and "
                                     "keeps the lower predicted latency that fits in memory")
    compile_parser.add_argument("--slots", type=int, default=None, metavar="S",
                                help="FHE: at most S slots per ciphertext (a power of two); "
                                     "tensors larger than a ciphertext span several (default: "
                                     "the ring's, 16384 when bootstrapping)")
    compile_parser.add_argument("--batch", type=int, default=1, metavar="B",
                                help="FHE: B client inputs share one ciphertext (0: as many as "
                                     "fit; run/client then encrypt inputs B at a time)")
    compile_parser.add_argument("--relu-budget", type=float, metavar="N|FRAC",
                                help="ReLUs kept exact (hybrid): a count, or a fraction < 1")
    compile_parser.add_argument("--quadratic-protocol", choices=["beaver", "flash"],
                                default="beaver",
                                help="hybrid: degree-2 activations by a Beaver square (dealer, "
                                     "cheapest online) or Flash's no-offline HE protocol fused "
                                     "with the next linear layer")
    compile_parser.add_argument("--correlations", choices=["two-party", "dealer"],
                                default="two-party",
                                help="hybrid: who produces the MPC correlations (ReLU, MaxPool, "
                                     "Beaver): two-party = oblivious transfer between client "
                                     "and server, no third party (default); dealer = a third "
                                     "party trusted not to collude (faster offline)")
    compile_parser.add_argument("--insecure-test-params", action="store_true",
                                help="allow parameters below 128-bit security (tests only)")
    compile_parser.set_defaults(handler=cmd_compile)

    finetune_parser = sub.add_parser(
        "finetune", help="train low-degree polynomial activations into a model",
        description="Replace each ReLU by a trainable polynomial (initialised from the "
                    "calibrated fit), train weights and coefficients by knowledge distillation "
                    "from the original model plus cross-entropy, replacing activations "
                    "progressively from the input, and write an ONNX model of standard ops "
                    "that `picompile compile` reads with the polynomials kept exactly.")
    finetune_parser.add_argument("model", help="the ONNX model file")
    finetune_parser.add_argument("--data", required=True, metavar="TRAIN.npz",
                                 help="training data: 'input' and integer 'labels' (the "
                                      "--calib format); 10 %% is held out for the accuracy")
    finetune_parser.add_argument("--method", choices=["hermite", "quad", "wls"], default="quad",
                                 help="hermite: AESPA He_n/sqrt(n!) basis, per-channel "
                                      "normalization; quad: Flash a·x²+b·x+c from x²+x; wls: "
                                      "the OLA/DaPa fit at --degree (default: quad)")
    finetune_parser.add_argument("--degree", type=int, default=2,
                                 help="polynomial degree (default 2)")
    finetune_parser.add_argument("--epochs", type=int, default=1, help="epochs (default 1)")
    finetune_parser.add_argument("--batch-size", type=int, default=32,
                                 help="batch size (default 32)")
    finetune_parser.add_argument("--lr", type=float, default=1e-3,
                                 help="Adam learning rate (default 1e-3; halved on a "
                                      "non-finite loss)")
    finetune_parser.add_argument("--seed", type=int, default=0,
                                 help="seed of the split and batch order (repeatable runs)")
    finetune_parser.add_argument("--relu-budget", type=float, metavar="N|FRAC",
                                 help="AutoReP: scalar ReLUs kept exact (per-channel indicators "
                                      "trained while fine-tuning): a count, or a fraction < 1 "
                                      "of all of them (the rule of compile --relu-budget); the "
                                      "model then compiles for --protocol hybrid")
    finetune_parser.add_argument("--schedule", choices=["cosine", "constant"],
                                 default="cosine",
                                 help="learning-rate schedule (default: cosine decay to 0)")
    finetune_parser.add_argument("--resume", action="store_true",
                                 help="continue an interrupted run from OUTPUT.checkpoint.npz "
                                      "(weights, coefficients, masks; epochs already done are "
                                      "skipped, Adam's moments restart)")
    finetune_parser.add_argument("-o", "--output",
                                 help="the fine-tuned ONNX model (default: "
                                      "MODEL.finetuned.onnx); a checkpoint OUTPUT.checkpoint.npz "
                                      "is kept at every epoch end and on interruption")
    finetune_parser.add_argument("--quiet", action="store_true", help="no progress bar")
    finetune_parser.set_defaults(handler=cmd_finetune)

    report_parser = sub.add_parser("report", help="print a plan's report",
                                   description="Print a readable report of a plan file.")
    report_parser.add_argument("plan", help="the .piplan file")
    report_parser.add_argument("--width", type=int, default=160, help="text width")
    report_parser.add_argument("--html", metavar="OUT.html",
                               help="also write a self-contained HTML report (plots inline)")
    report_parser.add_argument("--profile", metavar="RUN.json",
                               help="show predicted vs measured time per step "
                                    "(from `picompile run --profile`)")
    report_parser.set_defaults(handler=cmd_report)

    run_parser = sub.add_parser("run", help="run a plan on an input",
                                description="Run a plan on an input (.npy, or .npz by name).")
    run_parser.add_argument("plan", help="the .piplan file")
    run_parser.add_argument("--input", required=True, help="input .npy (or .npz by input name)")
    run_parser.add_argument("--backend", default="plain", choices=["plain", "ckks", "hybrid"],
                            help="execution backend (hybrid: client, server and dealer in "
                                 "this process, with time and communication printed)")
    _correlations_option(run_parser)
    run_parser.add_argument("--precision", default="float64", choices=["float64", "float32"],
                            help="plain backend arithmetic (float32: onnxruntime's precision, "
                                 "faster on large models; float64: the reference)")
    run_parser.add_argument("--output", help="save the (decrypted) server output as .npy")
    run_parser.add_argument("--reference", help="ONNX model to compare with (onnxruntime)")
    run_parser.add_argument("--profile", metavar="RUN.json",
                            help="write measured per-step times (see report --profile)")
    run_parser.set_defaults(handler=cmd_run)

    serve_parser = sub.add_parser(
        "serve", help="serve an FHE or hybrid plan to clients over TCP",
        description="Hold the model's weights and answer clients over TCP: FHE plans evaluate "
                    "the client's CKKS ciphertexts with its public keys (no secret key on the "
                    "server); hybrid plans run the HE + MPC protocol.")
    serve_parser.add_argument("plan", help="the full .piplan file (FHE or hybrid)")
    _listen_options(serve_parser)
    serve_parser.add_argument("--dealer", metavar="HOST:PORT",
                              help="the dealer service (plans with exact ReLU/MaxPool or "
                                   "Beaver polynomials need one with --correlations dealer)")
    _correlations_option(serve_parser)
    serve_parser.add_argument("--ray", nargs="?", const="local", metavar="ADDRESS",
                              help="serve clients concurrently, each session in a Ray actor "
                                   "placed where its memory fits (ADDRESS: a running Ray "
                                   "cluster; none: a local Ray). Needs picompile[cluster]")
    serve_parser.add_argument("--workers", type=int, default=0,
                              help="with --ray, FHE plans: Ray workers per session that "
                                   "evaluate the giant steps of linear steps in parallel")
    serve_parser.add_argument("--session-memory", type=float, metavar="GIB",
                              help="with --ray: memory each session (and worker) requests "
                                   "(default: the plan's predicted server memory)")
    serve_parser.add_argument("--session-cpus", type=float, default=1.0,
                              help="with --ray: logical CPUs each session (and worker) "
                                   "requests (default 1)")
    serve_parser.set_defaults(handler=cmd_serve)

    client_parser = sub.add_parser(
        "client", help="run an FHE or hybrid plan against a server",
        description="Private inference as the client: the input never leaves in the clear.")
    client_parser.add_argument("plan", help="the client's plan (X.client.piplan, written by "
                               "compile; a full plan works too, its weights are not used)")
    client_parser.add_argument("--connect", required=True, metavar="HOST:PORT",
                               help="the server's address")
    client_parser.add_argument("--input", required=True, help="input .npy (or .npz by name)")
    client_parser.add_argument("--dealer", metavar="HOST:PORT",
                               help="the dealer service (with --correlations dealer)")
    _correlations_option(client_parser)
    client_parser.add_argument("--output", help="save the output (before the head) as .npy")
    client_parser.add_argument("--stats", metavar="STATS.json",
                               help="write the time, bytes each way, key bytes and top-1 "
                                    "prediction as JSON")
    _timeout_option(client_parser)
    client_parser.set_defaults(handler=cmd_client)

    dealer_parser = sub.add_parser(
        "dealer", help="run the trusted dealer of the hybrid protocol's offline phase",
        description="Hand out Beaver, AND and bit correlations to client/server pairs.")
    _listen_options(dealer_parser)
    dealer_parser.set_defaults(handler=cmd_dealer)
    costs_parser = sub.add_parser(
        "calibrate-costs", help="measure OpenFHE operation costs on this machine",
        description="Measure CKKS operation costs (OpenFHE microbenchmarks per ring dimension) "
                    "and cache them for the cost pass.")
    costs_parser.add_argument("--ring-dimensions", type=int, nargs="+", default=[4096, 32768],
                              help="ring dimensions to measure (default: 4096 32768)")
    costs_parser.add_argument("--depth", type=int, default=11, help="chain depth measured at")
    costs_parser.add_argument("--repeats", type=int, default=5, help="repetitions (median)")
    costs_parser.add_argument("--output", help="where to write (default: the user cache)")
    costs_parser.set_defaults(handler=cmd_calibrate_costs)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.handler(args)
    except PicompileError as exc:
        if os.environ.get("PICOMPILE_DEBUG"):
            raise
        print("error: " + " ".join(str(exc).split()), file=sys.stderr)
        return exc.exit_code
    except BrokenPipeError:  # e.g. `picompile report X | head`
        return 0
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
