"""Oblivious transfer (runtime/ot): primitives' known answers, Chou–Orlandi base OTs on Ed25519,
IKNP extension, the two-party correlations' identities, view independence, malformed messages
and a vanishing peer."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from hypothesis import given, settings
from hypothesis import strategies as st
from nacl import bindings as sodium

from picompile.errors import ProtocolError
from picompile.runtime.channel import InMemoryChannel
from picompile.runtime.hybrid.correlations import TwoPartyCorrelations
from picompile.runtime.ot import ot_pair
from picompile.runtime.ot.base import (
    BASE_OTS,
    BaseOtReceiver,
    BaseOtSender,
    base_ot_receive,
    base_ot_send,
    base_ots_both_ways,
    check_point,
)
from picompile.runtime.ot.primitives import FIXED_KEY, aes_ecb, correlation_robust_hash, prg

# --------------------------------------------------------------------------- known answers


def test_aes_known_answers():
    # FIPS-197 appendix C.1, and AES-128 of the zero block under the zero key
    key = bytes(range(16))
    block = np.frombuffer(bytes.fromhex("00112233445566778899aabbccddeeff"), np.uint8)
    assert aes_ecb(key, block.reshape(1, 16)).tobytes().hex() == \
        "69c4e0d86a7b0430d8cdb78070b4c55a"
    assert prg(bytes(16), 0, 16).tobytes().hex() == "66e94bd4ef8a2c3b884cfa59ca342b2e"


def test_prg_is_aes_ctr_from_the_batch_counter():
    seed = bytes(range(16))
    stream = prg(seed, 3, 40)
    blocks = b"".join(((3 << 64) + i).to_bytes(16, "big") for i in range(3))
    want = Cipher(algorithms.AES(seed), modes.ECB()).encryptor().update(blocks)[:40]
    assert stream.tobytes() == want
    assert stream.tobytes().hex()[:40] == "90cb45611c3105c84624b2ac12cb5b7414e30303"
    assert prg(seed, 4, 40).tobytes() != stream.tobytes()  # a fresh stream per batch
    with pytest.raises(ValueError):
        prg(b"short", 0, 16)


def test_correlation_robust_hash_known_answer():
    x = np.arange(32, dtype=np.uint8).reshape(2, 16)
    got = correlation_robust_hash(x, 5)
    aes = Cipher(algorithms.AES(FIXED_KEY), modes.ECB())
    for row in range(2):  # H(x, i) = π(π(x) ⊕ i) ⊕ π(x), from the definition
        once = aes.encryptor().update(x[row].tobytes())
        tweak = (5 + row).to_bytes(16, "little")
        twice = aes.encryptor().update(bytes(a ^ b for a, b in zip(once, tweak, strict=True)))
        assert got[row].tobytes() == bytes(a ^ b for a, b in zip(twice, once, strict=True))
    assert got.tobytes().hex() == ("7be01bd97024b9ae0b938c0bbd52b8f6"
                                   "391ce155448d748a24b1f19b4b32742b")
    assert not np.array_equal(correlation_robust_hash(x, 7), got)  # the tweak matters


# --------------------------------------------------------------------------- base OTs


@settings(max_examples=8, deadline=None)
@given(st.lists(st.integers(0, 1), min_size=1, max_size=12))
def test_base_ot_receiver_gets_exactly_the_chosen_key(choices):
    sender, receiver = BaseOtSender(), BaseOtReceiver(choices)
    pairs = sender.keys(receiver.message(sender.message), len(choices))
    for (k0, k1), c, key in zip(pairs, choices, receiver.keys(), strict=True):
        assert key == (k1 if c else k0) and k0 != k1


def _threads(*targets):
    results, errors = [None] * len(targets), []

    def wrap(i, target):
        try:
            results[i] = target()
        except BaseException as exc:  # noqa: BLE001 - collected for the assertion
            errors.append(exc)

    threads = [threading.Thread(target=wrap, args=(i, t)) for i, t in enumerate(targets)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    return results, errors


def test_base_ots_over_a_channel_both_ways():
    a, b = InMemoryChannel.pair(timeout=20)
    s0 = [i % 2 for i in range(BASE_OTS)]
    s1 = [(i // 3) % 2 for i in range(BASE_OTS)]
    (r0, r1), errors = _threads(lambda: base_ots_both_ways(a, 0, s0),
                                lambda: base_ots_both_ways(b, 1, s1))
    assert not errors
    (pairs0, keys0), (pairs1, keys1) = r0, r1
    assert keys1 == [p[c] for p, c in zip(pairs0, s1, strict=True)]
    assert keys0 == [p[c] for p, c in zip(pairs1, s0, strict=True)]
    (pairs, keys), errors = _threads(lambda: base_ot_send(a, 4),
                                     lambda: base_ot_receive(b, [1, 0, 0, 1]))
    assert not errors and keys == [pairs[0][1], pairs[1][0], pairs[2][0], pairs[3][1]]


def _small_order_points() -> list[bytes]:
    identity = bytes([1]) + bytes(31)
    minus_one = ((2**255 - 19) - 1).to_bytes(32, "little")  # (0, −1): order 2
    return [identity, minus_one, bytes(32)]


def test_small_order_and_invalid_points_are_refused():
    base = sodium.crypto_scalarmult_ed25519_base_noclamp(
        sodium.crypto_core_ed25519_scalar_reduce(bytes(range(64))))
    assert check_point(base, "A") == base
    # base + the point of order 2: on the curve, but outside the prime-order subgroup
    mixed = sodium.crypto_core_ed25519_add(base, _small_order_points()[1])
    for point in _small_order_points() + [mixed, bytes(31), b"\xff" * 32, "text", None]:
        with pytest.raises(ProtocolError, match="Ed25519"):
            check_point(point, "A")
    receiver = BaseOtReceiver([0, 1])
    for point in _small_order_points():
        with pytest.raises(ProtocolError):
            receiver.message(point)
    sender = BaseOtSender()
    with pytest.raises(ProtocolError):
        sender.keys([base, _small_order_points()[0]], 2)
    with pytest.raises(ProtocolError, match="expected 2"):
        sender.keys([base], 2)


# --------------------------------------------------------------------------- IKNP


@pytest.fixture(scope="module")
def extension():
    return ot_pair()


@settings(max_examples=15, deadline=None)
@given(st.integers(0, 2500), st.integers(0, 2**32 - 1))
def test_iknp_random_ot_correctness(extension, m, seed):
    sender, receiver = extension
    r = np.random.default_rng(seed).integers(0, 2, m).astype(np.uint8)
    u, pads = receiver.extend(r)
    x0, x1 = sender.extend(u, m)
    assert x0.shape == x1.shape == pads.shape == (m, 16)
    assert np.array_equal(pads, np.where(r[:, None] == 1, x1, x0))
    assert not np.any(np.all(x0 == x1, axis=1))  # the other message stays different


def test_iknp_malformed_matrix_is_a_protocol_error(extension):
    sender, _ = extension
    for bad in (np.zeros((BASE_OTS, 3), np.uint8), np.zeros((BASE_OTS, 2), np.uint16),
                np.zeros((64, 2), np.uint8), [1, 2]):
        with pytest.raises(ProtocolError, match="extension matrix"):
            sender.extend(bad, 16)


def _correlation(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.astype(float).ravel(), b.astype(float).ravel()
    return float(np.corrcoef(a, b)[0, 1])


def test_sender_view_is_independent_of_the_receivers_choices():
    """Many runs: the matrix u the sender sees has balanced bits whatever the choices are, and
    its bits do not correlate with the choice bits."""
    views, choices = [], []
    rng = np.random.default_rng(7)
    for run in range(24):
        sender, receiver = ot_pair()
        r = (np.zeros(512, np.uint8) if run % 3 == 0 else np.ones(512, np.uint8)
             if run % 3 == 1 else rng.integers(0, 2, 512).astype(np.uint8))
        u, _ = receiver.extend(r)
        bits = np.unpackbits(u, axis=1, count=512)
        views.append(bits)
        choices.append(np.broadcast_to(r, bits.shape))
        assert abs(bits.mean() - 0.5) < 0.02
    views, choices = np.stack(views), np.stack(choices)
    bound = 5 / np.sqrt(views.size)
    assert abs(_correlation(views, choices)) < bound
    for value in (0, 1):  # the same bit frequency given either choice
        assert abs(views[choices == value].mean() - 0.5) < 0.01


def test_receiver_view_is_independent_of_the_senders_other_messages():
    """The receiver's outputs do not correlate with the messages it did not choose, and the
    correlated-OT correction it receives does not depend on the sender's correlation."""
    sender, receiver = ot_pair()
    m = 1 << 14
    r = np.random.default_rng(3).integers(0, 2, m).astype(np.uint8)
    u, pads = receiver.extend(r)
    x0, x1 = sender.extend(u, m)
    other = np.where(r[:, None] == 1, x0, x1)
    assert abs(_correlation(np.unpackbits(pads), np.unpackbits(other))) < 5 / np.sqrt(128 * m)
    # COT corrections τ = x1 − x0 − Δ for Δ = 0 and Δ = all ones: both look uniform
    h0 = np.ascontiguousarray(x0[:, :8]).view("<u8").ravel()
    h1 = np.ascontiguousarray(x1[:, :8]).view("<u8").ravel()
    with np.errstate(over="ignore"):
        for delta in (np.uint64(0), np.uint64(2**64 - 1)):
            tau = h1 - h0 - delta
            bits = np.unpackbits(tau.view(np.uint8))
            assert abs(bits.mean() - 0.5) < 0.005


