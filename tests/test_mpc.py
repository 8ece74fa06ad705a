"""Tests for runtime/mpc.py: the 2-party share evaluator over Z_2^64 and its transcript."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from picompile.runtime import mpc

SETTINGS = settings(max_examples=75, deadline=None, derandomize=True, database=None)
F = 16
FP = mpc.FixedPoint(F)
ULP = 2.0 ** -F
TOP = 1 << 63
RING_EDGES = [0, 1, mpc.MASK64, TOP, TOP - 1, TOP + 1, mpc.MASK64 - 1, 2, 1 << 32]

ring_ints = st.one_of(st.sampled_from(RING_EDGES), st.integers(0, mpc.MASK64))
ring_arrays = st.lists(ring_ints, min_size=1, max_size=48)
seeds = st.integers(0, 2**32 - 1)


def _u(values) -> np.ndarray:
    return np.array(values, dtype=np.uint64)


def _signed(v: np.ndarray) -> np.ndarray:
    return np.asarray(v, dtype=np.uint64).view(np.int64)


def _fixed_floats(limit: float):
    """Reals on the fixed-point grid or not, with the edge cases 0, +-1 ulp and +-limit."""
    edges = [0.0, ULP, -ULP, limit, -limit, 1.0, -1.0]
    return st.one_of(st.sampled_from(edges),
                     st.floats(-limit, limit, allow_nan=False, allow_infinity=False))


def _split(x_ring: np.ndarray, s0: np.ndarray) -> mpc.Shared:
    """A sharing of x with a chosen (possibly adversarial) share s0."""
    with np.errstate(over="ignore"):
        return mpc.Shared(s0, x_ring - s0)


# --------------------------------------------------------------------------- sharing, encoding


@SETTINGS
@given(ring_arrays, seeds)
def test_share_reconstruct_identity(values, seed):
    x = _u(values)
    sh = mpc.share(x, np.random.default_rng(seed))
    assert sh.p0.dtype == np.uint64 and sh.p1.dtype == np.uint64
    assert np.array_equal(mpc.reconstruct(sh), x)
    assert np.array_equal(mpc.reconstruct(sh.p0, sh.p1), x)


@SETTINGS
@given(st.lists(_fixed_floats(FP.max_abs * (1 - 2**-40)), min_size=1, max_size=32))
def test_fixed_point_round_trip(values):
    x = np.array(values)
    back = FP.decode(FP.encode(x))
    assert np.all(np.abs(back - x) <= ULP / 2)


def test_fixed_point_edges_and_range():
    assert np.array_equal(FP.encode([0.0, ULP, -ULP]), _u([0, 1, mpc.MASK64]))
    assert np.array_equal(FP.decode(_u([TOP, 1 << 53])), [-(2.0**47), 2.0**37])
    for bad in (FP.max_abs, -FP.max_abs, np.inf, np.nan):
        with pytest.raises(ValueError):
            FP.encode([bad])


# --------------------------------------------------------------------------- truncation


@SETTINGS
@given(st.lists(st.one_of(st.sampled_from([0, 1, -1, 2**40 - 1, -(2**40) + 1]),
                          st.integers(-(2**40) + 1, 2**40 - 1)), min_size=1, max_size=48),
       seeds)
def test_truncation_within_one_ulp_of_floor_shift(values, seed):
    x = np.array(values, dtype=np.int64)
    sh = mpc.share(x.view(np.uint64), np.random.default_rng(seed))
    got = _signed(mpc.reconstruct(mpc.truncate(sh, F)))
    diff = got - (x >> F)                    # documented: floor(x / 2^f) + {0, 1}
    assert np.all((diff == 0) | (diff == 1))


def test_truncation_failure_rate_is_zero_below_2_to_30():
    rng = np.random.default_rng(7)
    x = rng.integers(-(2**30) + 1, 2**30, size=100_000, dtype=np.int64)
    sh = mpc.share(x.view(np.uint64), rng)
    diff = _signed(mpc.reconstruct(mpc.truncate(sh, F))) - (x >> F)
    assert np.all((diff == 0) | (diff == 1))     # failure probability < 2^-34 per sample


def test_truncation_failure_probability_matches_formula():
    """With |x| = 2^60 the documented failure probability |x| / 2^64 is 1/16."""
    rng = np.random.default_rng(11)
    n = 40_000
    x = np.where(rng.random(n) < 0.5, 2**60, -(2**60)).astype(np.int64)
    sh = mpc.share(x.view(np.uint64), rng)
    diff = _signed(mpc.reconstruct(mpc.truncate(sh, F))) - (x >> F)
    failed = ~((diff == 0) | (diff == 1))
    assert abs(failed.mean() - 1 / 16) < 5 * math.sqrt((1 / 16) * (15 / 16) / n)
    # a failure is catastrophic: off by ~2^(64 - f)
    assert np.all(np.abs(diff[failed].astype(np.float64)) > 2.0 ** (63 - F))


def test_truncation_fails_exactly_when_s0_minus_x_wraps():
    x = np.array([-5, 5], dtype=np.int64)
    s0 = np.array([2**63 - 1, -(2**63)], dtype=np.int64).view(np.uint64)
    diff = _signed(mpc.reconstruct(mpc.truncate(_split(x.view(np.uint64), s0), F))) - (x >> F)
    assert np.all(np.abs(diff) > 2**40)


# --------------------------------------------------------------------------- Beaver products


@SETTINGS
@given(st.lists(st.tuples(ring_ints, ring_ints), min_size=1, max_size=48), seeds)
def test_beaver_mul_and_square_exact_in_ring(pairs, seed):
    x, y = _u([p[0] for p in pairs]), _u([p[1] for p in pairs])
    sess = mpc.Session(dealer_seed=seed, input_seed=seed + 1)
    xs, ys = mpc.share(x, sess.input_rng), mpc.share(y, sess.input_rng)
    with np.errstate(over="ignore"):
        assert np.array_equal(mpc.reconstruct(mpc.mul(sess, xs, ys, rescale=False)), x * y)
        assert np.array_equal(mpc.reconstruct(mpc.square(sess, xs, rescale=False)), x * x)


@SETTINGS
@given(st.lists(st.tuples(_fixed_floats(2.0**4), _fixed_floats(2.0**4)), min_size=1,
                max_size=48), seeds)
def test_fixed_point_mul_and_square_within_one_ulp(pairs, seed):
    # |x y| < 2^8 keeps the products below 2^40 in the ring: failure probability < 2^-24
    x, y = np.array([p[0] for p in pairs]), np.array([p[1] for p in pairs])
    sess = mpc.Session(dealer_seed=seed, input_seed=seed + 1)
    xe, ye = FP.encode(x).view(np.int64), FP.encode(y).view(np.int64)
    xs, ys = sess.share_input(x), sess.share_input(y)
    for got, exact in ((mpc.mul(sess, xs, ys), (xe * ye) >> F),
                       (mpc.square(sess, xs), (xe * xe) >> F)):
        diff = _signed(mpc.reconstruct(got)) - exact
        assert np.all((diff == 0) | (diff == 1))


def test_public_linear_ops_are_local_and_exact():
    sess = mpc.Session(input_seed=3)
    x = np.array([-3.25, 0.0, ULP, 100.5])
    xs = sess.share_input(x)
    dec = lambda s: FP.decode(mpc.reconstruct(s))  # noqa: E731
    assert np.array_equal(dec(mpc.add(xs, xs)), 2 * x)
    assert np.array_equal(dec(mpc.sub(xs, mpc.neg(xs))), 2 * x)
    assert np.array_equal(dec(mpc.add_public(sess, xs, 1.5)), x + 1.5)
    assert np.array_equal(dec(mpc.mul_public_int(xs, -3)), -3 * x)
    assert np.all(np.abs(dec(mpc.mul_public(sess, xs, 0.75)) - 0.75 * x) <= ULP)
    assert sess.transcript.counts() == mpc.cost("add", 4)


# --------------------------------------------------------------------------- comparisons


@SETTINGS
@given(st.lists(st.tuples(ring_ints, ring_ints), min_size=1, max_size=48), seeds)
def test_msb_and_drelu_exact_for_every_value_and_split(pairs, seed):
    x, s0 = _u([p[0] for p in pairs]), _u([p[1] for p in pairs])
    sh = _split(x, s0)                               # adversarial splits, edge values included
    msb_true = x >> np.uint64(63)
    sess = mpc.Session(dealer_seed=seed)
    assert np.array_equal(mpc.reconstruct(mpc.msb(sess, sh)), msb_true)
    assert np.array_equal(mpc.reconstruct(mpc.drelu(sess, sh)), 1 - msb_true)


def test_msb_two_complement_extremes_all_splits():
    x = _u(RING_EDGES)
    for s0 in (0, 1, TOP, TOP - 1, mpc.MASK64):
        sh = _split(x, np.full(x.shape, s0, dtype=np.uint64))
        got = mpc.reconstruct(mpc.msb(mpc.Session(), sh))
        assert np.array_equal(got, x >> np.uint64(63))


@SETTINGS
@given(ring_arrays, seeds)
def test_a2b_exact(values, seed):
    x = _u(values)
    sh = mpc.share(x, np.random.default_rng(seed))
    sess = mpc.Session(dealer_seed=seed)
    assert np.array_equal(mpc.reconstruct(mpc.a2b(sess, sh)), x)
    assert sess.transcript.counts() == mpc.cost("a2b", x.size)


@SETTINGS
@given(st.lists(st.tuples(st.integers(0, 1), st.integers(0, 1)), min_size=1, max_size=48),
       seeds)
def test_b2a_exact(bits, seed):
    b, s0 = _u([p[0] for p in bits]), _u([p[1] for p in bits])
    sess = mpc.Session(dealer_seed=seed)
    got = mpc.reconstruct(mpc.b2a(sess, mpc.BoolShared(s0, b ^ s0)))
    assert np.array_equal(got, b)


@SETTINGS
@given(ring_arrays, seeds)
def test_relu_exact_on_ring_integers(values, seed):
    x = _u(values)
    sess = mpc.Session(dealer_seed=seed, input_seed=seed)
    got = mpc.reconstruct(mpc.relu(sess, mpc.share(x, sess.input_rng)))
    assert np.array_equal(_signed(got), np.maximum(_signed(x), 0))


@SETTINGS
@given(st.lists(_fixed_floats(FP.max_abs * (1 - 2**-40)), min_size=1, max_size=48), seeds)
def test_relu_fixed_point_equals_encoded_max(values, seed):
    x = np.array(values)
    sess = mpc.Session(dealer_seed=seed, input_seed=seed)
    got = mpc.reconstruct(mpc.relu(sess, sess.share_input(x)))
    assert np.array_equal(got, FP.encode(np.maximum(x, 0.0)))


@SETTINGS
@given(st.lists(st.tuples(_fixed_floats(2.0**45), _fixed_floats(2.0**45)), min_size=1,
                max_size=48), seeds)
def test_max_pool_pairwise_exact(pairs, seed):
    a, b = np.array([p[0] for p in pairs]), np.array([p[1] for p in pairs])
    sess = mpc.Session(dealer_seed=seed, input_seed=seed)
    got = mpc.max_pool_pairwise(sess, sess.share_input(a), sess.share_input(b))
    assert np.array_equal(_signed(mpc.reconstruct(got)),
                          np.maximum(_signed(FP.encode(a)), _signed(FP.encode(b))))


@SETTINGS
@given(st.integers(1, 9), st.integers(1, 4), st.integers(0, 1), seeds)
def test_maximum_reduce_exact_and_log_depth(k, m, axis, seed):
    rng = np.random.default_rng(seed)
    shape = (k, m) if axis == 0 else (m, k)
    x = np.round(rng.normal(0, 100, size=shape), 3)
    x.flat[rng.integers(x.size)] = 0.0
    sess = mpc.Session(dealer_seed=seed, input_seed=seed)
    got = mpc.maximum_reduce(sess, sess.share_input(x), axis=axis)
    assert np.array_equal(mpc.reconstruct(got), FP.encode(x.max(axis=axis)))
    assert sess.transcript.rounds("online") == 9 * math.ceil(math.log2(k))


# --------------------------------------------------------------------------- polynomials


@SETTINGS
@given(st.lists(_fixed_floats(8.0), min_size=1, max_size=32),
       st.lists(st.floats(-4, 4), min_size=1, max_size=4), seeds)
def test_polynomial_within_a_few_ulps(values, coeffs, seed):
    x = np.array(values)
    sess = mpc.Session(dealer_seed=seed, input_seed=seed)
    got = FP.decode(mpc.reconstruct(mpc.polynomial(sess, sess.share_input(x), coeffs)))
    xq = FP.decode(FP.encode(x))
    cq = FP.decode(FP.encode(coeffs))
    want = sum(c * xq**k for k, c in enumerate(cq))
    # truncation of x^2, x^3 (<= 1 ulp each, times |c_k|, and x^2's error times |x| in x^3)
    tol = (2 + 2 * np.abs(cq[2:]).sum() * (1 + np.abs(xq))) * ULP if len(cq) > 2 else 2 * ULP
    assert np.all(np.abs(got - want) <= tol)
    deg = len(coeffs) - 1
    assert sess.transcript.rounds("online") == [0, 0, 1, 2][deg]


def test_quadratic_per_channel_coefficients():
    rng = np.random.default_rng(5)
    x = rng.uniform(-6, 6, size=(2, 3, 4))
    a, b, c = (rng.uniform(-1, 1, size=(1, 3, 1)) for _ in range(3))
    sess = mpc.Session(input_seed=1)
    got = FP.decode(mpc.reconstruct(mpc.quadratic(sess, sess.share_input(x), a, b, c)))
    assert np.all(np.abs(got - (a * x**2 + b * x + c)) <= 16 * ULP)
    assert sess.transcript.counts() == mpc.cost("quadratic", x.size)


# --------------------------------------------------------------------------- transcript, views


@pytest.mark.parametrize("n", [1, 3, 8, 100])
def test_transcript_counts_match_documented_formulas(n):
    x = np.linspace(-5, 5, n)
    for op, run in [
        ("mul", lambda s, v: mpc.mul(s, v, v)),
        ("square", lambda s, v: mpc.square(s, v)),
        ("msb", mpc.msb),
        ("b2a", lambda s, v: mpc.b2a(s, mpc.msb(s, v))),
        ("relu", mpc.relu),
        ("polynomial3", lambda s, v: mpc.polynomial(s, v, [0.1, 0.2, 0.3, 0.4])),
        ("truncate", lambda s, v: mpc.truncate(v, F)),
        ("mul_public", lambda s, v: mpc.mul_public(s, v, 0.5)),
    ]:
        sess = mpc.Session(input_seed=0)
        xs = sess.share_input(x)
        run(sess, xs)
        want = mpc.cost(op, n)
        if op == "b2a":
            want = {k: want[k] + mpc.cost("msb", n)[k] for k in want}
        assert sess.transcript.counts() == want, op
    relu = mpc.cost("relu", n)
    assert relu["online_rounds"] == 7 + 1 + 1
    assert relu["offline_bytes"] > 0
    assert relu["online_bytes"] == 2 * (sum(-(-2 * g * n // 8) for g in mpc.MSB_AND_GATES)
                                        + -(-n // 8) + 16 * n)
    assert sum(mpc.MSB_AND_GATES) == 183 and sum(mpc.A2B_AND_GATES) == 631


def test_relu_message_log_structure():
    n = 10
    sess = mpc.Session(input_seed=0)
    mpc.relu(sess, sess.share_input(np.linspace(-1, 1, n)))
    online = [m for m in sess.transcript.messages if m.phase == "online"]
    labels = ["msb.g"] + [f"msb.tree{k}" for k in range(6)] + ["b2a.c", "mul.ef"]
    assert [m.label for m in online[::2]] == labels
    for r, (m0, m1) in enumerate(zip(online[::2], online[1::2], strict=True)):
        assert (m0.round, m1.round) == (r, r)                 # both parties send in parallel
        assert (m0.sender, m1.sender) == ("P0", "P1") and m0.nbytes == m1.nbytes
    gates = dict(zip(labels, mpc.MSB_AND_GATES, strict=False))
    for m in online:
        want = {"b2a.c": -(-n // 8), "mul.ef": 16 * n}.get(m.label, -(-2 * gates.get(
            m.label, 0) * n // 8))
        assert m.nbytes == want
    assert all(m.sender == "dealer" for m in sess.transcript.messages if m.phase == "offline")


def _views(dealer_seed: int, x: np.ndarray) -> list[tuple[str, tuple[np.ndarray, ...]]]:
    sess = mpc.Session(dealer_seed=dealer_seed, input_seed=99, keep_payloads=True)
    mpc.relu(sess, sess.share_input(x))
    return [(m.label, m.payload) for m in sess.transcript.view(1)]


def test_online_view_is_masked():
    x = np.zeros(4096)                      # a constant input: any structure would show
    v1, v2 = _views(1, x), _views(2, x)
    assert [lab for lab, _ in v1] == [lab for lab, _ in v2]
    for (label, p1), (_, p2) in zip(v1, v2, strict=True):
        for a, b in zip(p1, p2, strict=True):
            assert not np.array_equal(a, b), label       # a fresh dealer mask changes the view
    # the opened Beaver values of the final product look uniform: top bit set about half the time
    ef = dict(v1)["mul.ef"]
    for arr in ef:
        assert 0.45 < (arr >> np.uint64(63)).mean() < 0.55
    # the opened AND-gate bits are unbiased on the gate positions (bit 5 is a gate in msb.g)
    e_bits = (dict(v1)["msb.g"][0] >> np.uint64(5)) & np.uint64(1)
    assert 0.45 < e_bits.mean() < 0.55
