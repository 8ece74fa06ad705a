"""deployment — what a compiled plan costs its client over a network, and the protocol choice.

Reads: a compiled plan — FHE: the CKKS ring and depth, the cost pass's predicted server seconds
and evaluation-key bytes, the input/output ciphertexts; hybrid: the BFV primes, each step's
protocol and blocked layout, the predicted bytes and rounds — a hybrid cost table (BFV
operations per prime and share protocols per element: measured by ``picompile
calibrate-costs``, else :data:`DEFAULT_HYBRID_COSTS`, measured on the development machine) and
a :class:`Network` (bandwidth, round-trip time).
Writes: :class:`DeploymentCost` per plan and a :class:`ProtocolChoice` (JSON-able; the compiler
stores it in ``plan.analysis["protocol_choice"]`` for the reports).

The model. Per inference the client waits for the *online* phase: compute (server and client)
+ bytes / bandwidth + round trips × RTT. The hybrid protocol's offline phase (Enc(−m), the
server's masked replies, Flash's Enc(c), Enc(c²), the dealer's correlations) is input
independent and runs ahead of time, so it is reported (bytes, seconds, end-to-end latency when
it is not run ahead) but not counted in the latency the choice minimises. Keys are sent once
per session: their bytes and generation time are reported, not charged per inference.
"""

from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass

from picompile.cost import load_operation_costs
from picompile.errors import OptionError
from picompile.plan import Plan

#: The network a ``--protocol auto`` compile assumes unless ``--network`` says otherwise.
DEFAULT_NETWORK = "100Mbit,20ms"

#: Measured on the development machine (2 cores, openfhe 1.6.1, BFV N = 16384 per 50-bit
#: prime, 128-bit): seconds per ciphertext and prime, per element or per nonzero weight.
DEFAULT_HYBRID_COSTS = {
    "source": "default (measured on the development machine)",
    "ring_dimension": 16384, "keygen": 0.076, "rotation_keygen": 0.015,
    "public_key_bytes": 1_051_143, "rotation_key_bytes": 4_195_596,
    "ciphertext_bytes": 1_049_687, "encrypt": 0.021, "decrypt": 0.015, "receive": 0.030,
    "reply": 0.026, "hoisted_precompute": 0.0105, "hoisted_rotate": 0.0021, "rotate": 0.0119,
    "diagonal": 0.00039, "relu": 4.1e-7, "square": 2.1e-8, "matmul_nonzero": 2.7e-9,
    "relu_call": 0.002, "square_call": 0.0002, "message": 0.0001,
}

_UNITS = {"": 1, "k": 1e3, "m": 1e6, "g": 1e9}
_TIMES = {"s": 1.0, "ms": 1e-3, "us": 1e-6}


@dataclass(frozen=True)
class Network:
    """A client–server link: bandwidth (bits per second, each way) and round-trip time."""

    bandwidth_bits: float
    rtt_seconds: float

    @classmethod
    def parse(cls, text: str) -> Network:
        """``BANDWIDTH,RTT``, e.g. ``100Mbit,20ms``, ``1Gbit,0.5ms``, ``10Mbit,100ms``."""
        match = re.fullmatch(r"\s*([\d.]+)\s*([kKmMgG]?)bit(?:/s)?\s*,\s*([\d.]+)\s*(s|ms|us)\s*",
                             text or "")
        if match is None:
            raise OptionError(f"--network {text!r}: expected BANDWIDTH,RTT such as "
                              "100Mbit,20ms (units kbit/Mbit/Gbit and s/ms/us)")
        bandwidth = float(match.group(1)) * _UNITS[match.group(2).lower()]
        rtt = float(match.group(3)) * _TIMES[match.group(4)]
        if bandwidth <= 0:
            raise OptionError(f"--network {text!r}: the bandwidth must be positive")
        return cls(bandwidth, rtt)

    def describe(self) -> str:
        unit, factor = next((u, f) for u, f in (("Gbit/s", 1e9), ("Mbit/s", 1e6),
                                                 ("kbit/s", 1e3), ("bit/s", 1.0))
                            if self.bandwidth_bits >= f or f == 1.0)
        return f"{self.bandwidth_bits / factor:g} {unit}, {self.rtt_seconds * 1e3:g} ms RTT"

    def transfer_seconds(self, size: float) -> float:
        return 8.0 * size / self.bandwidth_bits


@dataclass(frozen=True)
class DeploymentCost:
    """One plan's predicted cost per inference (bytes both ways) and per session (keys)."""

    protocol: str
    online_compute_seconds: float
    online_bytes: float
    online_round_trips: int
    offline_compute_seconds: float
    offline_bytes: float
    offline_round_trips: int
    key_bytes: float
    keygen_seconds: float | None
    dealer: bool

    def online_seconds(self, network: Network) -> float:
        return (self.online_compute_seconds + network.transfer_seconds(self.online_bytes)
                + self.online_round_trips * network.rtt_seconds)

    def offline_seconds(self, network: Network) -> float:
        return (self.offline_compute_seconds + network.transfer_seconds(self.offline_bytes)
                + self.offline_round_trips * network.rtt_seconds)