def test_base_ot_receiver_message_is_independent_of_its_choices():
    """B_i = b_i·G + c_i·A is uniform in the subgroup: its encoding's bits have the same
    frequencies for c = 0 and c = 1 (many runs)."""
    sender = BaseOtSender()
    frequencies = []
    for c in (0, 1):
        points = BaseOtReceiver([c] * 256).message(sender.message)
        bits = np.unpackbits(np.frombuffer(b"".join(points), np.uint8)).reshape(256, 256)
        frequencies.append(bits[:, :248].mean())  # the top byte's high bits are not uniform
    assert abs(frequencies[0] - 0.5) < 0.01 and abs(frequencies[1] - 0.5) < 0.01


# --------------------------------------------------------------------------- correlations


def _both(call):
    a, b = InMemoryChannel.pair(timeout=30)
    parties = [TwoPartyCorrelations(a, 0, chunk=1024), TwoPartyCorrelations(b, 1, chunk=1024)]
    results, errors = _threads(lambda: call(parties[0]), lambda: call(parties[1]))
    assert not errors, errors
    return results


shapes = st.lists(st.integers(1, 5), min_size=1, max_size=3).map(tuple)


@settings(max_examples=6, deadline=None)
@given(shapes, shapes)
def test_beaver_triples_and_square_pairs_identities(shape, other):
    r0, r1 = _both(lambda p: (p.beaver_triples(shape), p.square_pairs(other)))
    with np.errstate(over="ignore"):
        a, b, c = (r0[0][0][i] + r1[0][1][i] for i in range(3))
        assert a.shape == shape and np.array_equal(a * b, c)
        assert not np.any(r0[0][1][0]) and not np.any(r1[0][0][0])  # the peer's part is zero
        x, q = (r0[1][0][i] + r1[1][1][i] for i in range(2))
        assert x.shape == other and np.array_equal(x * x, q)


