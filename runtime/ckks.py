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

Plans deeper than leveled CKKS allows carry ``Plan.ckks.bootstrapping`` (levels pass): the client
then builds a bootstrappable context (:func:`bootstrap_parameters`: sparse ``slots``, uniform
ternary secret, 128-bit), runs ``EvalBootstrapSetup`` without precomputation (it only needs the
rotation indices) and ``EvalBootstrapKeyGen``; those keys travel with the other rotation keys in
the public material. The server runs ``EvalBootstrapSetup`` (with the precomputed transforms)
on its deserialized context and ``EvalBootstrap`` after every step the plan marks
(``Step.fhe.bootstrap_after``), dividing by the step's power-of-two ``scale`` before and
doubling back after.

OpenFHE keeps evaluation keys in a process-wide cache; the server clears and re-inserts them from
the serialized material, so even in one process it evaluates with the bytes it was given.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from picompile.errors import BackendError, PlanError
from picompile.plan import CkksParameters, Plan
from picompile.runtime.backend import Backend, RunResult, StepTiming
from picompile.runtime.blocks import block_count, frame, split_blocks, unframe
from picompile.runtime.openfhe_loader import (
    BOOTSTRAP_FIRST_MOD_BITS,
    FIRST_MOD_BITS,
    SCALING_MOD_BITS,
    ckks_parameters,
    load_openfhe,
)
from picompile.runtime.rotations import power_of_two_keys, rotation_digits
from picompile.runtime.slot_program import (
    SlotProgram,
    has_layouts,
    inputs_per_ciphertext,
    pack_samples,
    slot_map,
    unpack,
    unpack_samples,
)

MATERIAL_FILES = ("context", "public_key", "multiplication_key", "rotation_keys")


def bootstrap_parameters(openfhe: Any, depth: int, insecure: bool, ring: int | None,
                         slots: int, first_mod_bits: int = BOOTSTRAP_FIRST_MOD_BITS,
                         scaling_mod_bits: int = SCALING_MOD_BITS) -> Any:
    """CKKS parameters of a bootstrappable plan: picompile's usual ones (FLEXIBLEAUTO, 50-bit
    scaling, 128-bit unless ``insecure``) with a ``first_mod_bits`` first modulus (56: see
    ``BOOTSTRAP_FIRST_MOD_BITS``), a uniform ternary secret (what the HE-standard table assumes)
    and ``slots`` as the batch size (sparse packing)."""
    parameters = ckks_parameters(openfhe, depth, insecure, ring, first_mod_bits,
                                 scaling_mod_bits)
    parameters.SetSecretKeyDist(openfhe.UNIFORM_TERNARY)
    parameters.SetBatchSize(slots)
    return parameters


def _context_parameters(openfhe: Any, settings: CkksParameters) -> Any:
    depth, insecure = settings.multiplicative_depth, settings.insecure
    if settings.bootstrapping is not None:
        return bootstrap_parameters(openfhe, depth, insecure, settings.ring_dimension,
                                    settings.slots, settings.first_mod_bits or FIRST_MOD_BITS,
                                    settings.scaling_mod_bits or SCALING_MOD_BITS)
    parameters = ckks_parameters(openfhe, depth, insecure, settings.ring_dimension)
    if 0 < settings.slots < settings.ring_dimension // 2:  # ``--slots``: sparse packing
        parameters.SetBatchSize(settings.slots)
    return parameters


def _bootstrap_setup(context: Any, settings: CkksParameters, precompute: bool) -> None:
    info = settings.bootstrapping
    context.EvalBootstrapSetup(list(info.level_budget), [0, 0], settings.slots,
                               info.correction_factor, precompute)


