"""cost — predicted seconds per step of an FHE plan from measured OpenFHE operation costs.

Reads: the laid-out IR (``meta["layout"]``, ``meta["level_in"]``), ``context.analysis["ckks"]``
(ring dimension, depth) and the operation cost table (``picompile calibrate-costs`` cache, else
the default table).
Writes: ``meta["estimated_seconds"]`` per step and ``context.analysis["cost"]``: predicted
server seconds per inference, the table's source, the ring dimension, the predicted server
memory (evaluation keys, cached encoded diagonals, live ciphertexts), and for bootstrapped plans
the number of bootstraps and their predicted seconds (``picompile.cost.BOOTSTRAP_COSTS``, by ring
dimension and slots; a
step's estimate includes the bootstrap of its output, ``meta["bootstrap_after"]``), and
``scale_out``: the predicted seconds per inference when each linear step's giant steps run on
1, 2, 4, 16, 64 Ray workers (``picompile.cost.split_step_seconds``; activations and bootstraps
stay on the session), with the speed-up and the one-time key shipping to the workers.

Model: a linear step costs one hoisting precompute, its baby rotations (hoisted), its giant
rotations, and one plaintext multiplication plus one addition per diagonal (over several
ciphertexts: per input ciphertext its precompute and babies, per output ciphertext its giants,
``picompile.cost.blocked_step_seconds``; other steps and bootstraps once per ciphertext); a
polynomial costs the measured ``EvalChebyshevSeries`` time of its degree; every cost is scaled by
the RNS limbs left at the step's level relative to those it was measured with. Encoding the
diagonals is a one-time set-up cost in leveled plans (plaintexts are cached); bootstrapped plans
(N=2^16, megabytes per plaintext) encode every diagonal on every run, which is charged per
inference; a leveled plan's encodings beyond the runtime's cache (``PLAINTEXT_CACHE_BYTES``)
are too.
"""

from __future__ import annotations

from dataclasses import asdict

from picompile.cost import (
    ScaleOutAssumptions,
    StepCost,
    blocked_step_seconds,
    bootstrap_measurement,
    bootstrap_seconds,
    load_operation_costs,
    operation_costs_for,
    scale_out,
    server_memory_bytes,
    step_seconds,
)
from picompile.ir import Graph
from picompile.runtime.interface import PLAINTEXT_CACHE_BYTES

NAME = "cost"


def run(graph: Graph, context) -> list[str]:
    ckks = context.analysis.get("ckks", {})
    if not ckks.get("runnable"):
        return ["skipped: the plan does not run under CKKS"]
    table = load_operation_costs()
    costs = operation_costs_for(table, int(ckks["ring_dimension"]))
    if costs is None:
        return ["no operation cost table: run `picompile calibrate-costs`"]
    depth = int(ckks["multiplicative_depth"])
    ring = int(ckks["ring_dimension"])
    bootstrapped = "bootstrapping" in ckks
    lean_slots = int(ckks["slots"]) if bootstrapped else None
    scaling = int(ckks.get("scaling_mod_bits", 50))
    refresh = bootstrap_seconds(ring, int(ckks["slots"]), scaling) if bootstrapped else 0.0
    bootstraps = 0
    total = 0.0
    step_costs: list[StepCost] = []
    plaintext_towers: list[int] = []
    working = 1
    for node in graph.nodes():
        towers = depth + 1 - int(node.meta.get("level_in", 0))
        layout = node.meta.get("layout")
        blocked = node.meta.get("blocked")
        blocks = int(node.meta.get("ciphertexts", 1))  # ciphertexts the output spans
        if layout is not None:
            plaintext_towers += [towers] * (int(layout["diagonal_count"]) + 1)
            working = max(working, len(layout["baby_rotations"]) + 2)
        has_bias = "bias_slots" in node.meta and bool((node.meta["bias_slots"] != 0).any())
        if blocked is not None:
            plaintext_towers += [towers] * (int(blocked["diagonal_count"]) + blocks)
            working = max(working, int(blocked["input_blocks"])
                          * (len(blocked["baby_rotations"]) + 1) + blocks + 1)
            seconds = blocked_step_seconds(blocked, towers, costs, has_bias, lean_slots)
        else:
            seconds = blocks * step_seconds(node.op, node.attrs, layout, towers, costs,
                                            has_bias, lean_slots)
        extra = 0.0
        if "bootstrap_after" in node.meta:
            extra = refresh * blocks
            bootstraps += blocks
        step_costs.append(StepCost(layout, towers, seconds, extra, has_bias))
        seconds += extra
        node.meta["estimated_seconds"] = seconds
        total += seconds
    keys = len(context.analysis.get("layout", {}).get("rotation_keys", []))
    if bootstrapped:
        measured = bootstrap_measurement(ring, int(ckks["slots"]), scaling)
        keys = 2 * (int(ckks["slots"]).bit_length() - 1) + int(measured["keys"])
    if bootstrapped:
        # diagonals are encoded on the fly (not cached): one is alive at a time; the bootstrap's
        # precomputed linear transforms stay resident
        plaintext_towers = [max(plaintext_towers)] if plaintext_towers else []
    memory = server_memory_bytes(ring, depth, keys, plaintext_towers, working)
    if memory["encoded_plaintexts"] > PLAINTEXT_CACHE_BYTES:
        # the runtime keeps this many bytes of encodings; the rest is encoded on every run
        uncached = 1.0 - PLAINTEXT_CACHE_BYTES / memory["encoded_plaintexts"]
        total += uncached * len(plaintext_towers) * costs["encode"]
        memory["total"] -= memory["encoded_plaintexts"] - PLAINTEXT_CACHE_BYTES
        memory["encoded_plaintexts"] = PLAINTEXT_CACHE_BYTES
    if bootstrapped:
        transforms = int(measured["precomputed_bytes"] * ring / measured["ring"])
        memory["bootstrap_transforms"] = transforms
        memory["total"] += transforms
    assumptions = ScaleOutAssumptions()
    split = scale_out(step_costs, costs, ring, memory["evaluation_keys"], lean_slots,
                      assumptions)
    context.analysis["cost"] = {"predicted_seconds": total, "table": table.get("source"),
                                "ring_dimension": ring,
                                "predicted_server_memory_bytes": memory,
                                "bootstraps": bootstraps,
                                "rotation_keys": keys,
                                "predicted_bootstrap_seconds": bootstraps * refresh,
                                "scale_out": split,
                                "scale_out_assumptions": asdict(assumptions)}
    return [f"predicted {total:.2f} s per encrypted inference ({table.get('source')}), "
            f"{bootstraps} bootstraps",
            f"predicted server memory {memory['total'] / 2**30:.2f} GiB (keys "
            f"{memory['evaluation_keys'] / 2**30:.2f}, encoded diagonals "
            f"{memory['encoded_plaintexts'] / 2**30:.2f})"]
