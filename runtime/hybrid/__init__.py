"""hybrid backend: HE linear layers (BFV) + 2-party MPC activations, client and server apart.

Reads: a hybrid plan (``--protocol hybrid``: ``hybrid_parameters`` and ``layout`` passes ran),
a :class:`~picompile.runtime.channel.Channel` to the peer and one to the dealer, the client's
input.
Writes: the client's decrypted output, per-phase traffic (bytes, messages, flights) and times.

Protocol (docs/protocol.md; Delphi-style preprocessing for linear layers):

* setup — ``hello`` (protocol version, fingerprint of the public part of the plan), ``keys``
  (BFV public and rotation keys per plaintext prime, client → server).
* offline, per inference — for every HE linear step the client draws a mask m (uniform in
  [0, 2^62), CSPRNG) and sends Enc(−m) per prime; the server returns Enc(W·(−m) − r) with r
  uniform mod each prime, plus a fresh encryption of zero; the client decrypts z. Both parties
  then fetch from the dealer (a third party) every Beaver/AND/bit correlation the inference
  needs, by a dry run of the share protocols on zeros (same order at both parties).
* online — every tensor is additively shared over Z_2^64 in fixed point (f fractional bits),
  client = P0, server = P1; the client's input share is encode(x), the server's is 0.
  Linear step: the client sends u = a_C + m (8 bytes per element, one flight); the server reads
  w = u + a_S as a signed integer (= a + m exactly), computes S = W·w + b + r mod each prime in
  plaintext; (z, S) are shares of W·a + b mod T; both lift to centered integers (wrong with
  probability |y|/T per element) and truncate locally by the weight bits. ReLU, MaxPool and
  polynomials run the share protocols of :mod:`picompile.runtime.mpc`; Add and Reshape are
  local. The server sends its share of the final output (``result``), the client adds.

The client never receives weights: it works from :func:`client_view` (weights, diagonals and
biases removed) and the plan fingerprint both sides check covers only that public part.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import scipy.sparse

from picompile.errors import BackendError, PlanError, ProtocolError
from picompile.plan import Plan, Step
from picompile.runtime import mpc
from picompile.runtime.backend import Backend, RunResult, StepTiming
from picompile.runtime.bfv import (
    BfvClient,
    BfvPublicMaterial,
    BfvServer,
    BlockPair,
    crt_lift,
    horner_mod,
    mulmod,
    row_rotation,
)
from picompile.runtime.channel import Channel, InMemoryChannel
from picompile.runtime.plain import op_matrix

PROTOCOL_VERSION = 1
DEALER_IDLE_SECONDS = 24 * 3600
CLIENT, SERVER = 0, 1
LIMB_BITS = 13  # w mod t (< 2^50) in 4 limbs: |W_int| < 2^24, so products stay below 2^63
LIMBS = 4
PRIVATE_KEYS = ("weight", "bias", "scale", "shift", "constant", "diagonals", "bias_slots",
                "constant_slots", "slope")


# --------------------------------------------------------------------------- randomness


def secure_uint64(shape: tuple[int, ...]) -> np.ndarray:
    """Uniform 64-bit words from the operating system's CSPRNG."""
    n = int(np.prod(shape))
    return np.frombuffer(os.urandom(8 * n), dtype=np.uint64).reshape(shape).copy()


def secure_below_prime(t: int, shape: tuple[int, ...]) -> np.ndarray:
    """Uniform integers in [0, t) (rejection sampling on t.bit_length() random bits)."""
    n = int(np.prod(shape))
    bits = t.bit_length()
    out = np.empty(0, dtype=np.int64)
    while out.size < n:
        draw = (secure_uint64((2 * (n - out.size) + 8,)) >> np.uint64(64 - bits)).astype(np.int64)
        out = np.concatenate([out, draw[draw < t]])
    return out[:n].reshape(shape)


class SecureDealer(mpc.Dealer):
    """The MPC dealer with its randomness from the OS CSPRNG instead of PCG64."""

    def __init__(self) -> None:
        super().__init__(None, mpc.Transcript())

    def _uniform(self, shape: tuple[int, ...]) -> np.ndarray:
        return secure_uint64(shape)


# --------------------------------------------------------------------------- plan views


def hybrid_settings(plan: Plan) -> dict[str, Any]:
    if plan.protocol != "hybrid" or "bfv" not in plan.security:
        raise PlanError("this plan is not a hybrid plan: compile it with --protocol hybrid "
                        "--calib DATA to run it with the hybrid backend")
    return plan.security["bfv"]


def client_view(plan: Plan) -> Plan:
    """The plan without the server's secrets (weights, biases, diagonals, constants): what the
    client may hold. It keeps shapes, layouts' rotation lists, polynomial coefficients (public in
    this protocol), the BFV parameters and the client head; ``security["client_view"]`` marks it."""
    if plan.security.get("client_view"):
        return plan
    public_steps = {s.name for s in plan.steps if s.meta.get("public_matrix")}
    private = {name for name in plan.arrays if name.rsplit(".", 1)[-1] in PRIVATE_KEYS
               and name.rsplit(".", 1)[0] not in public_steps}
    steps = [replace(step, params={role: key for role, key in step.params.items()
                                   if key not in private}) for step in plan.steps]
    arrays = {name: value for name, value in plan.arrays.items() if name not in private}
    return replace(plan, steps=steps, arrays=arrays,
                   security={**plan.security, "client_view": True})