def ckks_settings(plan: Plan) -> CkksParameters:
    """The plan's CKKS parameters; a clear error when it cannot run under CKKS."""
    settings = plan.ckks
    if settings is not None and not settings.runnable:
        raise BackendError(f"this plan cannot run under CKKS: {settings.reason}")
    if settings is None or not has_layouts(plan):
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
        parameters = _context_parameters(openfhe, settings)
        start = time.perf_counter()
        self.context = context = openfhe.GenCryptoContext(parameters)
        bootstrapping = settings.bootstrapping is not None
        for feature in (openfhe.PKE, openfhe.KEYSWITCH, openfhe.LEVELEDSHE, openfhe.ADVANCEDSHE):
            context.Enable(feature)
        if bootstrapping:
            context.Enable(openfhe.FHE)
            _bootstrap_setup(context, settings, precompute=False)
        if context.GetRingDimension() != settings.ring_dimension:
            raise BackendError(
                f"OpenFHE chose ring dimension {context.GetRingDimension()}, the plan expects "
                f"{settings.ring_dimension}: recompile the plan with this OpenFHE")
        self.slots = settings.slots
        self.input_level = settings.input_level
        keys = context.KeyGen()
        self._secret_key = keys.secretKey
        self.public_key = keys.publicKey
        context.EvalMultKeyGen(self._secret_key)
        if bootstrapping:
            context.EvalBootstrapKeyGen(self._secret_key, self.slots)
        rotations = plan.rotation_keys
        if bootstrapping:
            rotations = power_of_two_keys(self.slots)
        self.rotation_key_count = len(rotations)
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

    def write_public_material(self, folder: str | Path) -> Path:
        """Write the public material as files (the ``PublicMaterial.save`` layout) straight from
        OpenFHE, without holding the rotation keys as bytes: bootstrapped plans at N=2^16 have
        ~6 GB of them, which would otherwise sit in memory twice."""
        openfhe = self.openfhe
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "context.bin").write_bytes(openfhe.Serialize(self.context, openfhe.BINARY))
        (folder / "public_key.bin").write_bytes(openfhe.Serialize(self.public_key, openfhe.BINARY))
        (folder / "multiplication_key.bin").write_bytes(
            openfhe.SerializeEvalMultKeyString(openfhe.BINARY, ""))
        if not openfhe.CryptoContext.SerializeEvalAutomorphismKey(
                str(folder / "rotation_keys.bin"), openfhe.BINARY, ""):
            raise BackendError(f"cannot write the rotation keys to {folder}")
        return folder

    def secret_key_bytes(self) -> bytes:
        """For tests that check no secret-key bytes reach the server."""
        return self.openfhe.Serialize(self._secret_key, self.openfhe.BINARY)

    def encrypt(self, x: np.ndarray, name: str | None = None) -> bytes:
        """One sample of plan input ``name`` (default: the first), packed by its slot map."""
        return self.encrypt_samples(np.asarray(x)[None], name)

    def encrypt_samples(self, samples: np.ndarray, name: str | None = None) -> bytes:
        """Up to ``inputs_per_ciphertext(plan)`` samples (batch axis first) in one ciphertext."""
        name = name or self.plan.inputs[0].name
        parts = []
        for block in split_blocks(pack_samples(self.plan, name, samples, self.slots),
                                  self.slots):
            plaintext = self.context.MakeCKKSPackedPlaintext(block.tolist(), 1,
                                                             self.input_level, None, self.slots)
            ciphertext = self.context.Encrypt(self.public_key, plaintext)
            parts.append(self.openfhe.Serialize(ciphertext, self.openfhe.BINARY))
        return frame(parts)  # a tensor over several ciphertexts: one framed message

    def decrypt_samples(self, data: bytes, name: str, count: int) -> np.ndarray:
        """``count`` samples of plan output ``name`` (batch axis first, flat) from one
        ciphertext."""
        vector = self._decrypted_vector(data, name)
        return unpack_samples(self.plan, name, vector, count).reshape(count, -1)

    def _decrypted_vector(self, data: bytes, name: str | None = None) -> np.ndarray:
        """The slot vector of a serialized value (all its blocks when ``name`` spans several
        ciphertexts)."""
        count = block_count(slot_map(self.plan, name), self.slots) if name else 1
        vectors = []
        for part in unframe(data, count):
            ciphertext = self.openfhe.DeserializeCiphertextString(part, self.openfhe.BINARY)
            plaintext = self.context.Decrypt(ciphertext, self._secret_key)
            plaintext.SetLength(self.slots)
            vectors.append(np.array(plaintext.GetRealPackedValue()))
        return np.concatenate(vectors)

    def decrypt(self, data: bytes, value: str | int) -> np.ndarray:
        """Plan output ``value`` (flat, unpacked by its slot map), or with an int the first
        ``value`` slots as they are."""
        vector = self._decrypted_vector(data, value if isinstance(value, str) else None)
        if isinstance(value, str):
            return unpack(self.plan, value, vector).reshape(-1)
        return vector[:value]


