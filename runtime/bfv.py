"""BFV for the hybrid boundary: exact batched arithmetic modulo plaintext primes, with CRT.

Reads: a list of plaintext primes and the rotation amounts a plan's layouts use; integer vectors
(residues) to encrypt; serialized public material on the server side.
Writes: ciphertext bytes, decrypted residues (centered), and, on the server, linear maps of
ciphertexts by integer diagonals (baby-step giant-step with hoisted rotations).

One OpenFHE BFV context per plaintext prime t_i (each t_i ≡ 1 mod 2^17, below 2^50; measured,
docs/architecture.md "Measured OpenFHE facts": larger primes decrypt wrongly, a prime not
≡ 1 mod 2N aborts the process, so :func:`check_prime` runs before any context is made). A
vector of S = N/2 slots sits in the first row of the 2 × N/2 hypercube, where
``EvalRotate(ct, k)`` is the cyclic left rotation of the row, as in CKKS; the layout pass's
diagonals therefore serve both schemes.

Parameters: 50-bit primes, "multiplicative depth" 2 at ``HEStd_128_classic`` (N = 16384, 8192
slots per row), although only ciphertext × plaintext products are evaluated. Measured here: a
linear step is a sum of hundreds of ct×pt products whose plaintexts have full-range coefficients
(batch encoding spreads even small slot values over all of Z_t), so the noise grows with t·N per
term and log2(terms): at depth 1 (N = 8192) 39 terms decrypt exactly but 734 terms (the CNN's
second convolution) decrypt to garbage in every slot; at depth 2, 3000 terms decrypt exactly.
OpenFHE's ``SetEvalAddCount``/``SetKeySwitchCount`` cannot be combined with a depth.

:class:`BfvClient` owns the secret keys. :class:`BfvServer` is built from
:class:`BfvPublicMaterial` (contexts, public keys, rotation keys) only; every ciphertext it
receives is first added to a fresh encryption of zero (re-randomization, and openfhe 1.6.1's
Python build computes ~10x faster on such sums than on deserialized ciphertexts), and every
ciphertext it returns gets another fresh encryption of zero. Noise flooding is not available
through the Python binding (no access to the ciphertext's polynomials): see docs/protocol.md.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from picompile.errors import BackendError
from picompile.runtime.openfhe_loader import load_openfhe

PRIME_BITS = 50
PRIME_STEP = 1 << 17  # t ≡ 1 mod 2^17 batches for every ring dimension up to 2^16
_WITNESSES = (2, 3, 5, 7, 11, 13, 17, 19, 23, 29, 31, 37)  # deterministic below 2^64


def is_prime(n: int) -> bool:
    """Deterministic Miller–Rabin for n < 2^64."""
    if n < 2:
        return False
    for p in _WITNESSES:
        if n % p == 0:
            return n == p
    d, r = n - 1, 0
    while d % 2 == 0:
        d //= 2
        r += 1
    for a in _WITNESSES:
        x = pow(a, d, n)
        if x in (1, n - 1):
            continue
        for _ in range(r - 1):
            x = x * x % n
            if x == n - 1:
                break
        else:
            return False
    return True


def plaintext_primes(count: int, bits: int = PRIME_BITS) -> list[int]:
    """The ``count`` largest primes t < 2^bits with t ≡ 1 (mod 2^17), descending."""
    primes: list[int] = []
    k = ((1 << bits) - 1) // PRIME_STEP
    while len(primes) < count and k > 0:
        t = k * PRIME_STEP + 1
        if t < (1 << bits) and is_prime(t):
            primes.append(t)
        k -= 1
    return primes


def check_prime(t: int) -> None:
    if not (is_prime(t) and t % PRIME_STEP == 1 and t < (1 << PRIME_BITS)):
        raise BackendError(f"plaintext modulus {t} is not a prime ≡ 1 mod 2^17 below 2^50: "
                           "OpenFHE would abort or decrypt wrongly")


def row_rotation(amount: int, slots: int) -> int:
    """A rotation amount reduced to (−slots/2, slots/2]. BFV rows rotate cyclically, but OpenFHE
    does not treat a rotation by ±slots as the identity (measured: it scrambles the row)."""
    amount %= slots
    return amount - slots if amount > slots // 2 else amount


def centered(values: np.ndarray, t: int) -> np.ndarray:
    """Residues mod t as int64 in (−t/2, t/2]."""
    v = np.mod(np.asarray(values, dtype=np.int64), t)
    return np.where(v > t // 2, v - t, v)


def crt_centered(residues: list[np.ndarray], primes: list[int]) -> np.ndarray:
    """The integers in (−T/2, T/2] (T = ∏ primes) with the given residues, as Python ints."""
    modulus = 1
    for t in primes:
        modulus *= t
    total = np.zeros(np.shape(residues[0]), dtype=object)
    for r, t in zip(residues, primes, strict=True):
        cofactor = modulus // t
        total = total + np.mod(np.asarray(r, dtype=np.int64), t).astype(object) * (
            cofactor * pow(cofactor, -1, t))
    total = total % modulus
    return np.where(total > modulus // 2, total - modulus, total)


MULTIPLICATIVE_DEPTH = 2
PLAINTEXT_CACHE_BYTES = 2 << 30  # encoded diagonals kept across inferences (then re-encoded)


_LIMB = 13  # 50-bit operands in 13-bit limbs: every partial product stays below 2^63


def mulmod(a: np.ndarray, c: int | np.ndarray, t: int) -> np.ndarray:
    """a · c mod t for a in [0, t) and c in [0, t) (a constant or an array), t < 2^50, without
    overflow: Horner over 13-bit limbs of c (each step < 2^63 + 2^63 in uint64)."""
    a = np.asarray(a, dtype=np.uint64)
    c = np.asarray(c, dtype=np.uint64)
    acc = np.zeros(np.broadcast_shapes(a.shape, c.shape), dtype=np.uint64)
    for shift in range(4 * _LIMB - _LIMB, -1, -_LIMB):  # 4 limbs cover 52 bits
        limb = (c >> np.uint64(shift)) & np.uint64((1 << _LIMB) - 1)
        acc = ((acc << np.uint64(_LIMB)) + a * limb) % np.uint64(t)
    return acc.astype(np.int64)


def horner_mod(parts: list[np.ndarray], bits: int, t: int) -> np.ndarray:
    """Σ_j parts[j] · 2^(bits·j) mod t for int64 parts in [0, t) (bits ≤ 13)."""
    acc = np.zeros(np.shape(parts[0]), dtype=np.uint64)
    for part in reversed(parts):
        acc = ((acc << np.uint64(bits)) + np.asarray(part, dtype=np.uint64)) % np.uint64(t)
    return acc.astype(np.int64)


def crt_lift(residues: list[np.ndarray], primes: list[int], shift: int) -> np.ndarray:
    """floor(v / 2^shift) mod 2^64 (uint64) for the centered CRT value v of two residues.

    Garner: v = r1 + t1·k with k = (r2 − r1)·t1⁻¹ mod t2, assembled as a 128-bit two's
    complement (hi, lo) in uint64 words, T subtracted above T/2, then shifted — all vectorized
    (the object-integer :func:`crt_centered` is the reference)."""
    if len(primes) != 2 or not 0 < shift < 64:
        return _lift_objects(crt_centered(residues, primes), shift)
    t1, t2 = primes
    r1 = np.mod(np.asarray(residues[0], dtype=np.int64), t1)
    r2 = np.mod(np.asarray(residues[1], dtype=np.int64), t2)
    k = mulmod(np.mod(r2 - r1, t2), pow(t1, -1, t2), t2).astype(np.uint64)
    u64 = np.uint64
    low25 = u64((1 << 25) - 1)
    a0, a1 = u64(t1 & ((1 << 25) - 1)), u64(t1 >> 25)
    b0, b1 = k & low25, k >> u64(25)
    parts = [(r1.astype(np.uint64) + a0 * b0, 0), (a0 * b1 + a1 * b0, 25), (a1 * b1, 50)]
    lo = np.zeros_like(k)
    hi = np.zeros_like(k)
    with np.errstate(over="ignore"):
        for value, offset in parts:
            low = value << u64(offset) if offset else value
            high = value >> u64(64 - offset) if offset else np.zeros_like(value)
            total = lo + low
            hi = hi + high + (total < lo).astype(np.uint64)
            lo = total
        modulus = t1 * t2
        half_hi, half_lo = u64((modulus // 2) >> 64), u64((modulus // 2) & (2**64 - 1))
        above = (hi > half_hi) | ((hi == half_hi) & (lo > half_lo))
        m_hi, m_lo = u64(modulus >> 64), u64(modulus & (2**64 - 1))
        borrow = (lo < m_lo).astype(np.uint64)
        lo = np.where(above, lo - m_lo, lo)
        hi = np.where(above, hi - m_hi - borrow, hi)
        return (lo >> u64(shift)) | (hi << u64(64 - shift))


def _lift_objects(integers: np.ndarray, shift: int) -> np.ndarray:
    floored = integers // (1 << shift)
    return np.array((floored % (1 << 64)).tolist(), dtype=np.uint64)


def _parameters(openfhe: Any, t: int) -> Any:
    check_prime(t)
    parameters = openfhe.CCParamsBFVRNS()
    parameters.SetPlaintextModulus(t)
    parameters.SetMultiplicativeDepth(MULTIPLICATIVE_DEPTH)
    parameters.SetSecurityLevel(openfhe.HEStd_128_classic)
    return parameters


def context_shape(prime: int) -> tuple[int, int]:
    """(ring dimension, log2 Q) OpenFHE picks for one prime at our depth, 128-bit security."""
    openfhe = load_openfhe()
    context = openfhe.GenCryptoContext(_parameters(openfhe, prime))
    modulus_bits = int(str(context.GetElementParams().GetModulus())).bit_length()
    return int(context.GetRingDimension()), modulus_bits


@dataclass
class BlockPair:
    """One (output block, input block) part of a blocked linear map: (giant, baby, pre-rotated
    integer diagonal of one row) entries, as baby-step giant-step evaluates them."""

    output_block: int
    input_block: int
    diagonals: list[tuple[int, int, np.ndarray]]


@dataclass
class BfvPublicMaterial:
    """Per prime: serialized context, public key and rotation keys (never a secret key)."""

    contexts: list[bytes]
    public_keys: list[bytes]
    rotation_keys: list[bytes]

    @property
    def size(self) -> int:
        return sum(len(b) for b in self.contexts + self.public_keys + self.rotation_keys)

    def to_payload(self) -> dict[str, list[bytes]]:
        return {"contexts": self.contexts, "public_keys": self.public_keys,
                "rotation_keys": self.rotation_keys}

    @classmethod
    def from_payload(cls, payload: dict) -> BfvPublicMaterial:
        return cls(list(payload["contexts"]), list(payload["public_keys"]),
                   list(payload["rotation_keys"]))


class BfvClient:
    """Key owner: one key pair and the rotation keys per prime; encrypt and decrypt residues."""

    def __init__(self, primes: list[int], rotations: list[int]) -> None:
        self.openfhe = openfhe = load_openfhe()
        self.primes = list(primes)
        start = time.perf_counter()
        self.contexts, self.public_keys, self._secret_keys = [], [], []
        for t in self.primes:
            context = openfhe.GenCryptoContext(_parameters(openfhe, t))
            for feature in (openfhe.PKE, openfhe.KEYSWITCH, openfhe.LEVELEDSHE):
                context.Enable(feature)
            keys = context.KeyGen()
            if rotations:
                context.EvalRotateKeyGen(keys.secretKey, [int(k) for k in rotations])
            self.contexts.append(context)
            self.public_keys.append(keys.publicKey)
            self._secret_keys.append(keys.secretKey)
        self.slots = self.contexts[0].GetRingDimension() // 2
        self.keygen_seconds = time.perf_counter() - start

    def public_material(self) -> BfvPublicMaterial:
        openfhe = self.openfhe
        rotation_keys = [
            openfhe.SerializeEvalAutomorphismKeyString(openfhe.BINARY, key.GetKeyTag())
            for key in self._secret_keys]
        return BfvPublicMaterial(
            [openfhe.Serialize(c, openfhe.BINARY) for c in self.contexts],
            [openfhe.Serialize(k, openfhe.BINARY) for k in self.public_keys], rotation_keys)

    def secret_key_bytes(self) -> list[bytes]:
        """For tests that check no secret-key bytes reach the server."""
        return [self.openfhe.Serialize(k, self.openfhe.BINARY) for k in self._secret_keys]

    def encrypt(self, values: np.ndarray) -> list[bytes]:
        """One ciphertext per prime of the integer vector ``values`` (reduced mod each prime)."""
        return self.encrypt_residues([np.mod(values, t) for t in self.primes])

    def encrypt_residues(self, residues: list[np.ndarray]) -> list[bytes]:
        """One ciphertext per prime of the given residues (one vector per prime)."""
        out = []
        for t, context, key, values in zip(self.primes, self.contexts, self.public_keys,
                                           residues, strict=True):
            row = np.zeros(self.slots, dtype=np.int64)
            row[:values.size] = centered(values.reshape(-1), t)
            ciphertext = context.Encrypt(key, context.MakePackedPlaintext(row.tolist()))
            out.append(self.openfhe.Serialize(ciphertext, self.openfhe.BINARY))
        return out

    def decrypt(self, data: list[bytes], size: int) -> list[np.ndarray]:
        """Centered residues of the first ``size`` slots, one array per prime."""
        out = []
        for t, context, key, blob in zip(self.primes, self.contexts, self._secret_keys, data,
                                         strict=True):
            ciphertext = self.openfhe.DeserializeCiphertextString(blob, self.openfhe.BINARY)
            plaintext = context.Decrypt(key, ciphertext)
            plaintext.SetLength(size)
            out.append(centered(np.array(plaintext.GetPackedValue()[:size], dtype=np.int64), t))
        return out


class BfvServer:
    """Linear maps on the client's ciphertexts, from public material only."""

    def __init__(self, primes: list[int], material: BfvPublicMaterial) -> None:
        self.openfhe = openfhe = load_openfhe()
        self.primes = list(primes)
        for t in self.primes:
            check_prime(t)
        openfhe.EnablePrecomputeCRTTablesAfterDeserializaton()
        self.contexts = [openfhe.DeserializeCryptoContextString(b, openfhe.BINARY)
                         for b in material.contexts]
        for blob in material.rotation_keys:
            openfhe.DeserializeEvalAutomorphismKeyString(blob, openfhe.BINARY)
        self.public_keys = [openfhe.DeserializePublicKeyString(b, openfhe.BINARY)
                            for b in material.public_keys]
        for context, t in zip(self.contexts, self.primes, strict=True):
            if int(context.GetPlaintextModulus()) != t:
                raise BackendError("the client's BFV contexts do not use the plan's primes")
        self.slots = self.contexts[0].GetRingDimension() // 2
        modulus_bits = int(str(self.contexts[0].GetElementParams().GetModulus())).bit_length()
        self.modulus_bytes = 2 * self.slots * 8 * -(-modulus_bits // 60)  # one encoded row
        self._plaintexts: dict[tuple, Any] = {}
        self._cached_bytes = 0
        self.native_seconds = 0.0

    def _fresh_zero(self, index: int) -> Any:
        context = self.contexts[index]
        zero = self._plaintext(index, ("zero",), np.zeros(1, dtype=np.int64))
        return context.Encrypt(self.public_keys[index], zero)

    def _plaintext(self, index: int, key: tuple, values: np.ndarray) -> Any:
        cache_key = (index,) + key
        plaintext = self._plaintexts.get(cache_key)
        if plaintext is None:
            row = np.zeros(self.slots, dtype=np.int64)
            row[:values.size] = centered(values, self.primes[index])
            plaintext = self.contexts[index].MakePackedPlaintext(row.tolist())
            if key[0] != "mask" and self._cached_bytes < PLAINTEXT_CACHE_BYTES:
                self._plaintexts[cache_key] = plaintext
                self._cached_bytes += self.modulus_bytes
        return plaintext

    def receive(self, blocks: list[list[bytes]]) -> list[list[Any]]:
        """Client ciphertexts ``[block][prime]`` → ``[prime][block]`` objects, each added to a
        fresh encryption of zero (re-randomized, and fast to compute on)."""
        openfhe = self.openfhe
        out = []
        for index, context in enumerate(self.contexts):
            received = [openfhe.DeserializeCiphertextString(block[index], openfhe.BINARY)
                        for block in blocks]
            out.append([context.EvalAdd(self._fresh_zero(index), ct) for ct in received])
        return out

    def quadratic(self, name: str, c: list[list[Any]], c2: list[list[Any]],
                  a: list[list[np.ndarray]], b: list[list[np.ndarray]],
                  constant: list[list[np.ndarray]]) -> list[list[Any]]:
        """a ⊙ Enc(c²) + b ⊙ Enc(c) + constant, slot-wise, per prime and block (``[prime][block]``
        ciphertexts and residue vectors; ``a`` is cached under ``name``, the others are not)."""
        start = time.perf_counter()
        out = []
        for index, context in enumerate(self.contexts):
            row = []
            for block, (ct_c, ct_c2) in enumerate(zip(c[index], c2[index], strict=True)):
                term = context.EvalMult(ct_c2, self._plaintext(index, ("quadratic", name, block),
                                                               a[index][block]))
                term = context.EvalAdd(term, context.EvalMult(
                    ct_c, self._plaintext(index, ("mask",), b[index][block])))
                row.append(context.EvalAdd(term, self._plaintext(index, ("mask",),
                                                                 constant[index][block])))
            out.append(row)
        self.native_seconds += time.perf_counter() - start
        return out

    def linear(self, blocks: list[list[bytes]], pairs: list[BlockPair], output_blocks: int,
               name: str, add: list[list[np.ndarray]] | None = None) -> list[list[bytes]]:
        """:meth:`linear_ciphertexts` on received ciphertext bytes ``[block][prime]``."""
        return self.linear_ciphertexts(self.receive(blocks), pairs, output_blocks, name, add)

    def masked(self, inputs: list[list[Any]], add: list[list[np.ndarray]]) -> list[list[bytes]]:
        """Each ciphertext plus residues (``add[block][prime]``, the server's mask),
        re-randomized with a fresh encryption of zero; ``inputs[prime][block]``. Returns
        ``[block][prime]`` ciphertext bytes."""
        start = time.perf_counter()
        out: list[list[bytes]] = [[] for _ in add]
        for index in range(len(self.contexts)):
            for block, ciphertext in enumerate(inputs[index]):
                out[block].append(self._reply(index, ciphertext, add[block][index]))
        self.native_seconds += time.perf_counter() - start
        return out

    def _reply(self, index: int, ciphertext: Any, mask: np.ndarray | None) -> bytes:
        """A ciphertext going back to the client: plus the mask residues (if any), plus a
        fresh encryption of zero (re-randomized), serialized."""
        context = self.contexts[index]
        if mask is not None:
            ciphertext = context.EvalAdd(ciphertext, self._plaintext(index, ("mask",), mask))
        ciphertext = context.EvalAdd(ciphertext, self._fresh_zero(index))
        return self.openfhe.Serialize(ciphertext, self.openfhe.BINARY)

    def linear_ciphertexts(self, inputs: list[list[Any]], pairs: list[BlockPair],
                           output_blocks: int, name: str,
                           add: list[list[np.ndarray]] | None = None) -> list[list[bytes]]:
        """A blocked linear map on the client's ciphertexts, per prime, re-randomized.

        ``inputs[p][i]``: input block i under prime p. Each :class:`BlockPair` adds
        Σ_g rot_g(Σ_b diag ⊙ rot_b(x_in)) to its output block (baby rotations of each input block
        hoisted once). ``add[o][p]``: residues added to output block o (the server's mask).
        Returns ``[output block][prime]`` ciphertext bytes.
        """
        start = time.perf_counter()
        out: list[list[bytes]] = [[] for _ in range(output_blocks)]
        for index, context in enumerate(self.contexts):
            order = context.GetCyclotomicOrder()
            blocks = inputs[index]
            babies: dict[int, set[int]] = {}
            for pair in pairs:
                babies.setdefault(pair.input_block, set()).update(
                    b for _, b, _ in pair.diagonals if b)
            rotated: dict[int, dict[int, Any]] = {}
            for block, amounts in babies.items():
                x = blocks[block]
                rotated[block] = {0: x}
                if amounts:
                    digits = context.EvalFastRotationPrecompute(x)
                    rotated[block].update({b: context.EvalFastRotation(x, b, order, digits)
                                           for b in sorted(amounts)})
            results: list[Any] = [None] * output_blocks
            for number, pair in enumerate(pairs):
                for giant in sorted({g for g, _, _ in pair.diagonals}):
                    inner = None
                    for position, (g, b, diagonal) in enumerate(pair.diagonals):
                        if g != giant:
                            continue
                        plaintext = self._plaintext(index, (name, number, position), diagonal)
                        term = context.EvalMult(rotated[pair.input_block][b], plaintext)
                        inner = term if inner is None else context.EvalAdd(inner, term)
                    if giant:
                        inner = context.EvalRotate(inner, giant)
                    current = results[pair.output_block]
                    results[pair.output_block] = inner if current is None else \
                        context.EvalAdd(current, inner)
            for block in range(output_blocks):
                result = results[block]
                if result is None:  # an output block no input reaches: Enc(0)
                    result = self._fresh_zero(index)
                out[block].append(self._reply(index, result,
                                              None if add is None else add[block][index]))
        self.native_seconds += time.perf_counter() - start
        return out