masks = st.integers(1, 2**64 - 1)


@settings(max_examples=6, deadline=None)
@given(st.lists(st.tuples(shapes, masks), min_size=1, max_size=3), shapes)
def test_and_triples_and_random_bits_identities(specs, bit_shape):
    r0, r1 = _both(lambda p: (p.and_triples(specs), p.random_bits(bit_shape)))
    for j, (shape, mask) in enumerate(specs):
        a, b, c = (r0[0][j][0][i] ^ r1[0][j][1][i] for i in range(3))
        assert a.shape == shape and np.array_equal(a & b, c)
        assert not np.any(a & ~np.uint64(mask)) and not np.any(c & ~np.uint64(mask))
    bits = r0[1][0][0] ^ r1[1][1][0]
    with np.errstate(over="ignore"):
        arithmetic = r0[1][0][1] + r1[1][1][1]
    assert bits.shape == bit_shape and set(np.unique(bits)) <= {0, 1}
    assert np.array_equal(bits, arithmetic)


def test_correlations_are_uniform_over_many_gates():
    r0, r1 = _both(lambda p: (p.and_triples([((4096,), 0xFF)]), p.random_bits((4096,))))
    a, b, c = (r0[0][0][0][i] ^ r1[0][0][1][i] for i in range(3))
    ones = [np.unpackbits(v.astype(np.uint8)).mean() for v in (a, b)]
    assert all(abs(f - 0.5) < 0.02 for f in ones) and abs(np.unpackbits(
        c.astype(np.uint8)).mean() - 0.25) < 0.02
    assert abs((r0[1][0][0] ^ r1[1][1][0]).mean() - 0.5) < 0.04