#: Encoded plaintexts (diagonals, bias and coefficient vectors) kept across inferences; past
#: this they are encoded on every use (a ResNet-18 stage over 8 ciphertexts has ~96k diagonals:
#: 40 GB encoded at N=2^12).
PLAINTEXT_CACHE_BYTES = 4 << 30


class OpenFheSlots:
    """SlotEngine over OpenFHE ciphertexts, with encoded plaintexts cached per level (up to
    ``PLAINTEXT_CACHE_BYTES``)."""

    def __init__(self, openfhe: Any, context: Any, slots: int, towers: int,
                 keys: list[int] | None = None, cache: bool = True) -> None:
        self.openfhe = openfhe
        # At N=2^16 an encoded diagonal is megabytes: bootstrapped plans encode on the fly.
        self.cache = cache
        # residue mod slots → the rotation index its key was generated for
        self.keys = None if keys is None else {k % slots: k for k in keys}
        self.towers = towers
        self.context = context
        self.slots = slots
        self.order = context.GetCyclotomicOrder()
        self._plaintexts: dict[tuple, Any] = {}
        self._cached_bytes = 0
        self.ring = int(context.GetRingDimension())
        self.native_seconds = 0.0  # time inside OpenFHE evaluation calls (not encoding)
        self.encode_seconds = 0.0
        self.bootstrap_seconds = 0.0
        self.bootstraps = 0

    def _encode(self, vector: np.ndarray, key: tuple, level: int) -> Any:
        cache_key = key + (level,)
        plaintext = self._plaintexts.get(cache_key)
        if plaintext is None:
            values = vector.tolist()
            start = time.perf_counter()
            plaintext = self.context.MakeCKKSPackedPlaintext(values, 1, level, None, self.slots)
            self.encode_seconds += time.perf_counter() - start
            size = self.ring * max(1, self.towers - level) * 8
            if self.cache and self._cached_bytes + size <= PLAINTEXT_CACHE_BYTES:
                self._plaintexts[cache_key] = plaintext
                self._cached_bytes += size
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
        """Hoisted rotations by the amounts that have keys; the others from the nearest done one.

        With the lean key set (``keys``) an amount without its own key is one rotation away from
        an amount already computed when they differ by a power of two (consecutive baby steps),
        else a chain of power-of-two rotations.
        """
        context = self.context
        direct = [k for k in amounts if self.keys is None or k % self.slots in self.keys]
        done: dict[int, Any] = {}
        if direct:
            digits = self._native(context.EvalFastRotationPrecompute, ciphertext)
            done = {k: self._native(context.EvalFastRotation, ciphertext,
                                    k if self.keys is None else self.keys[k % self.slots],
                                    self.order, digits)
                    for k in direct}
        for amount in sorted(set(amounts) - set(direct)):
            base = next((a for a in done if (amount - a) % self.slots in self.keys), None)
            if base is None:
                done[amount] = self.rotate(ciphertext, amount)
            else:
                done[amount] = self.rotate(done[base], amount - base)
        return done

    def rotate(self, ciphertext: Any, amount: int) -> Any:
        if self.keys is None:
            return self._native(self.context.EvalRotate, ciphertext, amount)
        if amount % self.slots in self.keys:
            return self._native(self.context.EvalRotate, ciphertext,
                                self.keys[amount % self.slots])
        for digit in rotation_digits(amount, self.slots):
            ciphertext = self._native(self.context.EvalRotate, ciphertext, digit)
        return ciphertext

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

    def multiply(self, a: Any, b: Any) -> Any:
        return self._native(self.context.EvalMult, a, b)

    def multiply_scalar(self, ciphertext: Any, value: float) -> Any:
        return self._native(self.context.EvalMult, ciphertext, float(value))

    def add_scalar(self, ciphertext: Any, value: float) -> Any:
        return self._native(self.context.EvalAdd, ciphertext, float(value))

    def bootstrap(self, ciphertext: Any, scale: float, divided: bool = False) -> Any:
        """Refresh: divide by ``scale`` (a power of two) into the bootstrap's range (unless the
        step already ``divided``), EvalBootstrap, then double back (additions: no level)."""
        start = time.perf_counter()
        context = self.context
        if scale > 1.0 and not divided:
            ciphertext = self._native(context.EvalMult, ciphertext, 1.0 / scale)
        result = self._native(context.EvalBootstrap, ciphertext)
        for _ in range(round(np.log2(scale)) if scale > 1.0 else 0):
            result = self._native(context.EvalAdd, result, result)
        self.bootstrap_seconds += time.perf_counter() - start
        self.bootstraps += 1
        return result


