"""hybrid.views — what the hybrid runtime reads from a plan, each kind of read in one place.

Reads: a hybrid plan: ``security["bfv"]``, ``security["rotation_keys"]``, each step's
``meta["hybrid"]`` (hybrid_parameters pass), ``meta["hybrid_layout"]`` (layout pass) and
``meta["public_matrix"]``, value shapes, array names.
Writes: nothing; returns the BFV settings, per-step metadata, the client's view of the plan and
the fingerprint of its public part (both built on :mod:`picompile.runtime.session`).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from picompile.errors import PlanError
from picompile.plan import Plan, Step
from picompile.runtime import session

#: Array roles that are the server's secrets (the client view drops them).
PRIVATE_KEYS = ("weight", "bias", "scale", "shift", "constant", "diagonals", "bias_slots",
                "constant_slots", "slope")


def hybrid_settings(plan: Plan) -> dict[str, Any]:
    """The plan's BFV settings (``security["bfv"]``); a PlanError for a non-hybrid plan."""
    if plan.protocol != "hybrid" or "bfv" not in plan.security:
        raise PlanError("this plan is not a hybrid plan: compile it with --protocol hybrid "
                        "--calib DATA to run it with the hybrid backend")
    return plan.security["bfv"]


def rotation_keys(plan: Plan) -> list[int]:
    """The BFV row rotations the server needs keys for."""
    return [int(k) for k in plan.security.get("rotation_keys", [])]


def hybrid_meta(step: Step) -> dict[str, Any] | None:
    """The step's hybrid annotations (``meta["hybrid"]``: protocol, bits, Flash fusion), None for
    a step the hybrid_parameters pass left alone."""
    return step.meta.get("hybrid")


def layout_meta(step: Step) -> dict[str, Any]:
    """The blocked BFV layout of an HE linear step (``meta["hybrid_layout"]``)."""
    return step.meta["hybrid_layout"]


def step_protocol(step: Step) -> str:
    """How the step runs: he_linear, local_linear, flash_quadratic, beaver_polynomial, local…"""
    return (hybrid_meta(step) or {}).get("protocol", "local")


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
    public_steps = {s.name for s in plan.steps if s.meta.get("public_matrix")}
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
        "bfv": {k: bfv[k] for k in ("primes", "ring_dimension", "fractional_bits")},
        "polynomials": {s.name: np.asarray(plan.arrays[s.params["coefficients"]]).tolist()
                        for s in plan.steps if s.op == "Polynomial"},
    }
    return session.fingerprint(plan, public, step_detail=hybrid_meta)
