"""hybrid.server — the hybrid protocol's server: holds the weights, never sees the input.

Reads: the full hybrid plan; from the client ``hello``, ``keys`` (BFV public material),
``ciphertexts`` (Enc(−m) per linear step, Flash inputs), ``reshare`` (masked activations),
``open``; from the dealer its part of the correlations.
Writes: to the client ``hello``, ``ciphertexts`` (Enc(W·(−m) − r)), ``open``, ``result`` (its
share of the output); ``bye`` to the dealer. docs/protocol.md specifies the messages.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from picompile.errors import ProtocolError
from picompile.plan import Plan, Step
from picompile.runtime.bfv import BfvPublicMaterial, BfvServer, crt_lift, mulmod
from picompile.runtime.channel import Channel
from picompile.runtime.hybrid.kernels import FlashPending, LinearKernel, flash_coefficients
from picompile.runtime.hybrid.party import Party
from picompile.runtime.hybrid.randomness import secure_below_prime
from picompile.runtime.hybrid.views import (
    fingerprint,
    he_linear_steps,
    hybrid_meta,
    require_server_plan,
    value_size,
)
from picompile.runtime.hybrid.wire import SERVER, expect_arrays, split_blocks
from picompile.runtime.session import PROTOCOL_VERSION, require_same_plan


class HybridServer(Party):
    """Holds the weights; evaluates linear layers under HE and in plaintext on masked values.

    ``dealer_connect(session)`` opens the dealer connection once the client's ``hello`` names
    the session (TCP deployments); in-process runs pass the dealer channel directly."""

    party = SERVER

    def __init__(self, plan: Plan, channel: Channel, dealer: Channel | None = None,
                 dealer_connect: Callable[[str], Channel] | None = None,
                 correlations: str | None = None) -> None:
        require_server_plan(plan)
        self.dealer_connect = dealer_connect
        super().__init__(plan, channel, dealer, correlations)
        f = self.fp.fractional_bits
        self.kernels = {}
        by_name = {s.name: s for s in plan.steps}
        for step in he_linear_steps(plan):
            source = hybrid_meta(step).flash_from
            bias_bits = f if source is None else (
                int(hybrid_meta(by_name[source]).coefficient_bits) + 2 * f)
            self.kernels[step.name] = LinearKernel.from_plan(plan, step, bias_bits)
        self.offline_kernels = {name: k for name, k in self.kernels.items()
                                if hybrid_meta(by_name[name]).flash_from is None}
        self.flash_inputs: dict[str, tuple[list, list]] = {}
        self.fingerprint = fingerprint(plan)
        self.bfv: BfvServer | None = None
        self.last_shares: dict[str, np.ndarray] = {}  # the last inference's shares (tests)

    def add_constant(self, step: Step, x: np.ndarray) -> np.ndarray:
        constant = np.broadcast_to(self.plan.param(step, "constant"), x.shape)
        with np.errstate(over="ignore"):
            return x + self.fp.encode(constant)

    def serve(self) -> int:
        """One client session: setup, then offline + online per inference. Returns the count."""
        channel = self.channel
        with channel.phase("offline"):
            hello = channel.expect("hello")
            if not isinstance(hello, dict) or hello.get("version") != PROTOCOL_VERSION:
                channel.send_error(f"unsupported protocol version (server speaks "
                                   f"{PROTOCOL_VERSION})")
                raise ProtocolError("client speaks another protocol version")
            require_same_plan(channel, hello, self.fingerprint)
            if hello.get("correlations", "dealer") != self.correlations:
                channel.send_error(f"the server uses {self.correlations} correlations")
                raise ProtocolError(f"the client asked for {hello.get('correlations')} "
                                    f"correlations, the server uses {self.correlations}")
            if self.needs_dealer and self.dealer_channel is None:
                self.dealer_channel = self.dealer_connect(str(hello.get("session", "")))
            channel.send("hello", {"version": PROTOCOL_VERSION, "plan": self.fingerprint})
            keys = channel.expect("keys")
            try:
                material = BfvPublicMaterial.from_payload(keys)
            except (KeyError, TypeError) as exc:
                raise ProtocolError(f"malformed keys message: {exc}") from None
            self.bfv = BfvServer(self.primes, material)
            self.setup_correlations()
        count = 0
        while True:
            with channel.phase("offline"):
                message = channel.recv()
                if message.kind == "bye":
                    break
                if message.kind != "ciphertexts":
                    raise ProtocolError(f"expected ciphertexts or bye, got {message.kind}")
                masks = self.preprocess(message.payload)
                correlations = self.prefetch_correlations()
            with channel.phase("online"):
                self.online(masks, correlations)
            count += 1
        if self.dealer_channel is not None:
            self.dealer_channel.send("bye")
        return count

    def close(self) -> None:
        """Close the client channel and the dealer channel (TCP deployments)."""
        self.channel.close()
        if self.dealer_channel is not None:
            self.dealer_channel.close()

    def preprocess(self, payload: Any) -> dict[str, list[np.ndarray]]:
        """Enc(−m) per linear step → Enc(W·(−m) − r); returns r per step and prime."""
        expected = set(self.offline_kernels) | {f"flash:{name}" for name in self.flash}
        if not isinstance(payload, dict) or set(payload) != expected:
            raise ProtocolError("malformed ciphertexts message: wrong set of linear steps")
        for name, step in self.flash.items():
            data = payload[f"flash:{name}"]
            blocks = -(-value_size(self.plan, step.inputs[0]) // self.slots)
            try:
                c, c2 = data["c"], data["c2"]
                if len(c) != blocks or len(c2) != blocks:
                    raise ValueError("wrong block count")
                self.flash_inputs[name] = (self.bfv.receive(c), self.bfv.receive(c2))
            except (KeyError, TypeError, ValueError, IndexError, RuntimeError) as exc:
                raise ProtocolError(f"malformed Flash ciphertexts for {name}: {exc}") from None
        replies, masks = {}, {}
        for name, kernel in self.offline_kernels.items():
            data = payload[name]
            if not isinstance(data, list) or len(data) != kernel.input_blocks or not all(
                    isinstance(block, list) and len(block) == len(self.primes)
                    and all(isinstance(b, bytes) for b in block) for block in data):
                raise ProtocolError(f"malformed ciphertexts for {name}")
            n_out = kernel.matrix.shape[0]
            r = [secure_below_prime(t, (n_out,)) for t in self.primes]
            negated = [split_blocks(np.mod(-ri, t), kernel.slots)
                       for ri, t in zip(r, self.primes, strict=True)]
            add = [[negated[p][block] for p in range(len(self.primes))]
                   for block in range(kernel.output_blocks)]
            try:
                replies[name] = self.bfv.linear(data, kernel.pairs, kernel.output_blocks, name,
                                                add=add)
            except RuntimeError as exc:
                raise ProtocolError(f"cannot evaluate the client's ciphertexts: {exc}") from None
            masks[name] = r
        self.channel.send("ciphertexts", replies)
        return masks

    def online(self, masks: dict[str, list[np.ndarray]],
               correlations: list[tuple[str, Any]]) -> None:
        """The online phase of one inference; ends with this party's output share sent."""
        plan, channel = self.plan, self.channel

        def linear(step: Step, a_server: np.ndarray | FlashPending) -> np.ndarray:
            if isinstance(a_server, FlashPending):
                return self.flash_linear(step, a_server)
            kernel = self.kernels[step.name]
            n_in = kernel.matrix.shape[1]
            u = expect_arrays([channel.expect("reshare")], 1, "reshare")[0]
            if u.dtype != np.uint64 or u.shape != (n_in,):
                raise ProtocolError(f"malformed reshare for {step.name}")
            with np.errstate(over="ignore"):
                w = (u + a_server.reshape(-1)).view(np.int64)
            residues = [np.mod(kernel.apply_mod(w, t) + np.mod(kernel.bias, t) + r, t)
                        for t, r in zip(self.primes, masks[step.name], strict=True)]
            share = crt_lift(residues, self.primes, kernel.weight_bits)
            return share.reshape(plan.values[step.outputs[0]].shape)

        env = {spec.name: np.zeros(spec.shape, dtype=np.uint64) for spec in plan.inputs}
        env = self.walk(self.session(correlations), env, linear)
        self.last_shares = env
        channel.send("result", [env[plan.outputs[0].name]])

    def flash_linear(self, step: Step, pending: FlashPending) -> np.ndarray:
        """Flash's quadratic fused with this linear step, or alone when ``step`` is the quadratic
        itself (online, no dealer): the client's share
        c = −m of the activation input y came encrypted offline with c²; with s = u + y_S
        (= y + m) the server computes Enc(q(y)) = A⊙Enc(c²) + (2A·s + B·2^f)⊙Enc(c) +
        (A·s² + B·2^f·s + K·2^2f), applies W under HE (when fused), masks with r and replies."""
        plan, channel, f = self.plan, self.channel, self.fp.fractional_bits
        activation = pending.step
        n = value_size(plan, activation.inputs[0])
        u = expect_arrays([channel.expect("reshare")], 1, "reshare")[0]
        if u.dtype != np.uint64 or u.shape != (n,):
            raise ProtocolError(f"malformed reshare for {activation.name}")
        with np.errstate(over="ignore"):
            w = (u + pending.share.reshape(-1)).view(np.int64)
        a, b, k = flash_coefficients(plan, activation)
        coefficient_c, constant, squared = [], [], []
        for t in self.primes:
            s_mod = np.mod(w, t)
            a_mod, b_mod = np.mod(a, t), np.mod(b * (1 << f), t)
            coefficient_c.append(np.mod(mulmod(np.mod(2 * a, t), s_mod, t) + b_mod, t))
            constant.append(np.mod(mulmod(a_mod, mulmod(s_mod, s_mod, t), t)
                                   + mulmod(b_mod, s_mod, t) + np.mod(k * (1 << 2 * f), t), t))
            squared.append(a_mod)
        c, c2 = self.flash_inputs[activation.name]
        quadratic = self.bfv.quadratic(
            activation.name, c, c2, [split_blocks(v, self.slots) for v in squared],
            [split_blocks(v, self.slots) for v in coefficient_c],
            [split_blocks(v, self.slots) for v in constant])
        n_out = value_size(plan, step.outputs[0])
        r = [secure_below_prime(t, (n_out,)) for t in self.primes]
        if step is activation:  # standalone: Enc(q(y) − r), the shares of q(y) itself
            added = [split_blocks(np.mod(-ri, t), self.slots)
                     for ri, t in zip(r, self.primes, strict=True)]
            reply = self.bfv.masked(quadratic, [[added[p][block] for p in range(len(r))]
                                                for block in range(len(added[0]))])
        else:
            kernel = self.kernels[step.name]
            added = [split_blocks(np.mod(np.mod(kernel.bias, t) - ri, t), kernel.slots)
                     for ri, t in zip(r, self.primes, strict=True)]
            reply = self.bfv.linear_ciphertexts(
                quadratic, kernel.pairs, kernel.output_blocks, step.name,
                add=[[added[p][block] for p in range(len(self.primes))]
                     for block in range(kernel.output_blocks)])
        channel.send("ciphertexts", reply)
        shift = int(hybrid_meta(step).output_shift)
        return crt_lift(r, self.primes, shift).reshape(plan.values[step.outputs[0]].shape)
