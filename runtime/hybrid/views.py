"""hybrid.views — what the hybrid runtime reads from a plan, each kind of read in one place.

Reads: a hybrid plan: ``Plan.bfv`` (BFV parameters, fixed point), each step's ``Step.hybrid``
(protocol, bit widths, Flash fusion, public matrix, blocked layout), value shapes, array names.
Writes: nothing; returns the BFV settings, per-step metadata, the client's view of the plan and
the fingerprint of its public part (both built on :mod:`picompile.runtime.session`).
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

import numpy as np

from picompile.errors import PlanError
from picompile.plan import BfvParameters, BlockLayout, HybridStep, Plan, Step
from picompile.runtime import session

#: Array roles that are the server's secrets (the client view drops them).
PRIVATE_KEYS = ("weight", "bias", "scale", "shift", "constant", "diagonals", "bias_slots",
                "constant_slots", "slope")


def hybrid_settings(plan: Plan) -> BfvParameters:
    """The plan's BFV settings (``Plan.bfv``); a PlanError for a non-hybrid plan."""
    if plan.protocol != "hybrid" or plan.bfv is None:
        raise PlanError("this plan is not a hybrid plan: compile it with --protocol hybrid "
                        "--calib DATA to run it with the hybrid backend")
    return plan.bfv


def hybrid_meta(step: Step) -> HybridStep:
    """The step's hybrid contract (protocol, bits, Flash fusion); a PlanError for a step the
    hybrid_parameters pass did not annotate."""
    if step.hybrid is None:
        raise PlanError(f"step {step.name!r} has no hybrid protocol: recompile the plan")
    return step.hybrid


def layout_meta(step: Step) -> BlockLayout:
    """The blocked BFV layout of an HE linear step."""
    layout = hybrid_meta(step).layout
    if layout is None:
        raise PlanError(f"step {step.name!r} runs under HE but has no blocked layout")
    return layout


def step_protocol(step: Step) -> str:
    """How the step runs: he_linear, local_linear, flash_quadratic, beaver_polynomial, local…"""
    return step.hybrid_protocol


def step_detail(step: Step) -> dict[str, Any] | None:
    """The step's hybrid contract as JSON (for the fingerprint)."""
    return None if step.hybrid is None else asdict(step.hybrid)


def he_linear_steps(plan: Plan) -> list[Step]:
    """The steps with weights, evaluated under HE."""
    return [s for s in plan.steps if step_protocol(s) == "he_linear"]


def value_size(plan: Plan, value: str) -> int:
    """Number of elements of a plan value."""
    return int(np.prod(plan.values[value].shape))


def client_view(plan: Plan) -> Plan:
    """The plan without the server's secrets (weights, biases, diagonals, constants): what the
    client may hold. It keeps shapes, layouts' rotation lists, polynomial coefficients (public in
    this protocol), the BFV parameters and the client head; it is marked as a client view."""
    public_steps = {s.name for s in plan.steps if s.hybrid is not None and s.hybrid.public_matrix}
    private = {name for name in plan.arrays if name.rsplit(".", 1)[-1] in PRIVATE_KEYS
               and name.rsplit(".", 1)[0] not in public_steps}
    return session.client_view(plan, keep=lambda name: name not in private)


def require_server_plan(plan: Plan) -> None:
    """A PlanError for a client view: the server and the other backends need the weights."""
    if session.is_client_view(plan):
        raise PlanError("this is a client plan (no weights): only `picompile client` can use it; "
                        "the server and the other backends need the full plan")


def fingerprint(plan: Plan) -> str:
    """sha256 of the public part both parties must agree on (steps with their hybrid
    annotations, shapes, rotations, BFV parameters, polynomial coefficients)."""
    bfv = hybrid_settings(plan)
    public = {
        "bfv": {"primes": bfv.primes, "ring_dimension": bfv.ring_dimension,
                "fractional_bits": bfv.fractional_bits},
        "polynomials": {s.name: np.asarray(plan.arrays[s.params["coefficients"]]).tolist()
                        for s in plan.steps if s.op == "Polynomial"},
        "relu_channels": {s.name: np.asarray(plan.arrays[s.params["relu_channels"]]).tolist()
                          for s in plan.steps if "relu_channels" in s.params},
    }
    return session.fingerprint(plan, public, step_detail=step_detail)
