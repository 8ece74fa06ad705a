"""Measure OpenFHE CKKS operation costs and the hybrid protocol's BFV and share costs on this
machine (``picompile calibrate-costs``).

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
import socket
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
        try:
            costs["chebyshev"][str(degree)] = median_seconds(
                lambda c=coefficients: context.EvalChebyshevSeries(ciphertext, c, -2.0, 3.0),
                max(1, repeats // 2))
        except RuntimeError:  # a shallow chain (--depth) affords no higher degree
            break
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
    if progress is not None:
        progress("measuring the hybrid protocol's BFV and share costs")
    table["hybrid"] = {"source": table["source"], **measure_hybrid_costs(repeats)}
    table["threads"] = openmp_threads()
    return table


def measure_hybrid_costs(repeats: int = 5, elements: int = 8192) -> dict[str, Any]:
    """Seconds of what the hybrid protocol spends its compute on, per prime of the BFV ring the
    plans use (two 50-bit primes, 128-bit) and per element of the share protocols.

    BFV, per ciphertext and prime: ``encrypt`` (encode, encrypt, serialize), ``decrypt``
    (deserialize, decrypt, decode), ``receive`` (deserialize, add a fresh encryption of zero),
    ``reply`` (add the mask and a fresh encryption of zero, serialize), ``hoisted_precompute``,
    ``hoisted_rotate``, ``rotate``, ``diagonal`` (a plaintext product accumulated),
    ``rotation_keygen`` (one rotation key), ``keygen`` (context and key pair); the serialized
    sizes of a ciphertext, of the context with its public key and of one rotation key.
    Shares, per element (both parties simulated in one process, so halved): ``relu``,
    ``square`` (a Beaver square with truncation), and per call on a few elements
    (``relu_call``, ``square_call``: the fixed cost); ``matmul_nonzero`` (the server's integer
    matrix product mod each prime, per nonzero weight); ``message`` (one protocol message
    framed, sent and received between two processes over a socket pair)."""
    from picompile.runtime import mpc
    from picompile.runtime.bfv import BfvClient, BfvServer, plaintext_primes
    from picompile.runtime.hybrid.kernels import LIMBS

    primes = plaintext_primes(2)
    rng = np.random.default_rng(0)
    start = time.perf_counter()
    base = BfvClient(primes[:1], [1]).public_material().size
    keygen = time.perf_counter() - start
    rotations = [1, 2, 4, 8, 16]
    start = time.perf_counter()
    client = BfvClient(primes[:1], rotations)
    rotation_keygen = max(0.0, (time.perf_counter() - start - keygen) / (len(rotations) - 1))
    keygen -= rotation_keygen
    material = client.public_material()
    key_bytes = (material.size - base) / (len(rotations) - 1)
    server = BfvServer(primes[:1], material)
    context, openfhe = server.contexts[0], server.openfhe
    values = rng.integers(0, 1000, client.slots)
    blob = client.encrypt(values)
    ciphertext = server.receive([blob])[0][0]
    plaintext = server._plaintext(0, ("measure",), values)
    order = context.GetCyclotomicOrder()
    digits = context.EvalFastRotationPrecompute(ciphertext)
    mask = [[values]]

    def diagonal() -> None:
        context.EvalAdd(ciphertext, context.EvalMult(ciphertext, plaintext))

    costs = {
        "ring_dimension": int(context.GetRingDimension()),
        "keygen": keygen, "rotation_keygen": rotation_keygen,
        "public_key_bytes": base - key_bytes, "rotation_key_bytes": key_bytes,
        "ciphertext_bytes": len(blob[0]),
        "encrypt": median_seconds(lambda: client.encrypt(values), repeats),
        "decrypt": median_seconds(lambda: client.decrypt(blob, client.slots), repeats),
        "receive": median_seconds(lambda: server.receive([blob]), repeats),
        "reply": median_seconds(lambda: server.masked([[ciphertext]], mask), repeats),
        "hoisted_precompute": median_seconds(
            lambda: context.EvalFastRotationPrecompute(ciphertext), repeats),
        "hoisted_rotate": median_seconds(
            lambda: context.EvalFastRotation(ciphertext, 1, order, digits), repeats),
        "rotate": median_seconds(lambda: context.EvalRotate(ciphertext, 2), repeats),
        "diagonal": median_seconds(diagonal, repeats),
    }
    del openfhe
    session = mpc.Session()
    x = session.share_input(rng.normal(size=elements))
    costs["relu"] = median_seconds(lambda: mpc.relu(session, x), repeats) / elements / 2
    costs["square"] = median_seconds(lambda: mpc.polynomial(session, x, [0.0, 1.0, 0.5]),
                                     repeats) / elements / 2
    small = session.share_input(rng.normal(size=16))
    costs["relu_call"] = median_seconds(lambda: mpc.relu(session, small), repeats) / 2
    costs["square_call"] = median_seconds(
        lambda: mpc.polynomial(session, small, [0.0, 1.0, 0.5]), repeats) / 2
    from picompile.runtime.channel.tcp import TcpChannel

    message = rng.integers(0, 1 << 62, 1024).astype(np.uint64)
    rounds = 50
    near_socket, far_socket = socket.socketpair()
    echo = os.fork()
    if echo == 0:  # the peer: a separate process, as in a deployment
        try:
            near_socket.close()
            peer = TcpChannel(far_socket, timeout=60.0)
            for _ in range(rounds * repeats):
                peer.send("open", peer.recv().payload)
        finally:
            os._exit(0)
    far_socket.close()
    near = TcpChannel(near_socket, timeout=60.0)

    def ping_pong() -> None:
        for _ in range(rounds):
            near.send("open", message)
            near.recv()

    # one message between two processes (framing, socket calls, the peer's wake-up), as the
    # parties of a deployment exchange them in every MPC round
    costs["message"] = median_seconds(ping_pong, repeats) / (2 * rounds)
    near.close()
    os.waitpid(echo, 0)
    import scipy.sparse

    nonzeros = 64 * elements
    matrix = scipy.sparse.random(elements, elements, density=nonzeros / elements**2,
                                 format="csr", random_state=0, dtype=np.float64)
    matrix = scipy.sparse.csr_matrix((np.rint(matrix.data * 1e6).astype(np.int64),
                                      matrix.indices, matrix.indptr), shape=matrix.shape)
    vector = rng.integers(0, 1 << 13, elements)
    costs["matmul_nonzero"] = median_seconds(lambda: matrix @ vector, repeats) * LIMBS / \
        matrix.nnz
    return costs