def fingerprint(plan: Plan) -> str:
    """sha256 of the public part both parties must agree on (steps, shapes, parameters)."""
    public = {
        "steps": [[s.name, s.op, s.inputs, s.outputs, s.meta.get("hybrid")] for s in plan.steps],
        "values": {k: list(v.shape) for k, v in sorted(plan.values.items())},
        "bfv": {k: plan.security["bfv"][k] for k in ("primes", "ring_dimension",
                                                     "fractional_bits")},
        "rotations": plan.security.get("rotation_keys", []),
        "polynomials": {s.name: np.asarray(plan.arrays[s.params["coefficients"]]).tolist()
                        for s in plan.steps if s.op == "Polynomial"},
    }
    return hashlib.sha256(json.dumps(public, sort_keys=True).encode()).hexdigest()


def _size(plan: Plan, value: str) -> int:
    return int(np.prod(plan.values[value].shape))


def _protocol(step: Step) -> str:
    return step.meta.get("hybrid", {}).get("protocol", "local")


def _linear_steps(plan: Plan) -> list[Step]:
    """The steps with weights, evaluated under HE."""
    return [s for s in plan.steps if _protocol(s) == "he_linear"]


@dataclass
class FlashPending:
    """A Flash quadratic not evaluated yet: the share of its input, applied under HE inside the
    next linear step (fused)."""

    step: Step
    share: np.ndarray

    def reshape(self, shape: tuple[int, ...]) -> FlashPending:
        return self


def flash_coefficients(plan: Plan, step: Step) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per element of the activation's input: round(2^c · (a, b, k)) of a·y² + b·y + k."""
    from picompile.passes.hybrid_parameters import power_coefficients

    bits = int(step.meta["hybrid"]["coefficient_bits"])
    power = power_coefficients(plan.param(step, "coefficients"), plan.param(step, "interval"))
    groups = _channel_groups(plan, step).reshape(-1)
    rows = power[groups] if power.shape[0] > 1 else np.broadcast_to(power[0], (groups.size, 3))
    scaled = np.rint(rows * 2.0 ** bits).astype(np.int64)
    return scaled[:, 2], scaled[:, 1], scaled[:, 0]


@dataclass
class PublicLinear:
    """A linear step without weights (pooling, padding, subsampling): each party applies the
    public matrix to its own share. Integer matrices are exact on Z_2^64 shares; others are
    scaled by 2^f and truncated locally (SecureML)."""

    matrix: scipy.sparse.csr_matrix
    bias: np.ndarray
    rescale: bool

    @classmethod
    def from_plan(cls, plan: Plan, step: Step, fractional_bits: int) -> PublicLinear:
        rows, cols, values, bias = op_matrix(plan, step)
        integral = bool(np.all(values == np.rint(values)))
        scaled = values if integral else values * 2.0 ** fractional_bits
        n_in, n_out = _size(plan, step.inputs[0]), _size(plan, step.outputs[0])
        matrix = scipy.sparse.csr_matrix((np.rint(scaled).astype(np.int64), (rows, cols)),
                                         shape=(n_out, n_in), dtype=np.int64)
        return cls(matrix, bias, not integral)


# --------------------------------------------------------------------------- wire helpers


def _bit_positions(mask: int) -> np.ndarray:
    return np.array([i for i in range(64) if mask >> i & 1], dtype=np.uint64)


def pack_bits(arrays: list[np.ndarray], masks: list[int]) -> np.ndarray:
    """Only the bits under each array's mask, packed 8 per byte."""
    chunks = []
    for array, mask in zip(arrays, masks, strict=True):
        positions = _bit_positions(mask)
        words = np.asarray(array, dtype=np.uint64).reshape(-1)
        chunks.append(((words[None, :] >> positions[:, None]) & np.uint64(1)).astype(np.uint8)
                      .reshape(-1))
    return np.packbits(np.concatenate(chunks)) if chunks else np.zeros(0, np.uint8)