def test_two_party_cost_model():
    from picompile.runtime.mpc import cost
    from picompile.runtime.mpc.boolean import MSB_AND_GATES

    assert sum(MSB_AND_GATES) == 183
    relu = cost("relu", 8, "two-party")
    assert relu["offline_bytes"] == 8 * (32 * 183 + 24 + 2 * (64 * 16 + 260))
    assert {k: v for k, v in relu.items() if k != "offline_bytes"} == \
        {k: v for k, v in cost("relu", 8).items() if k != "offline_bytes"}
    assert cost("add", 8, "two-party")["offline_bytes"] == 0


# --------------------------------------------------------------------------- failures


def test_a_peer_that_vanishes_in_the_offline_phase_is_a_protocol_error():
    a, b = InMemoryChannel.pair(timeout=1.0)
    party = TwoPartyCorrelations(a, 0)
    start = time.monotonic()
    with pytest.raises(ProtocolError):  # nobody answers the base OTs
        party.beaver_triples((4,))
    assert time.monotonic() - start < 5
    a, b = InMemoryChannel.pair(timeout=5.0)
    party = TwoPartyCorrelations(a, 0)
    peer = TwoPartyCorrelations(b, 1)
    _, errors = _threads(party.setup, peer.setup)
    assert not errors
    b.close()  # the peer goes away after the setup
    start = time.monotonic()
    with pytest.raises(ProtocolError):
        party.and_triples([((64,), 0xFF)])
    assert time.monotonic() - start < 6


def _malformed_peer(channel, replies):
    """A peer that answers each ``ot`` message with the next of ``replies``."""
    for reply in replies:
        channel.expect("ot")
        channel.send("ot", reply)


@pytest.mark.parametrize("replies, match", [
    ([{"A": bytes([1]) + bytes(31)}], "Ed25519"),          # the identity as A
    (["garbage"], "point A"),
    ([{"A": None}], "Ed25519"),
])
def test_malformed_base_ot_messages_are_protocol_errors(replies, match):
    a, b = InMemoryChannel.pair(timeout=5)
    thread = threading.Thread(target=_malformed_peer, args=(b, replies))
    thread.start()
    with pytest.raises(ProtocolError, match=match):
        TwoPartyCorrelations(a, 0).setup()
    thread.join(timeout=10)


def test_malformed_extension_and_correction_messages_are_protocol_errors():
    def honest_setup_then(replies):
        a, b = InMemoryChannel.pair(timeout=5)
        party, peer = TwoPartyCorrelations(a, 0), TwoPartyCorrelations(b, 1)
        _, errors = _threads(party.setup, peer.setup)
        assert not errors
        thread = threading.Thread(target=_malformed_peer, args=(b, replies))
        thread.start()
        return party, thread

    party, thread = honest_setup_then([[np.zeros((BASE_OTS, 1), np.uint8)]])  # wrong width
    with pytest.raises(ProtocolError, match="extension matrix"):
        party.and_triples([((64,), 1)])
    thread.join(timeout=10)
    party, thread = honest_setup_then([{"u": 1}])
    with pytest.raises(ProtocolError, match="ot"):
        party.and_triples([((64,), 1)])
    thread.join(timeout=10)
    # a valid matrix, then corrections of the wrong type for a Beaver triple
    party, thread = honest_setup_then([[np.zeros((BASE_OTS, 8), np.uint8)],
                                       [np.zeros(3, np.uint64)]])
    with pytest.raises(ProtocolError, match="corrections"):
        party.beaver_triples((1,))
    thread.join(timeout=10)