class CkksServer:
    """Evaluates the plan on ciphertexts, built from public material only."""

    def __init__(self, plan: Plan, material: PublicMaterial | str | Path, *,
                 program: Callable[[Plan, OpenFheSlots], SlotProgram] = SlotProgram,
                 bootstrap: bool = True) -> None:
        """``material``: the serialized bytes, or a folder written by ``PublicMaterial.save`` or
        ``CkksClient.write_public_material`` (rotation keys then read by OpenFHE from the file).
        ``program`` builds the slot interpreter (a distributed one splits linear steps,
        ``picompile.runtime.cluster``); ``bootstrap=False`` skips the bootstrap set-up (gigabytes
        of transforms) on a server that only evaluates parts of linear steps.
        """
        openfhe = self.openfhe = load_openfhe()
        folder = None
        if isinstance(material, str | Path):
            folder = Path(material)
            try:
                material = PublicMaterial(
                    **{name: (folder / f"{name}.bin").read_bytes()
                       for name in MATERIAL_FILES if name != "rotation_keys"},
                    rotation_keys=b"")
            except OSError as exc:
                raise BackendError(f"cannot read public key material in {folder}: {exc}") from None
        settings = ckks_settings(plan)
        self.plan = plan
        # Without this, a deserialized context lacks its CRT tables and every operation is slower.
        openfhe.EnablePrecomputeCRTTablesAfterDeserializaton()
        self.context = openfhe.DeserializeCryptoContextString(material.context, openfhe.BINARY)
        openfhe.ClearEvalMultKeys()
        self.context.ClearEvalAutomorphismKeys()
        openfhe.DeserializeEvalMultKeyString(material.multiplication_key, openfhe.BINARY)
        if folder is None:
            openfhe.DeserializeEvalAutomorphismKeyString(material.rotation_keys, openfhe.BINARY)
        elif not openfhe.CryptoContext.DeserializeEvalAutomorphismKey(
                str(folder / "rotation_keys.bin"), openfhe.BINARY):
            raise BackendError(f"cannot read the rotation keys in {folder}")
        self.public_key = openfhe.DeserializePublicKeyString(material.public_key, openfhe.BINARY)
        self.slots = settings.slots
        keys = None
        if settings.bootstrapping is not None:
            if bootstrap:
                _bootstrap_setup(self.context, settings, precompute=True)
            keys = power_of_two_keys(self.slots)
        self._zero: Any = None
        towers = settings.multiplicative_depth + 1
        self.program = program(plan, OpenFheSlots(openfhe, self.context, self.slots, towers,
                                                  keys, cache=keys is None))

    def _adopt(self, ciphertext: Any) -> Any:
        """Fresh encryption of zero (server's public key) + the received ciphertext.

        Operations on a deserialized ciphertext run ~10x slower in openfhe 1.6.1's Python build
        (measured: 4.0 vs 0.33 ms per plaintext multiplication at N=4096); a sum whose first
        operand was created in this process is fast again, and the sum is re-randomized.
        """
        if self._zero is None:
            self._zero = self.context.MakeCKKSPackedPlaintext([0.0] * self.slots, 1, 0, None,
                                                              self.slots)
        fresh = self.context.Encrypt(self.public_key, self._zero)
        return self.context.EvalAdd(fresh, ciphertext)

    def adopt(self, data: bytes) -> Any:
        """A serialized ciphertext as a fast, re-randomized ciphertext of this server."""
        return self._adopt(self.openfhe.DeserializeCiphertextString(data, self.openfhe.BINARY))

    def serialize(self, ciphertext: Any) -> bytes:
        return self.openfhe.Serialize(ciphertext, self.openfhe.BINARY)

    def linear_part(self, step_name: str, data: bytes, giants: list[int],
                    factor: float = 1.0) -> bytes:
        """The giant steps ``giants`` of linear step ``step_name`` on a serialized, prepared
        ciphertext (``SlotProgram.linear_part``), serialized: one worker's share of a split
        linear step."""
        step = next((s for s in self.plan.steps if s.name == step_name), None)
        if step is None:
            raise PlanError(f"no step {step_name!r} in the plan")
        return self.serialize(self.program.linear_part(step, self.adopt(data), giants, factor))

    def close(self) -> None:
        """Release what the program holds beyond this process (a distributed program's
        workers)."""
        close = getattr(self.program, "close", None)
        if close is not None:
            close()

    def evaluate(self, inputs: dict[str, bytes]) -> tuple[dict[str, bytes], list[StepTiming]]:
        """Run the plan on serialized input ciphertexts; returns output bytes and timings.

        After a call, ``last_native_seconds`` / ``last_encode_seconds`` hold the time spent in
        OpenFHE evaluation calls and in (first-use) plaintext encoding; the rest of the wall
        time is Python overhead.
        """
        openfhe = self.openfhe
        engine = self.program.engine
        native, encode = engine.native_seconds, engine.encode_seconds
        ciphertexts = {}
        for name, data in inputs.items():
            count = block_count(slot_map(self.plan, name), self.slots)
            ciphertexts[name] = [self._adopt(openfhe.DeserializeCiphertextString(
                part, openfhe.BINARY)) for part in unframe(data, count)]
        outputs, timings = self.program.run(ciphertexts)
        self.last_native_seconds = engine.native_seconds - native
        self.last_encode_seconds = engine.encode_seconds - encode
        return ({name: frame([openfhe.Serialize(block, openfhe.BINARY)
                              for block in (value if isinstance(value, list) else [value])])
                 for name, value in outputs.items()}, timings)


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
        if ckks_settings(plan).bootstrapping is not None:
            with tempfile.TemporaryDirectory(prefix="picompile-keys-") as folder:
                server = CkksServer(plan, client.write_public_material(folder))
        else:
            server = CkksServer(plan, client.public_material())
        rows: dict[str, list[np.ndarray]] = {t.name: [] for t in plan.outputs}
        timings: list[StepTiming] = []
        per_ciphertext = inputs_per_ciphertext(plan)
        for start_index in range(0, batch, per_ciphertext):
            chunk = slice(start_index, min(batch, start_index + per_ciphertext))
            count = chunk.stop - chunk.start
            encrypted = {name: client.encrypt_samples(value[chunk], name)
                         for name, value in inputs.items()}
            outputs, timings = server.evaluate(encrypted)
            for spec in plan.outputs:
                rows[spec.name] += list(client.decrypt_samples(outputs[spec.name], spec.name,
                                                               count)
                                        .reshape((count,) + tuple(spec.shape[1:])))
            self.progress("encrypted inference", chunk.stop, batch)
        merged = {k: np.stack(v) for k, v in rows.items()}
        return RunResult(merged, timings=timings, seconds=time.perf_counter() - start,
                         backend=self.name)
