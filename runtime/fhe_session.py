"""fhe_session — FHE-only (CKKS) inference between a client and a server process.

Reads: an FHE plan — the server holds the full plan, the client only its
:func:`fhe_client_view` (no weights, diagonals, biases or polynomial coefficients: what the
client needs is the CKKS parameters, the rotation-key list, the slot maps and replication
periods of inputs and outputs, and the client head).
Writes: nothing; :func:`client_run` returns the decrypted outputs with times and traffic.

Protocol over a :class:`~picompile.runtime.channel.Channel` (framed, typed, timed messages;
TCP or in memory)::

    client → hello   {version, protocol "fhe", plan fingerprint}
    server → hello   (or error: other version, other plan)
    client → keys    {context, public_key, multiplication_key, rotation_chunks}
    client → data    × rotation_chunks  (the rotation keys, ≤ KEY_CHUNK_BYTES each)
    per inference:
    client → ciphertexts {input name: serialized ciphertext}
    server → result      {output name: serialized ciphertext}
    client → bye

Every message from the client is public material or a ciphertext under the client's key; every
reply is a ciphertext. The server builds its OpenFHE context from the serialized public
material only (``CkksServer``) and never holds a secret key; the client never receives weights.
A malformed message, another plan, or a dropped connection is a ``ProtocolError`` on the side
that sees it, never a hang (every receive has a timeout).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict
from typing import Any

import numpy as np

from picompile.errors import BackendError, PlanError, ProtocolError
from picompile.plan import HEAD_ARRAY, Plan
from picompile.runtime.backend import RunResult, normalize_inputs
from picompile.runtime.channel import Channel
from picompile.runtime.session import (
    PROTOCOL_VERSION,
    client_view,
    connect,
    fingerprint,
    is_client_view,
    parse_address,
    require_same_plan,
    serve_tcp,
)
from picompile.runtime.slot_program import inputs_per_ciphertext

#: Rotation keys travel in chunks below the channel's frame limit (the CNN's are 2.3 GB).
KEY_CHUNK_BYTES = 256 << 20


def fhe_client_view(plan: Plan) -> Plan:
    """The FHE plan without anything of the model: no parameter arrays but the client head."""
    if plan.protocol != "fhe":
        raise PlanError("fhe_client_view needs an FHE plan (compile with --protocol fhe)")
    return client_view(plan, keep=lambda name: name == HEAD_ARRAY)


def fhe_fingerprint(plan: Plan) -> str:
    """sha256 of what client and server must agree on: steps, shapes, CKKS parameters, rotation
    keys, slot maps and replication periods (not the weights: the client has none)."""
    layout = plan.layout
    return fingerprint(plan, {
        "ckks": asdict(plan.ckks) if plan.ckks is not None else {},
        "slot_maps": layout.slot_maps if layout is not None else {},
        "periods": layout.periods if layout is not None else {},
    })


def _bytes_field(payload: Any, name: str) -> bytes:
    if not isinstance(payload, dict) or not isinstance(payload.get(name), bytes):
        raise ProtocolError(f"malformed message: expected bytes in field {name!r}")
    return payload[name]


def check_servable(plan: Plan) -> None:
    """A clear error unless ``plan`` is a full FHE plan that runs under CKKS."""
    from picompile.runtime.ckks import ckks_settings

    if plan.protocol != "fhe":
        raise PlanError("this plan is not an FHE plan: serve it with the hybrid protocol")
    if is_client_view(plan):
        raise PlanError("this is a client plan (no weights): the server needs the full plan")
    ckks_settings(plan)


class FheServer:
    """One client session on ``channel``: keys, then any number of inferences.

    ``make_server(plan, material)`` builds the evaluator from the client's public material
    (default ``CkksServer``; ``picompile.runtime.cluster`` passes one that splits linear steps
    over workers). An evaluator's :class:`BackendError` (e.g. lost workers) is sent to the client
    and raised as a :class:`ProtocolError`.
    """

    def __init__(self, plan: Plan, channel: Channel,
                 make_server: Callable[[Plan, Any], Any] | None = None) -> None:
        check_servable(plan)
        self.plan = plan
        self.channel = channel
        self.fingerprint = fhe_fingerprint(plan)
        self.make_server = make_server
        self.evaluator: Any = None  # the CkksServer, once the keys arrived

    def handshake(self) -> None:
        channel = self.channel
        hello = channel.expect("hello")
        if not isinstance(hello, dict) or hello.get("protocol") != "fhe" or hello.get(
                "version") != PROTOCOL_VERSION:
            channel.send_error(f"this server runs the FHE protocol version {PROTOCOL_VERSION}")
            raise ProtocolError("the client speaks another protocol or version")
        require_same_plan(channel, hello, self.fingerprint)
        channel.send("hello", {"version": PROTOCOL_VERSION, "protocol": "fhe",
                               "plan": self.fingerprint})

    def receive_keys(self) -> Any:
        from picompile.runtime.ckks import CkksServer, PublicMaterial

        channel = self.channel
        keys = channel.expect("keys")
        chunks = keys.get("rotation_chunks") if isinstance(keys, dict) else None
        if not isinstance(chunks, int) or chunks < 0:
            raise ProtocolError("malformed keys message: rotation_chunks missing")
        rotation = b"".join(channel.expect("data") for _ in range(chunks))
        material = PublicMaterial(context=_bytes_field(keys, "context"),
                                  public_key=_bytes_field(keys, "public_key"),
                                  multiplication_key=_bytes_field(keys, "multiplication_key"),
                                  rotation_keys=rotation)
        try:
            if self.make_server is not None:
                return self.make_server(self.plan, material)
            return CkksServer(self.plan, material)
        except ProtocolError as exc:  # the evaluator's resources (e.g. workers) are unavailable
            channel.send_error(str(exc))
            raise
        except (BackendError, RuntimeError, TypeError, ValueError) as exc:
            channel.send_error(f"unusable public key material: {exc}")
            raise ProtocolError(f"unusable public key material from the client: {exc}") from None

    def serve(self) -> int:
        """Run the session; returns the number of inferences served."""
        self.handshake()
        server = self.evaluator = self.receive_keys()
        names = [spec.name for spec in self.plan.inputs]
        count = 0
        while True:
            message = self.channel.recv()
            if message.kind == "bye":
                return count
            if message.kind != "ciphertexts":
                raise ProtocolError(f"expected ciphertexts or bye, got {message.kind}")
            inputs = {name: _bytes_field(message.payload, name) for name in names}
            try:
                outputs, _ = server.evaluate(inputs)
            except RuntimeError as exc:  # OpenFHE rejects a malformed ciphertext
                self.channel.send_error(f"cannot evaluate the ciphertexts: {exc}")
                raise ProtocolError(f"malformed ciphertext from the client: {exc}") from None
            except BackendError as exc:  # the evaluator failed (e.g. its workers were lost)
                self.channel.send_error(f"the server failed during the inference: {exc}")
                raise ProtocolError(f"the server failed during the inference: {exc}") from None
            self.channel.send("result", outputs)
            count += 1

    def close(self) -> None:
        """Close the client channel (and release the evaluator's workers, if any)."""
        self.channel.close()
        if self.evaluator is not None:
            self.evaluator.close()


class FheClient:
    """Holds the secret key; sends public material and ciphertexts, decrypts the results.

    Keys are generated at construction, before any connection (minutes for a bootstrapped
    plan); :meth:`setup` then runs the handshake and sends the public material on ``channel``.
    """

    def __init__(self, plan: Plan) -> None:
        from picompile.runtime.ckks import CkksClient

        if plan.protocol != "fhe":
            raise PlanError("this plan is not an FHE plan: use `picompile client` with a "
                            "hybrid server for hybrid plans")
        self.plan = plan
        self.channel: Channel | None = None
        self.ckks = CkksClient(plan)
        predicted = float(plan.ckks.predicted_seconds or 0.0) if plan.ckks is not None else 0.0
        # an encrypted ResNet takes minutes: wait for a result at least 3x the prediction
        self.result_seconds = 3 * predicted + 60

    def setup(self, channel: Channel) -> None:
        self.channel = channel
        channel.send("hello", {"version": PROTOCOL_VERSION, "protocol": "fhe",
                               "plan": fhe_fingerprint(self.plan)})
        channel.expect("hello")
        material = self.ckks.public_material()
        rotation = material.rotation_keys
        chunks = [rotation[i:i + KEY_CHUNK_BYTES]
                  for i in range(0, len(rotation), KEY_CHUNK_BYTES)]
        channel.send("keys", {"context": material.context, "public_key": material.public_key,
                              "multiplication_key": material.multiplication_key,
                              "rotation_chunks": len(chunks)})
        for chunk in chunks:
            channel.send("data", chunk)

    def infer(self, sample: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """One sample (no batch axis) per plan input → decrypted outputs (no batch axis)."""
        outputs = self.infer_samples({name: np.asarray(x)[None] for name, x in sample.items()})
        return {name: value[0] for name, value in outputs.items()}

    def infer_samples(self, samples: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Up to ``inputs_per_ciphertext(plan)`` samples (batch axis first) per plan input in
        one ciphertext → their decrypted outputs (batch axis first)."""
        count = len(next(iter(samples.values())))
        self.channel.send("ciphertexts", {name: self.ckks.encrypt_samples(x, name)
                                          for name, x in samples.items()})
        result = self.channel.expect("result", timeout=max(self.channel.timeout,
                                                            self.result_seconds))
        outputs = {}
        for spec in self.plan.outputs:
            data = _bytes_field(result, spec.name)
            outputs[spec.name] = self.ckks.decrypt_samples(data, spec.name, count).reshape(
                (count,) + tuple(spec.shape[1:]))
        return outputs

    def finish(self) -> None:
        self.channel.send("bye")


def client_run(plan: Plan, address: str, x: np.ndarray | dict[str, np.ndarray], *,
               timeout: float = 300.0,
               progress: Callable[[int, int], None] | None = None) -> RunResult:
    """Generate keys, connect to an FHE server at ``address`` (host:port), run every sample of
    ``x`` (batch axis first) encrypted, return the decrypted outputs (before the head)."""
    inputs = normalize_inputs(plan, x)
    parse_address(address)  # a bad address fails before the key generation
    start = time.perf_counter()
    client = FheClient(plan)
    channel = connect(address, timeout)
    try:
        client.setup(channel)
        batch = next(iter(inputs.values())).shape[0]
        rows: dict[str, list[np.ndarray]] = {spec.name: [] for spec in plan.outputs}
        per_ciphertext = inputs_per_ciphertext(plan)  # several inputs share one (--batch)
        for start_index in range(0, batch, per_ciphertext):
            chunk = slice(start_index, min(batch, start_index + per_ciphertext))
            outputs = client.infer_samples({name: value[chunk] for name, value in inputs.items()})
            for name, value in outputs.items():
                rows[name] += list(value)
            if progress is not None:
                progress(chunk.stop, batch)
        client.finish()
    finally:
        channel.close()
    traffic = channel.traffic
    return RunResult({name: np.stack(value) for name, value in rows.items()},
                     seconds=time.perf_counter() - start, backend="ckks over TCP",
                     communication={"bytes_sent": traffic.bytes_sent,
                                    "bytes_received": traffic.bytes_received,
                                    "key_bytes": traffic.by_kind.get("keys", 0)
                                    + traffic.by_kind.get("data", 0)})


def serve(plan: Plan, port: int, *, host: str = "127.0.0.1", once: bool = False,
          timeout: float = 300.0, on_listen: Callable[[int], None] | None = None,
          on_session: Callable[[int, float], None] | None = None) -> None:
    """Serve FHE clients one after another on TCP (``once``: a single session)."""
    check_servable(plan)  # a clear error before listening
    serve_tcp(lambda channel: FheServer(plan, channel), port, host=host, once=once,
              timeout=timeout, on_listen=on_listen, on_session=on_session)
