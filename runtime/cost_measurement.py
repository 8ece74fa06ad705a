"""Measure OpenFHE CKKS operation costs on this machine (``picompile calibrate-costs``).

Reads: ring dimensions (and the matching depth) to measure at.
Writes: a cost table (JSON-able dict) — per ring dimension, seconds per plaintext
multiplication, addition, plaintext addition, rotation, hoisted-rotation precompute and each
hoisted rotation, plaintext encoding, one diagonal of a linear step (multiply by a distinct
plaintext and accumulate, as the runtime does), and ``EvalChebyshevSeries`` per degree, all at
the top of a chain with ``towers`` RNS limbs (costs scale about linearly with the limbs left).
Medians of repeated runs, single-threaded unless ``OMP_NUM_THREADS`` says otherwise.
"""

from __future__ import annotations

import os
import platform
import statistics
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from picompile.runtime.openfhe_loader import ckks_parameters, load_openfhe, openmp_threads

CHEBYSHEV_DEGREES = (2, 3, 5, 7, 13, 27, 59)


def median_seconds(action: Callable[[], Any], repeats: int) -> float:
    """Median wall time of ``repeats`` calls of ``action``."""
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        action()
        samples.append(time.perf_counter() - start)
    return statistics.median(samples)


def measure_ring_dimension(ring_dimension: int, depth: int, repeats: int = 5) -> dict[str, Any]:
    """Costs at one ring dimension (insecure parameters when 128-bit security would not pick it).
    """
    openfhe = load_openfhe()
    secure = ckks_parameters(openfhe, depth, insecure=False)
    secure_ring = openfhe.GenCryptoContext(secure).GetRingDimension()
    insecure = secure_ring != ring_dimension
    parameters = ckks_parameters(openfhe, depth, insecure=insecure, ring=ring_dimension)
    context = openfhe.GenCryptoContext(parameters)
    for feature in (openfhe.PKE, openfhe.KEYSWITCH, openfhe.LEVELEDSHE, openfhe.ADVANCEDSHE):
        context.Enable(feature)
    keys = context.KeyGen()
    context.EvalMultKeyGen(keys.secretKey)
    context.EvalRotateKeyGen(keys.secretKey, [1, 2, 3, 5, 8])
    slots = ring_dimension // 2
    vector = np.random.default_rng(0).uniform(-1, 1, slots).tolist()
    plaintext = context.MakeCKKSPackedPlaintext(vector)
    ciphertext = context.Encrypt(keys.publicKey, plaintext)
    order = context.GetCyclotomicOrder()
    digits = context.EvalFastRotationPrecompute(ciphertext)
    costs: dict[str, Any] = {
        "towers": depth + 1,
        "depth": depth,
        "secure_128": not insecure,
        "encode": median_seconds(lambda: context.MakeCKKSPackedPlaintext(vector, 1, 0, None,
                                                                            slots), repeats),
        "multiply_plain": median_seconds(lambda: context.EvalMult(ciphertext, plaintext),
                                          repeats),
        "add": median_seconds(lambda: context.EvalAdd(ciphertext, ciphertext), repeats),
        "add_plain": median_seconds(lambda: context.EvalAdd(ciphertext, plaintext), repeats),
        "rotate": median_seconds(lambda: context.EvalRotate(ciphertext, 3), repeats),
        "hoisted_precompute": median_seconds(
            lambda: context.EvalFastRotationPrecompute(ciphertext), repeats),
        "hoisted_rotate": median_seconds(
            lambda: context.EvalFastRotation(ciphertext, 5, order, digits), repeats),
        "chebyshev": {},
    }
    # A diagonal of a linear step as the runtime meets it: distinct plaintexts (cache-cold),
    # distinct rotated ciphertexts, accumulated. Costlier per call than the same pt reused.
    rng = np.random.default_rng(1)
    count = 32
    diagonals = [context.MakeCKKSPackedPlaintext(rng.uniform(-1, 1, slots).tolist(), 1, 0, None,
                                                 slots) for _ in range(count)]
    rotated = [context.EvalFastRotation(ciphertext, (1, 2, 3, 5, 8)[k % 5], order, digits)
               for k in range(count)]

    def linear_terms() -> None:
        accumulator = context.EvalMult(rotated[0], diagonals[0])
        for index in range(1, count):
            accumulator = context.EvalAdd(accumulator,
                                          context.EvalMult(rotated[index], diagonals[index]))

    costs["diagonal"] = median_seconds(linear_terms, repeats) / count
    for degree in CHEBYSHEV_DEGREES:
        coefficients = np.random.default_rng(degree).normal(size=degree + 1).tolist()
        costs["chebyshev"][str(degree)] = median_seconds(
            lambda c=coefficients: context.EvalChebyshevSeries(ciphertext, c, -2.0, 3.0),
            max(1, repeats // 2))
    return costs


def measure_cost_table(ring_dimensions: list[int], depth: int = 11, repeats: int = 5,
                       progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    table: dict[str, Any] = {
        "source": "measured by picompile calibrate-costs",
        "machine": f"{platform.node()} {platform.machine()} {os.cpu_count()} cores",
        "measured": time.strftime("%Y-%m-%d %H:%M"),
        "ring_dimensions": {},
    }
    for ring in ring_dimensions:
        if progress is not None:
            progress(f"measuring ring dimension {ring}")
        table["ring_dimensions"][str(ring)] = measure_ring_dimension(ring, depth, repeats)
    table["threads"] = openmp_threads()
    return table
