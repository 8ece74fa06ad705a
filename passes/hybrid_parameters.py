"""hybrid_parameters — fixed-point bits, BFV primes and per-step protocols of a hybrid plan.

Reads: the approximated IR (protocol ``hybrid``), the calibration inputs (value ranges of every
tensor are measured by running the graph on them), ``--insecure-test-params`` (ignored: BFV
parameters are 128-bit at no measurable extra cost here).
Writes: ``context.analysis["bfv"]`` — plaintext primes, ring dimension, slots, fractional bits
f, statistical parameter sigma, security level, and the worst per-step exponents; and on each
node ``meta["hybrid"]``: the step's protocol (``he_linear``, ``relu``, ``beaver_polynomial``,
``flash_quadratic`` — fused into the next linear step or standalone —, ``max_pool``,
``local``), and for HE linear steps the weight bits ``weight_bits`` (weights are rounded to
multiples of 2^-weight_bits), the input's bits ``input_bits`` (|a|·2^f < 2^bits),
the output's bits ``output_bits`` (|W·a + b|·2^(f+weight_bits) < 2^bits), ``sigma_hide``
(62 − input_bits: the reshare mask hides a + m within 2^-sigma_hide) and ``sigma_correct``
(log2 T − output_bits: the mask-and-lift wraps with probability below 2^-sigma_correct), plus
the predicted online/offline bytes and rounds.

Choices (docs/protocol.md §6): two 50-bit primes (T ≈ 2^100, room for 60-bit outputs at
sigma 40); f is the largest value ≤ 16 with sigma_hide ≥ 40 at every reshare and Beaver
products below 2^40 (SecureML truncation fails with probability below 2^-24 per element);
weight bits put the largest weight below 2^24 (capped at 20 fractional bits). Ranges carry a
safety factor of 2 over the calibrated maxima.
"""

from __future__ import annotations

import math

import numpy as np

from picompile.approx.basis import chebyshev_to_power
from picompile.errors import OptionError, UnsupportedOpError
from picompile.ir import Graph, Node, Value
from picompile.plan.ops import ACTIVATION_OPS, LOCAL_OPS, PUBLIC_MATRIX_OPS, SLOT_MATRIX_OPS
from picompile.runtime.interface import bfv_context_shape, mpc_cost, plaintext_primes
from picompile.simulate import GraphSimulator

NAME = "hybrid_parameters"
SIGMA = 40
PRIME_COUNT = 2
MASK_BITS = 62  # reshare masks are uniform in [0, 2^62): a + m never wraps a signed 64-bit word
MAX_FRACTIONAL_BITS = 16
MIN_FRACTIONAL_BITS = 8
WEIGHT_MAGNITUDE_BITS = 24
MAX_WEIGHT_BITS = 20
BEAVER_PRODUCT_BITS = 40
FLASH_MAX_FRACTIONAL_BITS = 13   # Flash: outputs carry 2^(weight bits + coefficient bits + 2f)
COEFFICIENT_MAGNITUDE_BITS = 20
MAX_COEFFICIENT_BITS = 12
MIN_WEIGHT_BITS = 8
MIN_COEFFICIENT_BITS = 6
SAFETY = 2.0
MAX_BEAVER_DEGREE = 3
CALIBRATION_SAMPLES = 256


def _bits(magnitude: float) -> int:
    return max(1, math.ceil(math.log2(max(magnitude, 2.0 ** -30))))


def step_protocol(op: str, inputs: int, public: bool = False, name: str = "") -> str:
    if op in PUBLIC_MATRIX_OPS or (public and op in SLOT_MATRIX_OPS):
        return "local_linear"
    if op in SLOT_MATRIX_OPS:
        return "he_linear"
    if op == "Relu":
        return "relu"
    if op == "Polynomial":
        return "beaver_polynomial"
    if op == "MaxPool":
        return "max_pool"
    if op in LOCAL_OPS:
        return "local"
    where = f"step {name!r} ({op})" if name else op
    lowering = "" if op in ACTIVATION_OPS else f"{op} has no private-inference lowering (compile "\
        "without --calib for a plain-backend plan); "
    raise UnsupportedOpError(
        f"{where} cannot run in a hybrid plan: {lowering}supported are linear ops "
        f"({', '.join(sorted(SLOT_MATRIX_OPS))}), Add, Reshape, Relu, MaxPool and polynomials "
        "of degree ≤ 3 (compile with --degree 2)")