def hybrid_costs() -> dict:
    """The measured hybrid cost table of this machine if ``calibrate-costs`` cached one."""
    return load_operation_costs().get("hybrid") or DEFAULT_HYBRID_COSTS


def fhe_cost(plan: Plan) -> DeploymentCost:
    """CKKS: the server's predicted evaluation, the input ciphertexts up (fresh, all towers) and
    the outputs down (at the level they leave), one round trip; the evaluation keys once."""
    ckks = plan.ckks
    if ckks is None or not ckks.runnable:
        raise OptionError("the FHE plan is not runnable: " + (ckks.reason if ckks else "no CKKS"))
    ring, depth = ckks.ring_dimension, ckks.multiplicative_depth
    slots = max(1, ckks.slots)
    cost = plan.analysis.get("cost", {})
    server = float(ckks.predicted_seconds or cost.get("predicted_seconds") or 0.0)
    ciphertexts_in = sum(math.ceil(math.prod(spec.shape[1:]) / slots) for spec in plan.inputs)
    ciphertexts_out = sum(math.ceil(math.prod(spec.shape[1:]) / slots) for spec in plan.outputs)
    last = next((s.fhe for s in reversed(plan.steps) if s.fhe is not None), None)
    towers_in = depth + 1 - ckks.input_level
    towers_out = max(1, depth + 1 - (last.level_out if last is not None else 0))
    upload = ciphertexts_in * 2 * ring * towers_in * 8
    download = ciphertexts_out * 2 * ring * towers_out * 8
    table = hybrid_costs()
    crypto = table["encrypt"] + table["decrypt"]
    client = crypto * ring / table["ring_dimension"] * (ciphertexts_in * towers_in
                                                         + ciphertexts_out * towers_out) / 2
    memory = cost.get("predicted_server_memory_bytes") or {}
    keys = float(memory.get("evaluation_keys", 0.0)) + upload
    return DeploymentCost("fhe", server + client, upload + download, 1, 0.0, 0.0, 0, keys,
                          None, False)


def hybrid_cost(plan: Plan, table: dict | None = None) -> DeploymentCost:
    """BFV linear layers (offline: Enc(−m) up, W·(−m) − r back; online: the server's integer
    product), Flash quadratics (offline Enc(c), Enc(c²); online HE and a reply), share
    protocols per element; bytes and rounds from the plan's prediction."""
    table = table or hybrid_costs()
    bfv = plan.bfv
    if bfv is None:
        raise OptionError("not a hybrid plan")
    primes = len(bfv.primes)
    scale = bfv.ring_dimension / table["ring_dimension"]
    offline = online = 0.0
    for step in plan.steps:
        info = step.hybrid
        if info is None:
            continue
        elements = math.prod(plan.values[step.inputs[0]].shape)
        if info.protocol == "he_linear" and info.layout is not None:
            layout = info.layout
            he = _blocked_linear_seconds(layout, table) * primes * scale
            reply = layout.output_blocks * primes * (table["reply"] + table["decrypt"]) * scale
            if info.flash_from:
                online += he + reply
            else:
                offline += he + reply + layout.input_blocks * primes * (
                    table["encrypt"] + table["receive"]) * scale
                weights = _nonzero_weights(plan, step)
                online += weights * primes * table["matmul_nonzero"]
        elif info.protocol == "flash_quadratic":
            blocks = math.ceil(elements / bfv.slots)
            offline += 2 * blocks * primes * (table["encrypt"] + table["receive"]) * scale
            online += 3 * blocks * primes * table["diagonal"] * scale
            if info.fused_into is None:
                online += blocks * primes * (table["reply"] + table["decrypt"]) * scale
        elif info.protocol == "relu":
            online += table["relu_call"] + elements * table["relu"]
        elif info.protocol == "max_pool":
            window = math.prod(step.attrs.get("kernel_shape", [2, 2]))
            outputs = math.prod(plan.values[step.outputs[0]].shape)
            comparisons = max(1, math.ceil(math.log2(window)))
            online += comparisons * (table["relu_call"] + outputs * table["relu"])
        elif info.protocol == "beaver_polynomial":
            exact = info.exact_relus or 0
            degree = plan.param(step, "coefficients").shape[1] - 1
            online += (table["relu_call"] + exact * table["relu"]) if exact else 0.0
            online += max(0, degree - 1) * (table["square_call"]
                                             + (elements - exact) * table["square"])
    predicted = bfv.predicted or {}
    online += 2 * int(predicted.get("online_rounds", 0)) * table["message"]
    rotations = len(plan.rotation_keys)
    keys = primes * (table["public_key_bytes"] + rotations * table["rotation_key_bytes"])
    keygen = primes * (table["keygen"] + rotations * table["rotation_keygen"]) * scale
    needs = bool(plan.dealer_steps())
    dealer = needs and bfv.correlations == "dealer"
    # two-party correlations: the base OTs, then about one OT round trip per correlation request
    ot_round_trips = 2 + int(predicted.get("correlation_requests", 0)) \
        if needs and not dealer else 0
    return DeploymentCost("hybrid", online, float(predicted.get("online_bytes", 0)),
                          int(predicted.get("online_rounds", 0)), offline,
                          float(predicted.get("offline_bytes", 0)),
                          2 + int(dealer) + ot_round_trips, keys, keygen, dealer)


