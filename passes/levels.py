"""levels — multiplicative depth per step and the CKKS parameters of an FHE plan.

Reads: the approximated IR (protocol ``fhe``), ``--insecure-test-params``.
Writes: ``meta["level_in"]`` / ``meta["level_out"]`` (levels consumed before and after the step)
on every node, and ``context.analysis["ckks"]``: multiplicative depth, ring dimension, slots,
scaling and first-modulus bits, log2 Q, and the security level.

Levels: a plaintext-weight linear op consumes one level (one rescale), a Chebyshev series of
degree d consumes what OpenFHE's EvalChebyshevSeries consumes (``picompile.cost``), additions
and layout no-ops consume none; a residual Add is at the deeper operand's level. The ring
dimension is the one OpenFHE selects for that depth under the HE-standard 128-bit table
(``HEStd_128_classic``), so the compiler and the runtime agree by construction.

Not yet: bootstrapping placement. A plan deeper than ``MAX_LEVELED_DEPTH`` is recorded as not
runnable under CKKS (with the reason; the layout pass then skips it and the ckks backend refuses
it with that reason) and stays usable on the plain backend.
"""

from __future__ import annotations

import math

import numpy as np

from picompile.cost import polynomial_depth
from picompile.ir import Graph
from picompile.runtime.openfhe_loader import (
    FIRST_MOD_BITS,
    SCALING_MOD_BITS,
    ckks_parameters,
    load_openfhe,
)

NAME = "levels"
MAX_LEVELED_DEPTH = 40
LEVEL_FREE_OPS = frozenset({"Reshape", "Add"})


def step_depth(op: str, attrs: dict, has_constant_add: bool = False) -> int:
    if op == "Polynomial":
        return polynomial_depth(int(attrs["degree"]))
    if op in LEVEL_FREE_OPS:
        return 0
    return 1


def ring_dimension(depth: int, insecure: bool) -> int:
    """The ring dimension OpenFHE picks for ``depth`` (or the small insecure test one)."""
    openfhe = load_openfhe()
    parameters = ckks_parameters(openfhe, depth, insecure)
    return int(openfhe.GenCryptoContext(parameters).GetRingDimension())


def run(graph: Graph, context) -> list[str]:
    consumed: dict[str, int] = {name: 0 for name in graph.inputs}
    for node in graph.nodes():
        level_in = max((consumed[v] for v in node.inputs if v in consumed), default=0)
        level_out = level_in + step_depth(node.op, node.attrs)
        node.meta["level_in"], node.meta["level_out"] = level_in, level_out
        for value in node.outputs:
            consumed[value] = level_out
    depth = max(consumed[v] for v in graph.outputs)
    per_channel = [n.name for n in graph.nodes()
                   if n.op == "Polynomial" and np.asarray(n.meta["coefficients"]).shape[0] > 1]
    if per_channel:
        reason = (f"{len(per_channel)} activations have per-channel polynomials (method "
                  f"{context.options.method}), which the CKKS runtime does not evaluate yet; "
                  "use a per-layer method (wls, minimax, chebyshev) for FHE plans")
        context.analysis["ckks"] = {"multiplicative_depth": depth, "runnable": False,
                                    "reason": reason}
        return [reason]
    if depth > MAX_LEVELED_DEPTH:
        reason = (f"the plan needs multiplicative depth {depth}, above {MAX_LEVELED_DEPTH} "
                  "without bootstrapping; picompile does not place bootstraps yet, so this plan "
                  "runs on the plain backend only (lower --max-degree, or use fewer layers)")
        context.analysis["ckks"] = {"multiplicative_depth": depth, "runnable": False,
                                    "reason": reason, "bootstrapping_required": True}
        return [reason]
    insecure = bool(context.options.insecure_test_params)
    ring = ring_dimension(depth, insecure)
    log_q = FIRST_MOD_BITS + SCALING_MOD_BITS * depth
    largest = max(int(np.prod(v.shape)) for v in graph.values.values() if not v.is_constant)
    if insecure:
        while ring // 2 < largest:
            ring *= 2
    context.analysis["ckks"] = {
        "scheme": "CKKS (OpenFHE, FLEXIBLEAUTO)",
        "multiplicative_depth": depth,
        "ring_dimension": ring,
        "slots": ring // 2,
        "scaling_mod_bits": SCALING_MOD_BITS,
        "first_mod_bits": FIRST_MOD_BITS,
        "log2_q_without_special_primes": log_q,
        "security": ("NONE: insecure test parameters (--insecure-test-params)" if insecure
                     else "128-bit classical (HE standard, HEStd_128_classic)"),
        "insecure": insecure,
        "runnable": True,
    }
    return [f"depth {depth}, ring dimension 2^{int(math.log2(ring))}, {ring // 2} slots",
            context.analysis["ckks"]["security"]]
