"""ot.primitives — the symmetric primitives of the OT protocols (docs/protocol.md §11.1).

Reads: seeds, 128-bit blocks (numpy uint8 arrays of shape (n, 16)), tweaks.
Writes: pseudorandom bytes (AES-128-CTR), correlation-robust hashes (fixed-key AES, the TCCR
construction of Guo–Katz–Wang–Yu), 128-bit keys derived with SHA-256. All AES work goes
through ``cryptography`` (OpenSSL), one call per batch.
"""

from __future__ import annotations

import hashlib

import numpy as np
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

#: Bytes of a block, a seed, a derived key.
BLOCK = 16
#: The public fixed key of the hash's permutation π (SHA-256 of a domain string, first 16 bytes).
FIXED_KEY = hashlib.sha256(b"picompile ot fixed-key AES v1").digest()[:BLOCK]


def aes_ecb(key: bytes, blocks: np.ndarray) -> np.ndarray:
    """AES-128 of every row of ``blocks`` ((n, 16) uint8) under ``key``."""
    encryptor = Cipher(algorithms.AES(key), modes.ECB()).encryptor()
    data = encryptor.update(np.ascontiguousarray(blocks, dtype=np.uint8).tobytes())
    return np.frombuffer(data, dtype=np.uint8).reshape(-1, BLOCK)


def prg(seed: bytes, batch: int, nbytes: int) -> np.ndarray:
    """G(seed, batch): ``nbytes`` of AES-128-CTR keystream under ``seed``, the counter starting
    at batch·2^64 (a fresh stream per batch of one seed). uint8 array."""
    if len(seed) != BLOCK or not 0 <= batch < 2**64:
        raise ValueError("prg needs a 16-byte seed and a 64-bit batch index")
    counter = (batch << 64).to_bytes(BLOCK, "big")
    encryptor = Cipher(algorithms.AES(seed), modes.CTR(counter)).encryptor()
    return np.frombuffer(encryptor.update(bytes(nbytes)), dtype=np.uint8)


def tweak_blocks(first: int, count: int) -> np.ndarray:
    """The tweaks first, first+1, … as 128-bit little-endian blocks ((count, 16) uint8)."""
    words = np.zeros((count, 2), dtype="<u8")
    words[:, 0] = np.arange(first, first + count, dtype=np.uint64)
    return words.view(np.uint8).reshape(count, BLOCK)


def correlation_robust_hash(x: np.ndarray, first_tweak: int) -> np.ndarray:
    """H(x_l, first_tweak + l) = π(π(x_l) ⊕ i) ⊕ π(x_l) for every row x_l of ``x`` ((n, 16)
    uint8), π = AES-128 under :data:`FIXED_KEY` — tweakable correlation robust in the ideal
    permutation model (Guo, Katz, Wang, Yu, S&P 2020, §7)."""
    once = aes_ecb(FIXED_KEY, x)
    return aes_ecb(FIXED_KEY, once ^ tweak_blocks(first_tweak, len(x))) ^ once


def derive_key(tag: bytes, index: int, *parts: bytes) -> bytes:
    """A 128-bit key: SHA-256 over a domain tag, an index and length-prefixed parts."""
    digest = hashlib.sha256(tag + index.to_bytes(8, "little"))
    for part in parts:
        digest.update(len(part).to_bytes(4, "little") + part)
    return digest.digest()[:BLOCK]
