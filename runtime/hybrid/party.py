"""hybrid.party — what the hybrid client and server share: the walk over the plan on shares.

Reads: a hybrid plan (or its client view), the channel to the peer and, with
``correlations="dealer"``, the one to the dealer.
Writes: this party's additive shares of every tensor (a dict value name → uint64 array); the
correlations it prefetches offline (from OT with the peer, or from the dealer); ``open``
messages to the peer (via the MPC session).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from picompile.errors import BackendError, ProtocolError
from picompile.plan import Plan, Step
from picompile.plan.contract import CORRELATIONS
from picompile.runtime import mpc
from picompile.runtime.channel import Channel
from picompile.runtime.hybrid.correlations import TwoPartyCorrelations
from picompile.runtime.hybrid.dealer import (
    RecordingDealer,
    RemoteDealer,
    ReplayDealer,
    dry_exchange,
)
from picompile.runtime.hybrid.kernels import (
    FlashPending,
    PublicLinear,
    activation_on_shares,
    max_pool_windows,
)
from picompile.runtime.hybrid.views import hybrid_meta, hybrid_settings, step_protocol
from picompile.runtime.hybrid.wire import CLIENT, make_exchange


class Party:
    """What client and server share: fixed point, the MPC session over the channels."""

    party: int

    def __init__(self, plan: Plan, channel: Channel, dealer: Channel | None,
                 correlations: str | None = None) -> None:
        settings = hybrid_settings(plan)
        self.plan = plan
        self.channel = channel
        self.dealer_channel = dealer
        self.fp = mpc.FixedPoint(settings.fractional_bits)
        self.public_linear: dict[str, PublicLinear] = {}
        self.primes = [int(t) for t in settings.primes]
        self.slots = settings.slots
        self.correlations = correlations or settings.correlations
        if self.correlations not in CORRELATIONS:
            raise ProtocolError(f"unknown correlations {self.correlations!r}: use "
                                + " or ".join(CORRELATIONS))
        self.needs_correlations = bool(plan.dealer_steps())
        self.needs_dealer = self.needs_correlations and self.correlations == "dealer"
        self.two_party: TwoPartyCorrelations | None = None
        self.flash = {s.name: s for s in plan.steps if step_protocol(s) == "flash_quadratic"}
        if self.needs_dealer and dealer is None and getattr(self, "dealer_connect", None) is None:
            raise ProtocolError("this plan has exact ReLU/MaxPool or Beaver polynomials and "
                                "needs a dealer connection")

    def session(self, correlations: list[tuple[str, Any]]) -> mpc.Session:
        """The online MPC session, its dealer replaying the prefetched correlations."""
        session = mpc.Session(fp=self.fp, dealer_seed=None,
                              exchange=make_exchange(self.channel, self.party))
        session.dealer = ReplayDealer(correlations)
        return session

    def walk(self, session: mpc.Session, env: dict[str, np.ndarray],
             linear: Callable[[Step, np.ndarray], np.ndarray]) -> dict[str, np.ndarray]:
        """Every step in plan order: ``linear`` for HE linear steps (and standalone Flash
        quadratics, passed as a :class:`FlashPending` of themselves), shares for the rest."""
        for step in self.plan.steps:
            args = [env[v] for v in step.inputs]
            if step_protocol(step) == "flash_quadratic":
                pending = FlashPending(step, args[0])
                # fused: applied inside the next linear step; standalone: evaluated now (the
                # server returns Enc(q(y) − r) as for a linear step)
                env[step.outputs[0]] = pending if hybrid_meta(step).fused_into else \
                    linear(step, pending)
                continue
            if isinstance(args[0], FlashPending) and step.op == "Reshape":
                env[step.outputs[0]] = args[0]
                continue
            if step_protocol(step) == "he_linear":
                env[step.outputs[0]] = linear(step, args[0])
            else:
                env[step.outputs[0]] = self.share_step(session, step, args)
        return env

    def setup_correlations(self) -> None:
        """Setup, two-party correlations only: the base OTs with the peer (both directions)."""
        if self.needs_correlations and self.correlations == "two-party":
            self.two_party = TwoPartyCorrelations(self.channel, self.party)
            self.two_party.setup()

    def prefetch_correlations(self) -> list[tuple[str, Any]]:
        """Offline: produce (OT with the peer) or fetch (dealer) every correlation the inference
        will use, in order, by a dry run of the share protocols on zeros (their structure does
        not depend on the data)."""
        if self.two_party is not None:
            source: Any = self.two_party
        elif self.needs_dealer and self.dealer_channel is not None:
            source = RemoteDealer(self.dealer_channel, self.party)
        else:
            return []
        recorder = RecordingDealer(source)
        session = mpc.Session(fp=self.fp, dealer_seed=None, exchange=dry_exchange)
        session.dealer = recorder
        env = {spec.name: np.zeros(spec.shape, dtype=np.uint64) for spec in self.plan.inputs}
        self.walk(session, env, lambda step, _: np.zeros(self.plan.values[step.outputs[0]].shape,
                                                         dtype=np.uint64))
        return recorder.log

    def shared(self, own: np.ndarray) -> mpc.Shared:
        """This party's share as an :class:`mpc.Shared` (the peer's part zero)."""
        zeros = np.zeros_like(own)
        return mpc.Shared(own, zeros) if self.party == CLIENT else mpc.Shared(zeros, own)

    def share_step(self, session: mpc.Session, step: Step, args: list[np.ndarray]
                   ) -> np.ndarray:
        """Steps evaluated on shares (both parties run the same code on their own share)."""
        plan = self.plan
        x = args[0]
        shape = tuple(plan.values[step.outputs[0]].shape)
        if step.op == "Reshape":
            return x.reshape(shape)
        if step_protocol(step) == "local_linear":
            public = self.public_linear.get(step.name)
            if public is None:
                public = self.public_linear[step.name] = PublicLinear.from_plan(
                    plan, step, self.fp.fractional_bits)
            with np.errstate(over="ignore"):
                y = (public.matrix @ x.reshape(-1).view(np.int64)).view(np.uint64)
            if public.rescale:
                y = mpc.truncate(self.shared(y), self.fp.fractional_bits).share_of(self.party)
            if self.party == CLIENT and np.any(public.bias):
                with np.errstate(over="ignore"):
                    y = y + self.fp.encode(public.bias)
            return y.reshape(shape)
        if step.op == "Add":
            if len(args) == 2:
                with np.errstate(over="ignore"):
                    return (x + args[1]).reshape(shape)
            return self.add_constant(step, x)
        if step.op == "Relu":
            return mpc.relu(session, self.shared(x)).share_of(self.party)
        if step.op == "Polynomial":
            return activation_on_shares(session, plan, step, self.shared(x)).share_of(self.party)
        if step.op == "MaxPool":
            index, padded = max_pool_windows(plan, step)
            flat = x.reshape(-1)[index]
            if self.party == CLIENT:  # padding is −∞ for max: a very negative public value
                flat = np.where(padded, self.fp.encode(-self.fp.max_abs / 4), flat)
            else:
                flat = np.where(padded, np.uint64(0), flat)
            result = mpc.maximum_reduce(session, self.shared(flat), axis=-1)
            return result.share_of(self.party).reshape(shape)
        raise BackendError(f"the hybrid backend has no share kernel for {step.op}")

    def add_constant(self, step: Step, x: np.ndarray) -> np.ndarray:
        """Add with a constant operand: the server adds the (secret) constant, the client not."""
        return x