def split_strided_convolutions(graph: Graph) -> int:
    """Conv(stride s) → Conv(stride 1) then a public subsampling (a depthwise 1×1 Conv of ones
    with stride s, ``meta["public_matrix"]``). Under HE a stride-1 convolution has few
    generalized diagonals while a strided one has thousands; the subsampling is a public
    selection each party applies to its own share."""
    count = 0
    for node in graph.nodes():
        strides = node.attrs.get("strides", [])
        if node.op != "Conv" or all(s == 1 for s in strides) or node.meta.get("public_matrix"):
            continue
        weight = node.meta["weight"]
        out_shape = graph.shape(node.outputs[0])
        in_shape = graph.shape(node.inputs[0])
        rank = weight.ndim - 2
        pads, dilations = node.attrs["pads"], node.attrs["dilations"]
        dense = tuple(in_shape[2 + i] + pads[i] + pads[rank + i]
                      - dilations[i] * (weight.shape[2 + i] - 1) for i in range(rank))
        dense_name = graph.unique_name(node.outputs[0] + "_stride1")
        graph.add_value(Value(dense_name, (out_shape[0], out_shape[1]) + dense))
        original = node.outputs[0]
        node.attrs = {**node.attrs, "strides": [1] * rank}
        node.outputs = [dense_name]
        graph.update_node(node)
        channels = out_shape[1]
        graph.add_node(Node(
            graph.unique_name(node.name + "_subsample"), "Conv", [dense_name], [original],
            {"strides": list(strides), "pads": [0] * (2 * rank), "dilations": [1] * rank,
             "group": channels, "kernel_shape": [1] * rank},
            list(node.source),
            {"weight": np.ones((channels, 1) + (1,) * rank), "bias": np.zeros(channels),
             "public_matrix": True}))
        count += 1
    return count


