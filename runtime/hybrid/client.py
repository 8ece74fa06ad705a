"""hybrid.client — the hybrid protocol's client: holds the input and the BFV secret key.

Reads: the client view of a hybrid plan (no weights), the input samples; from the server
``hello``, ``ciphertexts`` (Enc(W·(−m) − r), decrypted to the client's mask share), ``open``,
``result``; from the dealer its part of the correlations.
Writes: to the server ``hello``, ``keys``, ``ciphertexts`` (Enc(−m)), ``reshare`` (activation
share + mask), ``open``, ``bye``; the decrypted outputs and per-inference traffic and times.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from picompile.errors import BackendError, ProtocolError
from picompile.plan import Plan, Step
from picompile.runtime.bfv import BfvClient, crt_lift, mulmod
from picompile.runtime.channel import Channel
from picompile.runtime.hybrid.kernels import FlashPending
from picompile.runtime.hybrid.party import Party
from picompile.runtime.hybrid.randomness import secure_uint64
from picompile.runtime.hybrid.views import (
    client_view,
    fingerprint,
    he_linear_steps,
    hybrid_meta,
    value_size,
)
from picompile.runtime.hybrid.wire import CLIENT, expect_arrays, split_blocks
from picompile.runtime.session import PROTOCOL_VERSION


class HybridClient(Party):
    """Holds the input and the BFV secret keys; never sees weights (uses the client view)."""

    party = CLIENT

    def __init__(self, plan: Plan, channel: Channel, dealer: Channel | None = None,
                 session: str | None = None, correlations: str | None = None) -> None:
        plan = client_view(plan)
        super().__init__(plan, channel, dealer, correlations)
        self.session_id = session or os.urandom(16).hex()
        self.linear = {s.name: s for s in he_linear_steps(plan)
                       if hybrid_meta(s).flash_from is None}
        self.weight_bits = {s.name: int(hybrid_meta(s).weight_bits)
                            for s in self.linear.values()}
        self.bfv: BfvClient | None = None
        self.fingerprint = fingerprint(plan)
        self.inferences = 0

    def setup(self) -> None:
        """Handshake (version, plan fingerprint, session id), BFV key generation and upload."""
        channel = self.channel
        with channel.phase("offline"):
            channel.send("hello", {"version": PROTOCOL_VERSION, "plan": self.fingerprint,
                                   "role": "client", "session": self.session_id,
                                   "correlations": self.correlations})
            reply = channel.expect("hello")
            if not isinstance(reply, dict) or reply.get("plan") != self.fingerprint:
                raise ProtocolError("the server answered with another plan")
            self.bfv = BfvClient(self.primes, self.plan.rotation_keys)
            if self.bfv.slots != self.slots:
                raise BackendError(f"OpenFHE chose {self.bfv.slots} BFV slots, the plan expects "
                                   f"{self.slots}: recompile the plan with this OpenFHE")
            channel.send("keys", self.bfv.public_material().to_payload())
            self.setup_correlations()

    def infer(self, x: np.ndarray) -> tuple[np.ndarray, dict[str, float]]:
        """One inference: offline preprocessing, then the online phase. x has no batch axis."""
        plan, channel = self.plan, self.channel
        seconds = {}
        start = time.perf_counter()
        with channel.phase("offline"):
            m, z = self.preprocess()
            middle = time.perf_counter()
            correlations = self.prefetch_correlations()
        seconds["offline"] = time.perf_counter() - start
        seconds["correlations"] = time.perf_counter() - middle
        start = time.perf_counter()
        with channel.phase("online"):
            def linear(step: Step, a_client: np.ndarray | FlashPending) -> np.ndarray:
                name = a_client.step.name if isinstance(a_client, FlashPending) else step.name
                share = a_client.share if isinstance(a_client, FlashPending) else a_client
                with np.errstate(over="ignore"):
                    u = share.reshape(-1) + m[name]
                channel.send("reshare", u)
                if isinstance(a_client, FlashPending):  # the server replies with Enc(W·q − r)
                    return self.decrypt_share(channel.expect("ciphertexts"), step,
                                              int(hybrid_meta(step).output_shift))
                return z[step.name].reshape(plan.values[step.outputs[0]].shape)

            spec = plan.inputs[0]
            env = {spec.name: self.fp.encode(x.reshape(spec.shape))}
            env = self.walk(self.session(correlations), env, linear)
            (server_share,) = expect_arrays(channel.expect("result"), 1, "result")
            own = env[plan.outputs[0].name]
            if server_share.shape != own.shape or server_share.dtype != np.uint64:
                raise ProtocolError("malformed result message")
            with np.errstate(over="ignore"):
                output = self.fp.decode(own + server_share)
        seconds["online"] = time.perf_counter() - start
        return output, seconds

    def preprocess(self) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
        """Masks m per linear step, Enc(−m) out, decrypted z = W·(−m) − r back."""
        masks, encrypted = {}, {}
        for name, step in self.linear.items():
            n_in = value_size(self.plan, step.inputs[0])
            m = secure_uint64((n_in,)) >> np.uint64(64 - 62)
            masks[name] = m
            encrypted[name] = [self.bfv.encrypt(block)
                               for block in split_blocks(-(m.astype(np.int64)), self.slots)]
        for name, step in self.flash.items():  # Flash: Enc(c), Enc(c²) for c = −m
            n_in = value_size(self.plan, step.inputs[0])
            m = secure_uint64((n_in,)) >> np.uint64(64 - 62)
            masks[name] = m
            c = [np.mod(-(m.astype(np.int64)), t) for t in self.primes]
            c2 = [mulmod(ci, ci, t) for ci, t in zip(c, self.primes, strict=True)]
            encrypted[f"flash:{name}"] = {
                key: [self.bfv.encrypt_residues([split_blocks(v, self.slots)[block]
                                                 for v in values])
                      for block in range(-(-n_in // self.slots))]
                for key, values in (("c", c), ("c2", c2))}
        self.channel.send("ciphertexts", encrypted)
        replies = self.channel.expect("ciphertexts")
        if not isinstance(replies, dict) or set(replies) != set(self.linear):
            raise ProtocolError("malformed ciphertexts reply")
        z = {name: self.decrypt_share(replies[name], step, self.weight_bits[name])
             for name, step in self.linear.items()}
        return masks, z

    def decrypt_share(self, data: Any, step: Step, shift: int) -> np.ndarray:
        """The client's share of a linear step's output: decrypt the server's reply blocks,
        recombine by CRT, truncate by ``shift`` bits (the server truncates its mask alike)."""
        n_out = value_size(self.plan, step.outputs[0])
        blocks = -(-n_out // self.slots)
        if not isinstance(data, list) or len(data) != blocks or not all(
                isinstance(b, list) and len(b) == len(self.primes) for b in data):
            raise ProtocolError(f"malformed ciphertexts reply for {step.name}")
        try:
            decrypted = [self.bfv.decrypt(block, self.slots) for block in data]
        except RuntimeError as exc:
            raise ProtocolError(f"cannot decrypt the server's reply: {exc}") from None
        residues = [np.concatenate([d[p] for d in decrypted])[:n_out]
                    for p in range(len(self.primes))]
        return crt_lift(residues, self.primes, shift).reshape(self.plan.values[step.outputs[0]]
                                                             .shape)

    def run_all(self, x: np.ndarray,
                progress: Callable[[str, int, int], None] | None = None
                ) -> tuple[np.ndarray, dict[str, float]]:
        """Set up, run every sample of ``x`` (batch axis first), finish; the outputs and the
        summed offline/online seconds."""
        progress = progress or (lambda description, done, total: None)
        batch = x.shape[0]
        progress("hybrid setup", 0, batch)
        self.setup()
        rows, totals = [], {"offline": 0.0, "online": 0.0, "correlations": 0.0}
        for index in range(batch):
            output, seconds = self.infer(x[index])
            rows.append(output.reshape(self.plan.outputs[0].shape[1:]))
            for key in totals:
                totals[key] += seconds[key]
            progress("hybrid inference", index + 1, batch)
        self.finish()
        self.inferences = batch
        return np.stack(rows), totals

    def communication(self, totals: dict[str, float], dealer_bytes: int) -> dict[str, float]:
        """Per inference: online/offline bytes (dealer traffic is offline and also given alone
        as ``dealer_bytes``; the one-time key upload is ``setup_key_bytes``), online flights,
        times."""
        traffic = self.channel.traffic
        batch = max(1, self.inferences)
        key_bytes = traffic.by_kind.get("keys", 0)
        return {
            "correlations_two_party": float(self.two_party is not None),
            "ot_bytes": traffic.by_kind.get("ot", 0) / batch,
            "inferences": batch,
            "online_bytes": traffic["online"].bytes / batch,
            "online_flights": traffic["online"].rounds / batch,
            "offline_flights": traffic["offline"].rounds / batch,
            "offline_bytes": (traffic["offline"].bytes - key_bytes + dealer_bytes) / batch,
            "setup_key_bytes": key_bytes,
            "dealer_bytes": dealer_bytes / batch,
            "online_seconds": totals["online"] / batch,
            "offline_seconds": totals["offline"] / batch,
            "correlation_seconds": totals.get("correlations", 0.0) / batch,
            "keygen_seconds": self.bfv.keygen_seconds if self.bfv else math.nan,
        }

    def finish(self) -> None:
        self.channel.send("bye")
        if self.dealer_channel is not None:
            self.dealer_channel.send("bye")