def unpack_bits(packed: np.ndarray, shapes: list[tuple[int, ...]], masks: list[int]
                ) -> list[np.ndarray]:
    sizes = [len(_bit_positions(m)) * int(np.prod(s)) for s, m in zip(shapes, masks, strict=True)]
    if packed.dtype != np.uint8 or packed.size != -(-sum(sizes) // 8):
        raise ProtocolError("malformed bit-packed message")
    bits = np.unpackbits(packed, count=sum(sizes)).astype(np.uint64)
    out, start = [], 0
    for shape, mask, size in zip(shapes, masks, sizes, strict=True):
        positions = _bit_positions(mask)
        block = bits[start:start + size].reshape(len(positions), -1)
        start += size
        words = np.bitwise_or.reduce(block << positions[:, None], axis=0) if len(positions) \
            else np.zeros(block.shape[1], np.uint64)
        out.append(words.reshape(shape))
    return out


def _arrays(payload: Any, count: int, what: str) -> list[np.ndarray]:
    if not isinstance(payload, list) or len(payload) != count or not all(
            isinstance(a, np.ndarray) for a in payload):
        raise ProtocolError(f"malformed {what} message")
    return payload


def make_exchange(channel: Channel, party: int) -> Callable[..., list[np.ndarray]]:
    """The two-party ``open_``: send this party's messages, receive the peer's, combine.

    The client sends first and the server answers, so two large messages never wait on each
    other's socket buffers."""

    def exchange(label: str, msg0: list, msg1: list, op: str, masks: list[int] | None
                 ) -> list[np.ndarray]:
        own = [np.asarray(m, dtype=np.uint64) for m in (msg0 if party == CLIENT else msg1)]
        if op == "xor" and masks is not None:
            payload: Any = [pack_bits(own, list(masks))]
        else:
            payload = own
        if party == CLIENT:
            channel.send("open", payload)
            received = channel.expect("open")
        else:
            received = channel.expect("open")
            channel.send("open", payload)
        if op == "xor" and masks is not None:
            (packed,) = _arrays(received, 1, "open")
            peer = unpack_bits(packed, [m.shape for m in own], list(masks))
        else:
            peer = _arrays(received, len(own), "open")
            if any(p.shape != m.shape or p.dtype != np.uint64 for p, m in zip(peer, own,
                                                                              strict=True)):
                raise ProtocolError("malformed open message: wrong shape or type")
        with np.errstate(over="ignore"):
            if op == "add":
                return [m + p for m, p in zip(own, peer, strict=True)]
            return [m ^ p for m, p in zip(own, peer, strict=True)]

    return exchange


# --------------------------------------------------------------------------- dealer


class RemoteDealer:
    """Party-side proxy of the dealer: asks for each correlation, receives its own part.

    Returns the same structure as :class:`picompile.runtime.mpc.Dealer`, the peer's part filled
    with zeros (never read by this party's computations)."""

    def __init__(self, channel: Channel, party: int) -> None:
        self.channel = channel
        self.party = party

    def _request(self, method: str, shapes: list[tuple[int, ...]], masks: list[int],
                 label: str, count: int) -> list[np.ndarray]:
        self.channel.send("dealer", {"method": method, "shapes": [list(s) for s in shapes],
                                     "masks": [str(m) for m in masks], "label": label})
        return _arrays(self.channel.expect("dealer"), count, "dealer")

    def _pair(self, own: tuple) -> tuple[tuple, tuple]:
        zeros = tuple(np.zeros_like(a) for a in own)
        return (own, zeros) if self.party == CLIENT else (zeros, own)

    def beaver_triples(self, shape: tuple[int, ...], label: str = "mul") -> tuple[tuple, tuple]:
        return self._pair(tuple(self._request("beaver_triples", [shape], [], label, 3)))

    def square_pairs(self, shape: tuple[int, ...], label: str = "square") -> tuple[tuple, tuple]:
        return self._pair(tuple(self._request("square_pairs", [shape], [], label, 2)))

    def random_bits(self, shape: tuple[int, ...], label: str = "b2a") -> tuple[tuple, tuple]:
        (packed, arithmetic) = self._request("random_bits", [shape], [1], label, 2)
        (bits,) = unpack_bits(packed, [shape], [1])
        return self._pair((bits, arithmetic))

    def and_triples(self, specs: list[tuple[tuple[int, ...], int]], label: str = "and"
                    ) -> list[tuple[tuple, tuple]]:
        shapes = [tuple(s) for s, _ in specs]
        masks = [m for _, m in specs]
        (packed,) = self._request("and_triples", shapes, masks, label, 1)
        words = unpack_bits(packed, [s for s in shapes for _ in range(3)],
                            [m for m in masks for _ in range(3)])
        return [self._pair(tuple(words[3 * j:3 * j + 3])) for j in range(len(specs))]


class RecordingDealer:
    """Forwards every request to another dealer and keeps the answers in order."""

    def __init__(self, dealer: Any) -> None:
        self.dealer = dealer
        self.log: list[tuple[str, Any]] = []

    def __getattr__(self, method: str) -> Callable[..., Any]:
        def call(*args: Any, **kwargs: Any) -> Any:
            result = getattr(self.dealer, method)(*args, **kwargs)
            self.log.append((method, result))
            return result
        return call


class ReplayDealer:
    """Hands out prefetched correlations in the order they were fetched."""

    def __init__(self, log: list[tuple[str, Any]]) -> None:
        self.log = list(reversed(log))

    def __getattr__(self, method: str) -> Callable[..., Any]:
        def call(*args: Any, **kwargs: Any) -> Any:
            if not self.log:
                raise ProtocolError("ran out of prefetched dealer correlations")
            fetched, result = self.log.pop()
            if fetched != method:
                raise ProtocolError(f"prefetched {fetched} where {method} is needed")
            return result
        return call


def _dry_exchange(label: str, msg0: list, msg1: list, op: str, masks: Any) -> list[np.ndarray]:
    """Stand-in for the peer during the offline dry run: every opening is zero."""
    return [np.zeros(np.shape(m), dtype=np.uint64) for m in msg0]


def run_dealer(channels: tuple[Channel, Channel], *, timeout: float | None = None) -> int:
    """Serve correlated randomness to the two parties until both say ``bye``; returns the
    number of requests served. Both parties must ask for the same things in the same order."""
    dealer = SecureDealer()
    served = 0
    while True:
        requests = [ch.recv(timeout=timeout) for ch in channels]
        kinds = {m.kind for m in requests}
        if kinds == {"bye"}:
            return served
        if kinds != {"dealer"} or requests[0].payload != requests[1].payload:
            for ch in channels:
                ch.send_error("the parties asked the dealer for different correlations")
            raise ProtocolError("the parties asked the dealer for different correlations")
        request = requests[0].payload
        shapes = [tuple(int(d) for d in s) for s in request["shapes"]]
        masks = [int(m) for m in request["masks"]]
        label = str(request["label"])
        method = request["method"]
        if method == "beaver_triples":
            parts = [list(p) for p in dealer.beaver_triples(shapes[0], label)]
        elif method == "square_pairs":
            parts = [list(p) for p in dealer.square_pairs(shapes[0], label)]
        elif method == "random_bits":
            parts = [[pack_bits([bits], [1]), arithmetic]
                     for bits, arithmetic in dealer.random_bits(shapes[0], label)]
        elif method == "and_triples":
            out = dealer.and_triples(list(zip(shapes, masks, strict=True)), label)
            parts = [[pack_bits([w for t in out for w in t[p]],
                                [m for m in masks for _ in range(3)])] for p in (0, 1)]
        else:
            raise ProtocolError(f"unknown dealer request {method!r}")
        for ch, part in zip(channels, parts, strict=True):
            ch.send("dealer", part)
        served += 1


# --------------------------------------------------------------------------- shared kernels


@dataclass
class LinearKernel:
    """Server-side integer form of one linear step (from the plan's weights)."""

    weight_bits: int
    matrix: scipy.sparse.csr_matrix   # (n_out, n_in) int64: round(W · 2^weight_bits)
    bias: np.ndarray                   # (n_out,) int64 at scale 2^(f + weight_bits)
    pairs: list[BlockPair]             # the blocked map for BFV (pre-rotated diagonals)
    slots: int
    input_blocks: int
    output_blocks: int

    @classmethod
    def from_plan(cls, plan: Plan, step: Step, fractional_bits: int) -> LinearKernel:
        layout = step.meta["hybrid_layout"]
        slots = int(layout["slots"])
        weight_bits = int(step.meta["hybrid"]["weight_bits"])
        rows, cols, values, bias = op_matrix(plan, step)
        integer = np.rint(values * 2.0 ** weight_bits).astype(np.int64)
        n_in, n_out = _size(plan, step.inputs[0]), _size(plan, step.outputs[0])
        matrix = scipy.sparse.csr_matrix((integer, (rows, cols)), shape=(n_out, n_in),
                                         dtype=np.int64)
        bias_int = np.rint(bias * 2.0 ** (fractional_bits + weight_bits)).astype(np.int64)
        input_blocks = int(layout["input_blocks"])
        pair_of = (rows // slots) * input_blocks + cols // slots
        order = np.argsort(pair_of, kind="stable")
        pairs = []
        for pair in layout["pairs"]:
            key = pair["output_block"] * input_blocks + pair["input_block"]
            lo, hi = np.searchsorted(pair_of[order], [key, key + 1])
            chosen = order[lo:hi]
            local_rows = rows[chosen] % slots
            local = cols[chosen] % slots - local_rows
            offsets = np.asarray(pair["offsets"], dtype=np.int64)
            position = np.searchsorted(offsets, local)
            if np.any(position >= len(offsets)) or np.any(offsets[np.minimum(
                    position, len(offsets) - 1)] != local):
                raise PlanError(f"{step.name}: the plan's layout does not match its weights")
            diagonals = np.zeros((len(offsets), slots), dtype=np.int32)
            diagonals[position, local_rows] = integer[chosen]
            baby = int(pair["baby_step"])
            entries = []
            for offset, row in zip(offsets.tolist(), diagonals, strict=True):
                giant = (offset // baby) * baby
                entries.append((row_rotation(giant, slots), row_rotation(offset - giant, slots),
                                np.roll(row, giant)))
            pairs.append(BlockPair(int(pair["output_block"]), int(pair["input_block"]),
                                   entries))
        return cls(weight_bits, matrix, bias_int, pairs, slots, input_blocks,
                   int(layout["output_blocks"]))

    def apply_mod(self, w: np.ndarray, t: int) -> np.ndarray:
        """W_int · w mod t exactly, for int64 w (limbs keep every partial sum below 2^63)."""
        residues = np.mod(w, t)
        partials = [np.mod(self.matrix @ ((residues >> (LIMB_BITS * limb))
                                          & ((1 << LIMB_BITS) - 1)), t) for limb in range(LIMBS)]
        return horner_mod(partials, LIMB_BITS, t)


def split_blocks(vector: np.ndarray, slots: int) -> list[np.ndarray]:
    """A flat vector as consecutive rows of ``slots`` values (the last one zero-padded)."""
    count = -(-vector.size // slots)
    padded = np.zeros(count * slots, dtype=vector.dtype)
    padded[:vector.size] = vector
    return list(padded.reshape(count, slots))


def _channel_groups(plan: Plan, step: Step) -> np.ndarray:
    """Per element of a step's input: its channel (axis 1), for per-channel coefficients."""
    shape = tuple(plan.values[step.inputs[0]].shape)
    if len(shape) < 2:
        return np.zeros(shape, dtype=np.int64)
    index = np.arange(shape[1]).reshape((1, shape[1]) + (1,) * (len(shape) - 2))
    return np.broadcast_to(index, shape)


def polynomial_on_shares(session: mpc.Session, plan: Plan, step: Step, x: mpc.Shared
                         ) -> mpc.Shared:
    from picompile.passes.hybrid_parameters import power_coefficients

    power = power_coefficients(plan.param(step, "coefficients"), plan.param(step, "interval"))
    if power.shape[0] == 1:
        coefficients = [float(c) for c in power[0]]
    else:
        groups = _channel_groups(plan, step)
        coefficients = [power[:, k][groups] for k in range(power.shape[1])]
    return mpc.polynomial(session, x, coefficients)


def _max_pool_windows(plan: Plan, step: Step) -> tuple[np.ndarray, np.ndarray]:
    """Index array (out_size, window) into the flat input, and a mask of padded positions."""
    shape = tuple(plan.values[step.inputs[0]].shape)
    from picompile.runtime.tensor_ops import _pad_spatial, _windows

    attrs = step.attrs
    index = np.arange(int(np.prod(shape)), dtype=np.float64).reshape(shape)
    padded = _pad_spatial(index, attrs.get("pads", [0] * 4), value=-1.0)
    windows = _windows(padded, attrs["kernel_shape"], attrs.get("strides", [1, 1]),
                       attrs.get("dilations", [1, 1]))
    windows = np.asarray(windows)
    out_shape = tuple(plan.values[step.outputs[0]].shape)
    flat = windows.reshape(int(np.prod(out_shape)), -1).astype(np.int64)
    return np.where(flat < 0, 0, flat), flat < 0


# --------------------------------------------------------------------------- the parties


@dataclass
class PartyResult:
    output: np.ndarray | None
    traffic: dict[str, Any]
    seconds: dict[str, float]
    timings: list[StepTiming] = field(default_factory=list)


class _Party:
    """What client and server share: fixed point, the MPC session over the channels."""

    party: int

    def __init__(self, plan: Plan, channel: Channel, dealer: Channel | None) -> None:
        settings = hybrid_settings(plan)
        self.plan = plan
        self.channel = channel
        self.dealer_channel = dealer
        self.fp = mpc.FixedPoint(int(settings["fractional_bits"]))
        self.public_linear: dict[str, PublicLinear] = {}
        self.primes = [int(t) for t in settings["primes"]]
        self.slots = int(settings["slots"])
        self.needs_dealer = any(s.op in ("Relu", "MaxPool") or (
            _protocol(s) == "beaver_polynomial" and plan.param(s, "coefficients").shape[1] > 2)
            for s in plan.steps)
        self.flash = {s.name: s for s in plan.steps if _protocol(s) == "flash_quadratic"}
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
        """Every step in plan order: ``linear`` for HE linear steps, shares for the rest."""
        for step in self.plan.steps:
            args = [env[v] for v in step.inputs]
            if _protocol(step) == "flash_quadratic":
                env[step.outputs[0]] = FlashPending(step, args[0])
                continue
            if isinstance(args[0], FlashPending) and step.op == "Reshape":
                env[step.outputs[0]] = args[0]
                continue
            if _protocol(step) == "he_linear":
                env[step.outputs[0]] = linear(step, args[0])
            else:
                env[step.outputs[0]] = self.share_step(session, step, args)
        return env

    def prefetch_correlations(self) -> list[tuple[str, Any]]:
        """Offline: fetch every dealer correlation the inference will use, in order, by a dry
        run of the share protocols on zeros (their structure does not depend on the data)."""
        if self.dealer_channel is None:
            return []
        recorder = RecordingDealer(RemoteDealer(self.dealer_channel, self.party))
        session = mpc.Session(fp=self.fp, dealer_seed=None, exchange=_dry_exchange)
        session.dealer = recorder
        env = {spec.name: np.zeros(spec.shape, dtype=np.uint64) for spec in self.plan.inputs}
        self.walk(session, env, lambda step, _: np.zeros(self.plan.values[step.outputs[0]].shape,
                                                         dtype=np.uint64))
        return recorder.log

    def shared(self, own: np.ndarray) -> mpc.Shared:
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
        if _protocol(step) == "local_linear":
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
            return polynomial_on_shares(session, plan, step, self.shared(x)).share_of(self.party)
        if step.op == "MaxPool":
            index, padded = _max_pool_windows(plan, step)
            flat = x.reshape(-1)[index]
            if self.party == CLIENT:  # padding is −∞ for max: a very negative public value
                flat = np.where(padded, self.fp.encode(-self.fp.max_abs / 4), flat)
            else:
                flat = np.where(padded, np.uint64(0), flat)
            result = mpc.maximum_reduce(session, self.shared(flat), axis=-1)
            return result.share_of(self.party).reshape(shape)
        raise BackendError(f"the hybrid backend has no share kernel for {step.op}")

    def add_constant(self, step: Step, x: np.ndarray) -> np.ndarray:
        return x


def require_server_plan(plan: Plan) -> None:
    if plan.security.get("client_view"):
        raise PlanError("this is a client plan (no weights): only `picompile client` can use it; "
                        "the server and the other backends need the full plan")


class HybridServer(_Party):
    """Holds the weights; evaluates linear layers under HE and in plaintext on masked values.

    ``dealer_connect(session)`` opens the dealer connection once the client's ``hello`` names
    the session (TCP deployments); in-process runs pass the dealer channel directly."""

    party = SERVER

    def __init__(self, plan: Plan, channel: Channel, dealer: Channel | None = None,
                 dealer_connect: Callable[[str], Channel] | None = None) -> None:
        require_server_plan(plan)
        self.dealer_connect = dealer_connect
        super().__init__(plan, channel, dealer)
        f = self.fp.fractional_bits
        self.kernels = {}
        by_name = {s.name: s for s in plan.steps}
        for step in _linear_steps(plan):
            source = step.meta["hybrid"].get("flash_from")
            bias_bits = f if source is None else (
                int(by_name[source].meta["hybrid"]["coefficient_bits"]) + 2 * f)
            self.kernels[step.name] = LinearKernel.from_plan(plan, step, bias_bits)
        self.offline_kernels = {name: k for name, k in self.kernels.items()
                                if "flash_from" not in by_name[name].meta["hybrid"]}
        self.flash_inputs: dict[str, tuple[list, list]] = {}
        self.fingerprint = fingerprint(plan)
        self.bfv: BfvServer | None = None
        self.public_material_bytes = 0

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
            if hello.get("plan") != self.fingerprint:
                channel.send_error("plan mismatch: the client and the server hold different "
                                   "plans")
                raise ProtocolError("the client's plan differs from the server's")
            if self.needs_dealer and self.dealer_channel is None:
                self.dealer_channel = self.dealer_connect(str(hello.get("session", "")))
            channel.send("hello", {"version": PROTOCOL_VERSION, "plan": self.fingerprint})
            keys = channel.expect("keys")
            try:
                material = BfvPublicMaterial.from_payload(keys)
            except (KeyError, TypeError) as exc:
                raise ProtocolError(f"malformed keys message: {exc}") from None
            self.public_material_bytes = material.size
            self.bfv = BfvServer(self.primes, material)
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

    def preprocess(self, payload: Any) -> dict[str, list[np.ndarray]]:
        """Enc(−m) per linear step → Enc(W·(−m) − r); returns r per step and prime."""
        expected = set(self.offline_kernels) | {f"flash:{name}" for name in self.flash}
        if not isinstance(payload, dict) or set(payload) != expected:
            raise ProtocolError("malformed ciphertexts message: wrong set of linear steps")
        for name, step in self.flash.items():
            data = payload[f"flash:{name}"]
            blocks = -(-_size(self.plan, step.inputs[0]) // self.slots)
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
        plan, channel = self.plan, self.channel

        def linear(step: Step, a_server: np.ndarray | FlashPending) -> np.ndarray:
            if isinstance(a_server, FlashPending):
                return self.flash_linear(step, a_server)
            kernel = self.kernels[step.name]
            n_in = kernel.matrix.shape[1]
            u = _arrays([channel.expect("reshare")], 1, "reshare")[0]
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
        """Flash's quadratic fused with this linear step (online, no dealer): the client's share
        c = −m of the activation input y came encrypted offline with c²; with s = u + y_S
        (= y + m) the server computes Enc(q(y)) = A⊙Enc(c²) + (2A·s + B·2^f)⊙Enc(c) +
        (A·s² + B·2^f·s + K·2^2f), applies W under HE, masks with r and replies."""
        plan, channel, f = self.plan, self.channel, self.fp.fractional_bits
        kernel = self.kernels[step.name]
        activation = pending.step
        n = _size(plan, activation.inputs[0])
        u = _arrays([channel.expect("reshare")], 1, "reshare")[0]
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
        n_out = kernel.matrix.shape[0]
        r = [secure_below_prime(t, (n_out,)) for t in self.primes]
        added = [split_blocks(np.mod(np.mod(kernel.bias, t) - ri, t), kernel.slots)
                 for ri, t in zip(r, self.primes, strict=True)]
        reply = self.bfv.linear_ciphertexts(
            quadratic, kernel.pairs, kernel.output_blocks, step.name,
            add=[[added[p][block] for p in range(len(self.primes))]
                 for block in range(kernel.output_blocks)])
        channel.send("ciphertexts", reply)
        shift = int(step.meta["hybrid"]["output_shift"])
        return crt_lift(r, self.primes, shift).reshape(plan.values[step.outputs[0]].shape)


class HybridClient(_Party):
    """Holds the input and the BFV secret keys; never sees weights (uses the client view)."""

    party = CLIENT

    def __init__(self, plan: Plan, channel: Channel, dealer: Channel | None = None,
                 session: str | None = None) -> None:
        plan = client_view(plan)
        super().__init__(plan, channel, dealer)
        self.session_id = session or os.urandom(16).hex()
        self.linear = {s.name: s for s in _linear_steps(plan)
                       if "flash_from" not in s.meta["hybrid"]}
        self.weight_bits = {s.name: int(s.meta["hybrid"]["weight_bits"])
                            for s in self.linear.values()}
        self.bfv: BfvClient | None = None
        self.fingerprint = fingerprint(plan)
        self.inferences = 0

    def setup(self) -> None:
        channel = self.channel
        with channel.phase("offline"):
            channel.send("hello", {"version": PROTOCOL_VERSION, "plan": self.fingerprint,
                                   "role": "client", "session": self.session_id})
            reply = channel.expect("hello")
            if not isinstance(reply, dict) or reply.get("plan") != self.fingerprint:
                raise ProtocolError("the server answered with another plan")
            rotations = [int(k) for k in self.plan.security.get("rotation_keys", [])]
            self.bfv = BfvClient(self.primes, rotations)
            if self.bfv.slots != self.slots:
                raise BackendError(f"OpenFHE chose {self.bfv.slots} BFV slots, the plan expects "
                                   f"{self.slots}: recompile the plan with this OpenFHE")
            channel.send("keys", self.bfv.public_material().to_payload())

    def infer(self, x: np.ndarray) -> tuple[np.ndarray, dict[str, float]]:
        """One inference: offline preprocessing, then the online phase. x has no batch axis."""
        plan, channel = self.plan, self.channel
        seconds = {}
        start = time.perf_counter()
        with channel.phase("offline"):
            m, z = self.preprocess()
            correlations = self.prefetch_correlations()
        seconds["offline"] = time.perf_counter() - start
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
                                              int(step.meta["hybrid"]["output_shift"]))
                return z[step.name].reshape(plan.values[step.outputs[0]].shape)

            spec = plan.inputs[0]
            env = {spec.name: self.fp.encode(x.reshape(spec.shape))}
            env = self.walk(self.session(correlations), env, linear)
            self.last_shares = env
            (server_share,) = _arrays(channel.expect("result"), 1, "result")
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
            n_in = _size(self.plan, step.inputs[0])
            m = secure_uint64((n_in,)) >> np.uint64(64 - 62)
            masks[name] = m
            encrypted[name] = [self.bfv.encrypt(block)
                               for block in split_blocks(-(m.astype(np.int64)), self.slots)]
        for name, step in self.flash.items():  # Flash: Enc(c), Enc(c²) for c = −m
            n_in = _size(self.plan, step.inputs[0])
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
        n_out = _size(self.plan, step.outputs[0])
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
        rows, totals = [], {"offline": 0.0, "online": 0.0}
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
        """Per inference: online/offline bytes (dealer traffic is offline; the one-time key
        upload is ``setup_key_bytes``), online flights, times."""
        traffic = self.channel.traffic
        batch = max(1, self.inferences)
        key_bytes = traffic.by_kind.get("keys", 0)
        return {
            "inferences": batch,
            "online_bytes": traffic["online"].bytes / batch,
            "online_flights": traffic["online"].rounds / batch,
            "offline_bytes": (traffic["offline"].bytes - key_bytes + dealer_bytes) / batch,
            "setup_key_bytes": key_bytes,
            "online_seconds": totals["online"] / batch,
            "offline_seconds": totals["offline"] / batch,
            "keygen_seconds": self.bfv.keygen_seconds if self.bfv else math.nan,
        }

    def finish(self) -> None:
        self.channel.send("bye")
        if self.dealer_channel is not None:
            self.dealer_channel.send("bye")


class HybridBackend(Backend):
    """Client, server and dealer in one process (threads, in-memory channels, bytes between).

    ``progress(description, done, total)`` is called after key setup and each sample."""

    name = "hybrid"

    def __init__(self, progress: Callable[[str, int, int], None] | None = None,
                 timeout: float = 300.0) -> None:
        self.progress = progress or (lambda description, done, total: None)
        self.timeout = timeout

    def execute(self, plan: Plan, inputs: dict[str, np.ndarray]) -> RunResult:
        hybrid_settings(plan)
        start = time.perf_counter()
        x = next(iter(inputs.values()))
        client_end, server_end = InMemoryChannel.pair(timeout=self.timeout)
        client_dealer, dealer_client = InMemoryChannel.pair(timeout=self.timeout)
        server_dealer, dealer_server = InMemoryChannel.pair(timeout=self.timeout)
        server = HybridServer(plan, server_end, server_dealer)
        client = HybridClient(plan, client_end, client_dealer)
        errors: list[BaseException] = []

        def guarded(target: Callable[[], Any]) -> Callable[[], None]:
            def run() -> None:
                try:
                    target()
                except BaseException as exc:  # noqa: BLE001 - reported to the caller
                    errors.append(exc)
            return run

        threads = [threading.Thread(target=guarded(server.serve), daemon=True)]
        if client.needs_dealer:
            threads.append(threading.Thread(
                target=guarded(lambda: run_dealer((dealer_client, dealer_server))), daemon=True))
        for thread in threads:
            thread.start()
        try:
            outputs, totals = client.run_all(x, self.progress)
        except ProtocolError:
            if errors:
                raise errors[0] from None
            raise
        for thread in threads:
            thread.join(timeout=self.timeout)
        if errors:
            raise errors[0]
        dealer_bytes = sum(ch.traffic.bytes_sent + ch.traffic.bytes_received
                           for ch in (dealer_client, dealer_server))
        return RunResult({plan.outputs[0].name: outputs}, seconds=time.perf_counter() - start,
                         backend=self.name, communication=client.communication(totals,
                                                                               dealer_bytes))


# --------------------------------------------------------------------------- TCP deployment


def parse_address(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    if not host or not port.isdigit():
        raise ProtocolError(f"address {text!r} is not HOST:PORT")
    return host, int(port)


def _dealer_hello(address: str, role: str, session: str, timeout: float) -> Channel:
    from picompile.runtime.channel import TcpChannel

    host, port = parse_address(address)
    channel = TcpChannel.connect(host, port, timeout=timeout)
    channel.send("hello", {"version": PROTOCOL_VERSION, "role": role, "session": session})
    return channel


def serve(plan: Plan, port: int, *, host: str = "127.0.0.1", dealer: str | None = None,
          once: bool = False, timeout: float = 300.0,
          on_listen: Callable[[int], None] | None = None,
          on_session: Callable[[int, float], None] | None = None) -> None:
    """Serve clients one after another on TCP (``once``: a single session)."""
    from picompile.runtime.channel import TcpChannel

    hybrid_settings(plan)
    listener = TcpChannel.listen(host, port, timeout=timeout)
    if on_listen is not None:
        on_listen(listener.port)
    try:
        while True:
            channel = listener.accept(timeout=None)
            start = time.perf_counter()
            connect = None if dealer is None else (
                lambda session: _dealer_hello(dealer, "server", session, timeout))
            server = HybridServer(plan, channel, dealer_connect=connect)
            try:
                count = server.serve()
                if on_session is not None:
                    on_session(count, time.perf_counter() - start)
            except ProtocolError:
                if once:
                    raise
            finally:
                channel.close()
                if server.dealer_channel is not None:
                    server.dealer_channel.close()
            if once:
                return
    finally:
        listener.close()


def client_run(plan: Plan, address: str, x: np.ndarray, *, dealer: str | None = None,
               timeout: float = 300.0) -> RunResult:
    """Connect to a server, run every sample of ``x`` (batch axis first), return the outputs
    (before the head) with per-inference communication and times."""
    from picompile.runtime.channel import TcpChannel

    host, port = parse_address(address)
    start = time.perf_counter()
    channel = TcpChannel.connect(host, port, timeout=timeout)
    session = os.urandom(16).hex()
    dealer_channel = None
    try:
        if dealer is not None:
            dealer_channel = _dealer_hello(dealer, "client", session, timeout)
        client = HybridClient(plan, channel, dealer_channel, session=session)
    except BaseException:
        channel.close()
        raise
    try:
        outputs, totals = client.run_all(x)
    finally:
        channel.close()
        if dealer_channel is not None:
            dealer_channel.close()
    dealer_bytes = 0 if dealer_channel is None else (
        dealer_channel.traffic.bytes_sent + dealer_channel.traffic.bytes_received)
    return RunResult({plan.outputs[0].name: outputs}, seconds=time.perf_counter() - start,
                     backend="hybrid", communication=client.communication(totals, dealer_bytes))


def dealer_service(port: int, *, host: str = "127.0.0.1", sessions: int | None = None,
                   timeout: float = 300.0, on_listen: Callable[[int], None] | None = None
                   ) -> None:
    """The trusted dealer as a TCP service: pairs the client's and the server's connections by
    session id and serves each pair in a thread (``sessions``: stop after that many)."""
    from picompile.runtime.channel import TcpChannel

    # Between requests the dealer waits as long as both parties stay connected (their HE work
    # can take minutes); a party that disconnects is still noticed at once.
    listener = TcpChannel.listen(host, port, timeout=max(timeout, DEALER_IDLE_SECONDS))
    if on_listen is not None:
        on_listen(listener.port)
    pending: dict[str, dict[str, Channel]] = {}
    threads: list[threading.Thread] = []
    served = 0
    try:
        while sessions is None or served < sessions:
            channel = listener.accept(timeout=None)
            try:
                hello = channel.expect("hello")
                role, session = str(hello["role"]), str(hello["session"])
                if role not in ("client", "server") or hello.get("version") != PROTOCOL_VERSION:
                    raise KeyError(role)
            except (ProtocolError, KeyError, TypeError):
                channel.close()
                continue
            pair = pending.setdefault(session, {})
            pair[role] = channel
            if len(pair) == 2:
                del pending[session]
                ends = (pair["client"], pair["server"])

                def run(ends: tuple[Channel, Channel] = ends) -> None:
                    try:
                        run_dealer(ends)
                    except ProtocolError:
                        pass
                    finally:
                        for end in ends:
                            end.close()

                thread = threading.Thread(target=run, daemon=True)
                thread.start()
                threads.append(thread)
                served += 1
        for thread in threads:  # each ends when its parties say bye or disconnect
            thread.join()
    finally:
        listener.close()
