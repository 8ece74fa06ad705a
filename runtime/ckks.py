"""ckks backend: the FHE-only plan under OpenFHE CKKS, client and server kept apart.

Reads: a laid-out FHE plan (``levels`` and ``layout`` passes ran), the client's input.
Writes: the decrypted output and per-step server timings.

* :class:`CkksClient` creates the crypto context from the plan's CKKS parameters, generates the
  secret key, the public key, the relinearization key and exactly the rotation keys the plan
  lists; it encrypts inputs and decrypts outputs. Only it ever holds the secret key.
* :class:`PublicMaterial` is what the server receives: the serialized crypto context, public
  key, multiplication key and rotation keys (bytes; ``save``/``load`` to a folder so client and
  server can be separate processes).
* :class:`CkksServer` is built from :class:`PublicMaterial` only and evaluates the plan's steps on
  ciphertext bytes with the shared slot interpreter: hoisted baby-step rotations
  (``EvalFastRotationPrecompute``/``EvalFastRotation``), encoded diagonals cached per level,
  ``EvalChebyshevSeries`` for activations.

OpenFHE keeps evaluation keys in a process-wide cache; the server clears and re-inserts them from
the serialized material, so even in one process it evaluates with the bytes it was given.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from picompile.errors import BackendError, PlanError
from picompile.plan import Plan
from picompile.runtime.backend import Backend, RunResult, StepTiming
from picompile.runtime.openfhe_loader import ckks_parameters, load_openfhe
from picompile.runtime.slot_program import SlotProgram, has_layouts, pad_to_slots

MATERIAL_FILES = ("context", "public_key", "multiplication_key", "rotation_keys")


def ckks_settings(plan: Plan) -> dict[str, Any]:
    settings = plan.security.get("ckks")
    if settings and not settings.get("runnable", True):
        raise BackendError(f"this plan cannot run under CKKS: {settings.get('reason')}")
    if not settings or not has_layouts(plan):
        raise PlanError("this plan has no CKKS layout: compile it with --calib and --protocol fhe "
                        "to run it under CKKS")
    return settings


@dataclass
class PublicMaterial:
    """Everything the server needs, serialized: no secret key."""

    context: bytes
    public_key: bytes
    multiplication_key: bytes
    rotation_keys: bytes

    @property
    def size(self) -> int:
        return sum(len(getattr(self, name)) for name in MATERIAL_FILES)

    def save(self, folder: str | Path) -> Path:
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        for name in MATERIAL_FILES:
            (folder / f"{name}.bin").write_bytes(getattr(self, name))
        return folder

    @classmethod
    def load(cls, folder: str | Path) -> PublicMaterial:
        folder = Path(folder)
        try:
            return cls(**{name: (folder / f"{name}.bin").read_bytes() for name in MATERIAL_FILES})
        except OSError as exc:
            raise BackendError(f"cannot read public key material in {folder}: {exc}") from None


class CkksClient:
    """Key owner: key generation, encryption, decryption."""

    def __init__(self, plan: Plan) -> None:
        self.openfhe = openfhe = load_openfhe()
        settings = ckks_settings(plan)
        self.plan = plan
        parameters = ckks_parameters(openfhe, int(settings["multiplicative_depth"]),
                                     bool(settings["insecure"]), int(settings["ring_dimension"]))
        start = time.perf_counter()
        self.context = context = openfhe.GenCryptoContext(parameters)
        for feature in (openfhe.PKE, openfhe.KEYSWITCH, openfhe.LEVELEDSHE, openfhe.ADVANCEDSHE):
            context.Enable(feature)
        if context.GetRingDimension() != int(settings["ring_dimension"]):
            raise BackendError(
                f"OpenFHE chose ring dimension {context.GetRingDimension()}, the plan expects "
                f"{settings['ring_dimension']}: recompile the plan with this OpenFHE")
        self.slots = int(settings["slots"])
        keys = context.KeyGen()
        self._secret_key = keys.secretKey
        self.public_key = keys.publicKey
        context.EvalMultKeyGen(self._secret_key)
        rotations = [int(k) for k in plan.security.get("rotation_keys", [])]
        if rotations:
            context.EvalRotateKeyGen(self._secret_key, rotations)
        self.keygen_seconds = time.perf_counter() - start

    def public_material(self) -> PublicMaterial:
        openfhe = self.openfhe
        return PublicMaterial(
            context=openfhe.Serialize(self.context, openfhe.BINARY),
            public_key=openfhe.Serialize(self.public_key, openfhe.BINARY),
            multiplication_key=openfhe.SerializeEvalMultKeyString(openfhe.BINARY, ""),
            rotation_keys=openfhe.SerializeEvalAutomorphismKeyString(openfhe.BINARY, ""),
        )

    def secret_key_bytes(self) -> bytes:
        """For tests that check no secret-key bytes reach the server."""
        return self.openfhe.Serialize(self._secret_key, self.openfhe.BINARY)

    def encrypt(self, x: np.ndarray) -> bytes:
        plaintext = self.context.MakeCKKSPackedPlaintext(pad_to_slots(x, self.slots).tolist())
        ciphertext = self.context.Encrypt(self.public_key, plaintext)
        return self.openfhe.Serialize(ciphertext, self.openfhe.BINARY)

    def decrypt(self, data: bytes, size: int) -> np.ndarray:
        ciphertext = self.openfhe.DeserializeCiphertextString(data, self.openfhe.BINARY)
        plaintext = self.context.Decrypt(ciphertext, self._secret_key)
        plaintext.SetLength(size)
        return np.array(plaintext.GetRealPackedValue()[:size])


class OpenFheSlots:
    """SlotEngine over OpenFHE ciphertexts, with encoded plaintexts cached per level."""

    def __init__(self, openfhe: Any, context: Any, slots: int, towers: int) -> None:
        self.openfhe = openfhe
        self.towers = towers
        self.context = context
        self.slots = slots
        self.order = context.GetCyclotomicOrder()
        self._plaintexts: dict[tuple, Any] = {}
        self.native_seconds = 0.0  # time inside OpenFHE evaluation calls (not encoding)
        self.encode_seconds = 0.0

    def _encode(self, vector: np.ndarray, key: tuple, level: int) -> Any:
        cache_key = key + (level,)
        plaintext = self._plaintexts.get(cache_key)
        if plaintext is None:
            start = time.perf_counter()
            plaintext = self.context.MakeCKKSPackedPlaintext(vector.tolist(), 1, level, None,
                                                             self.slots)
            self.encode_seconds += time.perf_counter() - start
            self._plaintexts[cache_key] = plaintext
        return plaintext

    def _native(self, call: Any, *args: Any) -> Any:
        """Run one OpenFHE call, adding its time to ``native_seconds``."""
        start = time.perf_counter()
        result = call(*args)
        self.native_seconds += time.perf_counter() - start
        return result

    def prepare(self, ciphertext: Any) -> Any:
        """Apply a deferred rescale once, before a linear step fans the ciphertext out.

        Otherwise every plaintext multiplication of the step rescales its own copy (measured:
        4.9 vs 0.28 ms per multiplication at N=4096). ``Compress`` to the towers left after
        the rescale performs exactly that rescale.
        """
        if ciphertext.GetNoiseScaleDeg() <= 1:
            return ciphertext
        return self._native(self.context.Compress, ciphertext,
                            self.towers - self._operand_level(ciphertext))

    def rotations(self, ciphertext: Any, amounts: list[int]) -> dict[int, Any]:
        context = self.context
        digits = self._native(context.EvalFastRotationPrecompute, ciphertext)
        return {k: self._native(context.EvalFastRotation, ciphertext, k, self.order, digits)
                for k in amounts}

    def rotate(self, ciphertext: Any, amount: int) -> Any:
        return self._native(self.context.EvalRotate, ciphertext, amount)

    @staticmethod
    def _operand_level(ciphertext: Any) -> int:
        """The level a ciphertext has once FLEXIBLEAUTO's deferred rescale is applied.

        Encoding the plaintext at exactly that level (and so at its scaling factor) keeps
        OpenFHE from re-encoding it inside every EvalMult.
        """
        return ciphertext.GetLevel() + ciphertext.GetNoiseScaleDeg() - 1

    def multiply_plain(self, ciphertext: Any, vector: np.ndarray, key: tuple) -> Any:
        plaintext = self._encode(vector, key, self._operand_level(ciphertext))
        return self._native(self.context.EvalMult, ciphertext, plaintext)

    def add(self, a: Any, b: Any) -> Any:
        return self._native(self.context.EvalAdd, a, b)

    def add_plain(self, ciphertext: Any, vector: np.ndarray, key: tuple) -> Any:
        plaintext = self._encode(vector, key, ciphertext.GetLevel())
        return self._native(self.context.EvalAdd, ciphertext, plaintext)

    def chebyshev(self, ciphertext: Any, coefficients: np.ndarray, a: float, b: float) -> Any:
        openfhe_coefficients = np.array(coefficients, dtype=np.float64)
        openfhe_coefficients[0] *= 2.0  # OpenFHE evaluates c0/2 + Σ c_k T_k
        return self._native(self.context.EvalChebyshevSeries, ciphertext,
                            openfhe_coefficients.tolist(), a, b)


class CkksServer:
    """Evaluates the plan on ciphertexts, built from public material only."""

    def __init__(self, plan: Plan, material: PublicMaterial) -> None:
        openfhe = self.openfhe = load_openfhe()
        settings = ckks_settings(plan)
        self.plan = plan
        # Without this, a deserialized context lacks its CRT tables and every operation is slower.
        openfhe.EnablePrecomputeCRTTablesAfterDeserializaton()
        self.context = openfhe.DeserializeCryptoContextString(material.context, openfhe.BINARY)
        openfhe.ClearEvalMultKeys()
        self.context.ClearEvalAutomorphismKeys()
        openfhe.DeserializeEvalMultKeyString(material.multiplication_key, openfhe.BINARY)
        openfhe.DeserializeEvalAutomorphismKeyString(material.rotation_keys, openfhe.BINARY)
        self.public_key = openfhe.DeserializePublicKeyString(material.public_key, openfhe.BINARY)
        self.slots = int(settings["slots"])
        self._zero: Any = None
        towers = int(settings["multiplicative_depth"]) + 1
        self.program = SlotProgram(plan, OpenFheSlots(openfhe, self.context, self.slots, towers))

    def _adopt(self, ciphertext: Any) -> Any:
        """Fresh encryption of zero (server's public key) + the received ciphertext.

        Operations on a deserialized ciphertext run ~10x slower in openfhe 1.6.1's Python build
        (measured: 4.0 vs 0.33 ms per plaintext multiplication at N=4096); a sum whose first
        operand was created in this process is fast again, and the sum is re-randomized.
        """
        if self._zero is None:
            self._zero = self.context.MakeCKKSPackedPlaintext([0.0] * self.slots)
        fresh = self.context.Encrypt(self.public_key, self._zero)
        return self.context.EvalAdd(fresh, ciphertext)

    def evaluate(self, inputs: dict[str, bytes]) -> tuple[dict[str, bytes], list[StepTiming]]:
        """Run the plan on serialized input ciphertexts; returns output bytes and timings.

        After a call, ``last_native_seconds`` / ``last_encode_seconds`` hold the time spent in
        OpenFHE evaluation calls and in (first-use) plaintext encoding; the rest of the wall
        time is Python overhead.
        """
        openfhe = self.openfhe
        engine = self.program.engine
        native, encode = engine.native_seconds, engine.encode_seconds
        ciphertexts = {name: self._adopt(openfhe.DeserializeCiphertextString(data,
                                                                             openfhe.BINARY))
                       for name, data in inputs.items()}
        outputs, timings = self.program.run(ciphertexts)
        self.last_native_seconds = engine.native_seconds - native
        self.last_encode_seconds = engine.encode_seconds - encode
        return ({name: openfhe.Serialize(ct, openfhe.BINARY) for name, ct in outputs.items()},
                timings)


class CkksBackend(Backend):
    """Runs client and server in one process (separate objects, bytes between them).

    ``progress(description, done, total)`` is called at key generation and after each sample.
    """

    name = "ckks"

    def __init__(self, progress: Callable[[str, int, int], None] | None = None) -> None:
        self.progress = progress or (lambda description, done, total: None)

    def execute(self, plan: Plan, inputs: dict[str, np.ndarray]) -> RunResult:
        start = time.perf_counter()
        batch = next(iter(inputs.values())).shape[0]
        self.progress("key generation", 0, batch)
        client = CkksClient(plan)
        server = CkksServer(plan, client.public_material())
        rows: dict[str, list[np.ndarray]] = {t.name: [] for t in plan.outputs}
        timings: list[StepTiming] = []
        for index in range(batch):
            encrypted = {name: client.encrypt(value[index]) for name, value in inputs.items()}
            outputs, timings = server.evaluate(encrypted)
            for spec in plan.outputs:
                size = int(np.prod(spec.shape))
                rows[spec.name].append(
                    client.decrypt(outputs[spec.name], size).reshape(spec.shape[1:]))
            self.progress("encrypted inference", index + 1, batch)
        merged = {k: np.stack(v) for k, v in rows.items()}
        return RunResult(merged, timings=timings, seconds=time.perf_counter() - start,
                         backend=self.name)