def _blocked_linear_seconds(layout, table: dict) -> float:
    """One prime's HE work of a blocked linear map: hoisted baby rotations per input block,
    giant rotations and a plaintext product per diagonal per block pair."""
    babies: dict[int, set[int]] = {}
    seconds = 0.0
    for pair in layout.pairs:
        babies.setdefault(pair.input_block, set()).update(b for b in pair.baby_rotations if b)
        seconds += sum(1 for g in pair.giant_rotations if g) * table["rotate"]
        seconds += len(pair.offsets) * table["diagonal"]
    for amounts in babies.values():
        if amounts:
            seconds += table["hoisted_precompute"] + len(amounts) * table["hoisted_rotate"]
    return seconds


def _nonzero_weights(plan: Plan, step) -> int:
    """Nonzero entries of a linear step's matrix, estimated from its weight tensor (a
    convolution's kernel touches each output position once per weight)."""
    if "weight" not in step.params:
        return math.prod(plan.values[step.outputs[0]].shape)
    weight = plan.param(step, "weight")
    outputs = math.prod(plan.values[step.outputs[0]].shape)
    if step.op == "Conv":
        return int(outputs * math.prod(weight.shape[1:]))
    return int(weight.size)


@dataclass(frozen=True)
class ProtocolChoice:
    """The comparison behind ``--protocol auto``: one row per protocol, the winner and why."""

    network: str
    objective: str
    rows: list[dict]
    chosen: str
    reason: str

    def to_json(self) -> dict:
        return asdict(self)


def choose_protocol(costs: dict[str, DeploymentCost | str], network: Network
                    ) -> ProtocolChoice:
    """The protocol with the lowest predicted online latency on ``network``; ``costs`` maps a
    protocol to its cost, or to the reason it could not be compiled."""
    rows, ready = [], {}
    for protocol, cost in costs.items():
        if isinstance(cost, str):
            rows.append({"protocol": protocol, "available": False, "reason": cost})
            continue
        online = cost.online_seconds(network)
        offline = cost.offline_seconds(network)
        ready[protocol] = online
        rows.append({
            "protocol": protocol, "available": True, "online_seconds": online,
            "online_compute_seconds": cost.online_compute_seconds,
            "online_transfer_seconds": network.transfer_seconds(cost.online_bytes),
            "online_round_trips": cost.online_round_trips,
            "online_bytes": cost.online_bytes, "offline_bytes": cost.offline_bytes,
            "offline_seconds": offline, "end_to_end_seconds": online + offline,
            "key_bytes": cost.key_bytes,
            "key_transfer_seconds": network.transfer_seconds(cost.key_bytes),
            "keygen_seconds": cost.keygen_seconds, "dealer": cost.dealer})
    if not ready:
        raise OptionError("--protocol auto: no protocol can run this model: " + "; ".join(
            f"{row['protocol']}: {row['reason']}" for row in rows))
    chosen = min(ready, key=ready.get)
    others = {p: s for p, s in ready.items() if p != chosen}
    if others:
        other, seconds = min(others.items(), key=lambda item: item[1])
        row = next(r for r in rows if r["protocol"] == chosen)
        bound = max(("compute", row["online_compute_seconds"]),
                    ("transfer", row["online_transfer_seconds"]),
                    ("round trips", row["online_round_trips"] * network.rtt_seconds),
                    key=lambda item: item[1])
        reason = (f"{chosen}: {ready[chosen]:.3g} s online per inference against {other}'s "
                  f"{seconds:.3g} s on {network.describe()} ({chosen}'s is mostly "
                  f"{bound[0]})")
    else:
        reason = f"{chosen}: the only protocol that compiles for this model"
    return ProtocolChoice(network.describe(), "online latency per inference (the hybrid "
                          "offline phase runs ahead of time; keys once per session)", rows,
                          chosen, reason)