def run(graph: Graph, context) -> list[str]:
    if context.calibration is None:
        raise OptionError("hybrid plans need --calib: fixed-point bits and plaintext moduli "
                          "come from the calibrated value ranges")
    for node in graph.nodes():  # refuse before simulating: one line naming the blocking step
        step_protocol(node.op, len(node.inputs), bool(node.meta.get("public_matrix")), node.name)
    split = split_strided_convolutions(graph)
    simulator = GraphSimulator(graph)
    plan = simulator.plan
    samples = context.calibration.subset(min(CALIBRATION_SAMPLES, context.calibration.size))
    trace = simulator.trace(samples.inputs)
    peak = {name: float(np.max(np.abs(v))) * SAFETY if np.size(v) else 1.0
            for name, v in trace.items()}
    diverged = [name for name, value in peak.items() if not math.isfinite(value)]
    if diverged:
        raise UnsupportedOpError(
            f"values diverge on the calibration data ({diverged[0]!r} reaches ±inf): the "
            "polynomial activations do not hold for this network; keep more ReLUs exact "
            "(--relu-budget) or use another method/degree")

    flash = context.options.quadratic_protocol == "flash"
    fused = flash_pairs(plan) if flash else {}
    standalone = flash_standalone(plan, fused) if flash else set()
    reshared, beaver_terms = [], []
    for step in plan.steps:
        if step.name in fused or step.name in standalone:
            reshared.append(peak[step.inputs[0]])  # Flash reshares the activation's input
            continue
        if step_protocol(step.op, len(step.inputs), bool(step.meta.get("public_matrix"))) == \
                "he_linear":
            reshared.append(peak[step.inputs[0]])
        if step.op == "Polynomial":
            coefficients = plan.param(step, "coefficients")
            degree = coefficients.shape[1] - 1
            if degree > MAX_BEAVER_DEGREE:
                raise UnsupportedOpError(
                    f"{step.name}: degree {degree} polynomial; hybrid plans evaluate degree ≤ "
                    f"{MAX_BEAVER_DEGREE} on shares (compile with --degree 2)")
            power = chebyshev_to_power(coefficients, plan.param(step, "interval"))
            x = peak[step.inputs[0]]
            beaver_terms.append(float(np.max(np.abs(power) * x ** np.arange(degree + 1))))
    f = FLASH_MAX_FRACTIONAL_BITS if fused or standalone else MAX_FRACTIONAL_BITS
    if reshared:
        f = min(f, MASK_BITS - SIGMA - _bits(max(reshared)))
    if beaver_terms:
        f = min(f, (BEAVER_PRODUCT_BITS - _bits(max(beaver_terms))) // 2)
    if f < MIN_FRACTIONAL_BITS:
        raise UnsupportedOpError(
            f"values up to {max(reshared + beaver_terms):.3g} leave only {f} fractional bits "
            f"at sigma {SIGMA}; the hybrid protocol needs at least {MIN_FRACTIONAL_BITS}")

    primes = plaintext_primes(PRIME_COUNT)
    modulus_bits = sum(math.log2(t) for t in primes)
    dimension, ciphertext_modulus_bits = bfv_context_shape(primes[0])
    slots = dimension // 2
    ciphertext_bytes = 2 * dimension * 8 * math.ceil(ciphertext_modulus_bits / 60)  # 2 polys
    worst_hide, worst_correct = math.inf, math.inf
    online_bytes = offline_bytes = online_rounds = correlation_requests = 0
    correlations = context.options.correlations
    fused_into = {linear: activation for activation, linear in fused.items()}
    flash_coefficient_bits: dict[str, int] = {}
    for step in plan.steps:
        node = graph.node(step.name)
        protocol = step_protocol(step.op, len(step.inputs), bool(step.meta.get("public_matrix")))
        info: dict = {"protocol": protocol}
        n_in = int(np.prod(plan.values[step.inputs[0]].shape))
        n_out = int(np.prod(plan.values[step.outputs[0]].shape))
        source = fused_into.get(step.name)
        if step.name in fused or step.name in standalone:
            power = chebyshev_to_power(plan.param(step, "coefficients"),
                                       plan.param(step, "interval"))
            coefficient_bits = min(MAX_COEFFICIENT_BITS, COEFFICIENT_MAGNITUDE_BITS
                                   - _bits(float(np.abs(power).max(initial=1e-9))))
            input_bits = _bits(peak[step.inputs[0]] * 2.0 ** f)
            info.update(protocol="flash_quadratic", fused_into=fused.get(step.name),
                        coefficient_bits=coefficient_bits, input_bits=input_bits,
                        sigma_hide=MASK_BITS - input_bits, online_bytes=8 * n_in,
                        online_rounds=1, offline_bytes=2 * PRIME_COUNT * ciphertext_bytes
                        * -(-n_in // slots), offline_rounds=1)
            if step.name in standalone:  # the server returns Enc(q(y) − r): the output's shares
                coefficient_bits = min(coefficient_bits, math.floor(modulus_bits) - SIGMA - 1
                                       - 2 * f - _bits(peak[step.outputs[0]]))
                if coefficient_bits < MIN_COEFFICIENT_BITS:
                    raise UnsupportedOpError(
                        f"{step.name}: Flash's quadratic leaves {coefficient_bits} coefficient "
                        f"bits in a {modulus_bits:.0f}-bit plaintext modulus; use "
                        "--quadratic-protocol beaver")
                output_bits = _bits(peak[step.outputs[0]] * 2.0 ** (coefficient_bits + 2 * f))
                info.update(coefficient_bits=coefficient_bits, output_bits=output_bits,
                            output_shift=coefficient_bits + f,
                            sigma_correct=round(modulus_bits - output_bits, 1),
                            online_bytes=8 * n_in + PRIME_COUNT * ciphertext_bytes
                            * -(-n_in // slots), online_rounds=1)
                worst_correct = min(worst_correct, info["sigma_correct"])
            worst_hide = min(worst_hide, info["sigma_hide"])
            flash_coefficient_bits[step.name] = coefficient_bits
        elif protocol == "he_linear":
            weights = np.abs(_matrix_values(plan, step))
            weight_bits = min(MAX_WEIGHT_BITS,
                              WEIGHT_MAGNITUDE_BITS - _bits(float(weights.max(initial=1e-9))))
            input_bits = _bits(peak[step.inputs[0]] * 2.0 ** f)
            scale_bits = f + (flash_coefficient_bits[source] + f if source else 0)
            if source:  # Flash: the output carries 2^(weight + coefficient bits + 2f)
                weight_bits = min(weight_bits, math.floor(modulus_bits) - SIGMA - 1 - scale_bits
                                  - _bits(peak[step.outputs[0]]))
                if weight_bits < MIN_WEIGHT_BITS:
                    raise UnsupportedOpError(
                        f"{step.name}: Flash's fused quadratic leaves {weight_bits} weight bits "
                        f"in a {modulus_bits:.0f}-bit plaintext modulus; use "
                        "--quadratic-protocol beaver")
            output_bits = _bits(peak[step.outputs[0]] * 2.0 ** (scale_bits + weight_bits))
            info.update(weight_bits=weight_bits, input_bits=input_bits, output_bits=output_bits,
                        sigma_correct=round(modulus_bits - output_bits, 1),
                        online_bytes=8 * n_in, online_rounds=1,
                        offline_bytes=PRIME_COUNT * ciphertext_bytes * (
                            -(-n_in // slots) - (-n_out // slots)), offline_rounds=2)
            if source:
                info.update(flash_from=source, online_bytes=PRIME_COUNT * ciphertext_bytes
                            * -(-n_out // slots), online_rounds=1, offline_bytes=0,
                            offline_rounds=0, output_shift=weight_bits
                            + flash_coefficient_bits[source] + f)
            else:
                info["sigma_hide"] = MASK_BITS - input_bits
                worst_hide = min(worst_hide, info["sigma_hide"])
            worst_correct = min(worst_correct, info["sigma_correct"])
        elif protocol in ("relu", "max_pool", "beaver_polynomial"):
            if protocol == "relu":
                cost = mpc_cost("relu", n_in, correlations)
            elif protocol == "max_pool":
                cost = mpc_cost("relu", n_out, correlations)
                window = int(np.prod(step.attrs["kernel_shape"]))
                cost = {k: v * max(1, math.ceil(math.log2(window))) for k, v in cost.items()}
            else:
                degree = plan.param(step, "coefficients").shape[1] - 1
                exact = plan.exact_relu_elements(step)
                n_exact = 0 if exact is None else int(np.sum(exact))
                cost = mpc_cost(f"polynomial{max(degree, 2)}", n_in - n_exact,
                                correlations) if degree >= 2 \
                    else mpc_cost("add", n_in - n_exact)
                if n_exact:  # a partial ReLU: secure ReLU on its exact channels' elements
                    relu = mpc_cost("relu", n_exact, correlations)
                    cost = {k: cost[k] + relu[k] for k in cost}
                    info["exact_relus"] = n_exact
            info.update(online_bytes=cost["online_bytes"], online_rounds=cost["online_rounds"],
                        offline_bytes=cost["offline_bytes"],
                        offline_rounds=cost["offline_rounds"])
        if "online_bytes" in info:
            online_bytes += info["online_bytes"]
            offline_bytes += info["offline_bytes"]
            online_rounds += info["online_rounds"]
            if protocol in ("relu", "max_pool", "beaver_polynomial"):
                correlation_requests += info["offline_rounds"]
        node.meta["hybrid"] = info
    context.analysis["bfv"] = {
        "runnable": True, "scheme": "BFV", "primes": primes, "ring_dimension": dimension,
        "slots": slots, "ciphertext_modulus_bits": ciphertext_modulus_bits,
        "security": "HEStd_128_classic", "security_bits": 128,
        "fractional_bits": f, "sigma": SIGMA, "mask_bits": MASK_BITS,
        "modulus_bits": round(modulus_bits, 1),
        "sigma_hide": None if worst_hide == math.inf else worst_hide,
        "sigma_correct": None if worst_correct == math.inf else worst_correct,
        "truncation_failure_bits": 64 - BEAVER_PRODUCT_BITS,
        "circuit_privacy": "fresh encryption of zero added; no noise flooding (not reachable "
                           "from OpenFHE's Python binding)",
        "predicted": {"online_bytes": online_bytes, "offline_bytes": offline_bytes,
                      "online_rounds": online_rounds,
                      "correlation_requests": correlation_requests},
        "correlations": context.options.correlations,
    }
    return [f"{split} strided convolutions split into stride 1 + public subsampling",
            f"f={f} fractional bits, 2×50-bit primes (N={dimension}, log2 Q = "
            f"{ciphertext_modulus_bits}, 128-bit), "
            f"sigma_hide ≥ {context.analysis['bfv']['sigma_hide']}, "
            f"sigma_correct ≥ {context.analysis['bfv']['sigma_correct']}"]


def flash_pairs(plan) -> dict[str, str]:
    """Degree-2 polynomial steps whose only consumer is one weighted linear step (directly or
    through one Reshape): Flash's quadratic is fused into that step. activation → linear."""
    consumers: dict[str, list] = {}
    for step in plan.steps:
        for value in step.inputs:
            consumers.setdefault(value, []).append(step)
    outputs = {spec.name for spec in plan.outputs}
    pairs = {}
    for step in plan.steps:
        if step.op != "Polynomial" or plan.param(step, "coefficients").shape[1] != 3 or \
                "relu_channels" in step.params:
            continue
        value = step.outputs[0]
        following = consumers.get(value, [])
        if len(following) == 1 and following[0].op == "Reshape" and value not in outputs:
            value = following[0].outputs[0]
            following = consumers.get(value, [])
        if (len(following) == 1 and value not in outputs and step.outputs[0] not in outputs
                and step_protocol(following[0].op, 1,
                                  bool(following[0].meta.get("public_matrix"))) == "he_linear"):
            pairs[step.name] = following[0].name
    return pairs


def flash_standalone(plan, fused: dict[str, str]) -> set[str]:
    """Degree-2 polynomial steps (no exact-ReLU channels) that Flash cannot fuse — several
    consumers (a residual branch and the next layer), a non-linear consumer or a plan output:
    the server evaluates Enc(q(y)) and returns it masked, so they need no dealer either."""
    return {step.name for step in plan.steps
            if step.op == "Polynomial" and step.name not in fused
            and plan.param(step, "coefficients").shape[1] == 3
            and "relu_channels" not in step.params}


def _matrix_values(plan, step) -> np.ndarray:
    """Every weight of a linear step: its parameters other than biases (or 1 for pooling)."""
    values = [np.ravel(plan.param(step, key)) for key in ("weight", "scale", "constant")
              if key in step.params]
    if not values:
        return np.array([1.0])
    return np.concatenate(values)
