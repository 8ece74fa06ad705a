"""Tests for picompile.approx: each test checks a known mathematical fact."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from scipy import integrate, special

from picompile import approx
from picompile.approx import basis
from picompile.cost import polynomial_depth
from picompile.runtime.slot_program import power_series

BERNSTEIN = 0.2801694990


def _relu(x: np.ndarray) -> np.ndarray:
    return np.maximum(x, 0.0)


def _dense_gaussian(mean: float, std: float, bins: int = 200_001) -> approx.EmpiricalDistribution:
    """Histogram whose bin weights are the exact N(mean, std^2) masses on mean +- 10 std."""
    edges = np.linspace(mean - 10 * std, mean + 10 * std, bins + 1)
    masses = np.diff(special.ndtr((edges - mean) / std))
    return approx.EmpiricalDistribution(edges, masses, mean, std, edges[0], edges[-1])


def _gaussian_mse(poly, mean: float, std: float) -> float:
    """E[(p(x) - relu(x))^2], x ~ N(mean, std^2), by adaptive quadrature split at the kink."""

    def integrand(x: float) -> float:
        pdf = math.exp(-0.5 * ((x - mean) / std) ** 2) / (std * math.sqrt(2 * math.pi))
        return float((poly(np.array([x]))[0] - max(x, 0.0)) ** 2) * pdf

    lo, hi = mean - 12 * std, mean + 12 * std
    left = integrate.quad(integrand, lo, 0.0, epsabs=1e-14, epsrel=1e-12, limit=200)[0]
    right = integrate.quad(integrand, 0.0, hi, epsabs=1e-14, epsrel=1e-12, limit=200)[0]
    return left + right


# ------------------------------------------------------------------------------ activations


def test_activation_table_is_read_only_and_complete() -> None:
    assert set(approx.ACTIVATIONS) == {
        "relu",
        "relu6",
        "clip",
        "leaky_relu",
        "sigmoid",
        "tanh",
        "gelu",
        "abs",
    }
    with pytest.raises(TypeError):
        approx.ACTIVATIONS["relu"] = np.abs  # type: ignore[index]
    x = np.linspace(-8, 8, 33)
    np.testing.assert_allclose(approx.ACTIVATIONS["gelu"](x), x * special.ndtr(x), atol=1e-15)
    np.testing.assert_allclose(
        approx.make_activation("clip", lo=0, hi=6)(x), approx.ACTIVATIONS["relu6"](x)
    )
    np.testing.assert_allclose(
        approx.make_activation("leaky_relu", alpha=0.1)(x), np.where(x > 0, x, 0.1 * x)
    )


def test_make_activation_errors() -> None:
    with pytest.raises(ValueError, match="relu"):
        approx.make_activation("swish")
    with pytest.raises(ValueError):
        approx.make_activation("clip")  # lo/hi missing
    with pytest.raises(ValueError):
        approx.make_activation("relu", alpha=0.1)
    with pytest.raises(ValueError):
        approx.make_activation("clip", lo=2, hi=1)


def test_tanh_gelu_is_a_parameter_of_the_one_table() -> None:
    x = np.linspace(-6, 6, 49)
    tanh_form = 0.5 * x * (1 + np.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x**3)))
    np.testing.assert_allclose(approx.make_activation("gelu", approximate="tanh")(x), tanh_form,
                               rtol=1e-15, atol=1e-15)
    fit = approx.fit("chebyshev", "gelu", 6, interval=(-4, 4), approximate="tanh")
    assert dict(fit.function_params) == {"approximate": "tanh"}
    restored = approx.PolynomialFit.from_dict(json.loads(json.dumps(fit.to_dict())))
    assert restored.to_dict() == fit.to_dict()
    exact = approx.fit("chebyshev", "gelu", 6, interval=(-4, 4))
    assert not np.array_equal(fit.coefficients, exact.coefficients)
    with pytest.raises(ValueError):
        approx.make_activation("gelu", approximate="erf")


# ------------------------------------------------------------------------------ distributions


def test_empirical_distribution() -> None:
    rng = np.random.default_rng(0)
    samples = rng.normal(1.0, 2.0, 100_000)
    dist = approx.EmpiricalDistribution.from_samples(samples, bins=512)
    points, weights = dist.points_and_weights()
    assert points.shape == weights.shape == (512,)
    assert weights.sum() == pytest.approx(1.0, abs=1e-12)
    assert (dist.low, dist.high) == (samples.min(), samples.max())
    assert dist.mean == pytest.approx(samples.mean()) and dist.std == pytest.approx(samples.std())
    assert dist.percentile(50) == pytest.approx(np.percentile(samples, 50), abs=0.02)
    assert dist.percentile(99) == pytest.approx(np.percentile(samples, 99), abs=0.03)
    assert dist.percentile(0) == dist.low and dist.percentile(100) == dist.high


# ------------------------------------------------------------------------------ Hermite / DaPa


def test_relu_hermite_coefficients_standard_normal() -> None:
    fit = approx.hermite("relu", 8)
    c = fit.coefficients
    assert fit.basis == "hermite" and c.shape == (9,)
    assert c[0] == pytest.approx(1 / math.sqrt(2 * math.pi), abs=1e-12)
    assert c[1] == pytest.approx(0.5, abs=1e-12)
    assert c[2] == pytest.approx(1 / math.sqrt(4 * math.pi), abs=1e-12)
    np.testing.assert_allclose(c[3::2], 0.0, atol=1e-12)
    assert c[4] == pytest.approx(-0.0814, abs=5e-4)
    # Independent check of c4 = E[relu(z) He_4(z)] / sqrt(4!) by quadrature on z > 0.
    he4 = np.polynomial.hermite_e.HermiteE.basis(4)
    c4 = integrate.quad(
        lambda z: z * he4(z) * math.exp(-z * z / 2) / math.sqrt(2 * math.pi), 0, 40
    )[0] / math.sqrt(24)
    assert c[4] == pytest.approx(c4, abs=1e-10)
    # Residual of the degree-8 truncation: E[relu^2] - sum c_k^2, E[relu(z)^2] = 1/2.
    assert fit.weighted_mse == pytest.approx(0.5 - np.sum(c**2), abs=1e-14)


@pytest.mark.parametrize("degree", [2, 4, 6])
def test_dapa_closed_form_equals_numerical_wls(degree: int) -> None:
    mean, std = 0.3, 1.7
    dapa = approx.gaussian_wls("relu", mean, std, degree)
    numeric = approx.wls("relu", _dense_gaussian(mean, std), degree)
    x = np.linspace(mean - 4 * std, mean + 4 * std, 1001)
    np.testing.assert_allclose(dapa(x), numeric(x), atol=1e-7)
    # The closed-form residual is the true Gaussian MSE, and no fit beats it under N(m, s^2).
    assert dapa.weighted_mse == pytest.approx(_gaussian_mse(dapa, mean, std), rel=1e-7, abs=1e-12)
    assert dapa.weighted_mse <= _gaussian_mse(numeric, mean, std) + 1e-12
    assert numeric.weighted_mse == pytest.approx(dapa.weighted_mse, rel=1e-5)


def test_dapa_matches_wls_on_samples() -> None:
    rng = np.random.default_rng(1)
    samples = rng.normal(0.3, 1.7, 400_000)
    dapa = approx.gaussian_wls("relu", 0.3, 1.7, 4)
    sampled = approx.wls("relu", samples, 4)
    x = np.linspace(0.3 - 2 * 1.7, 0.3 + 2 * 1.7, 201)
    np.testing.assert_allclose(dapa(x), sampled(x), atol=0.02)


@pytest.mark.parametrize(
    "name, params",
    [("leaky_relu", {"alpha": 0.1}), ("abs", {}), ("clip", {"lo": -1.0, "hi": 2.0}), ("relu6", {})],
)
def test_piecewise_linear_closed_forms_match_dense_wls(name: str, params: dict) -> None:
    f = approx.make_activation(name, **params)
    dapa = approx.gaussian_wls(f, 0.5, 1.3, 5)
    numeric = approx.wls(f, _dense_gaussian(0.5, 1.3), 5)
    x = np.linspace(0.5 - 4 * 1.3, 0.5 + 4 * 1.3, 501)
    np.testing.assert_allclose(dapa(x), numeric(x), atol=1e-6)
    assert dapa.weighted_mse == pytest.approx(numeric.weighted_mse, rel=1e-5, abs=1e-12)
    assert dapa.function == name and dict(dapa.function_params) == params


def test_gaussian_quadrature_path_for_smooth_targets() -> None:
    dapa = approx.gaussian_wls("gelu", -0.2, 0.8, 4)
    numeric = approx.wls("gelu", _dense_gaussian(-0.2, 0.8), 4)
    x = np.linspace(-3.4, 3.0, 301)
    np.testing.assert_allclose(dapa(x), numeric(x), atol=1e-7)


def test_hermite_per_channel_and_fold_to_quadratic() -> None:
    rng = np.random.default_rng(2)
    means = np.array([-0.5, 0.0, 0.7, 2.0])
    stds = np.array([0.5, 1.0, 1.5, 0.3])
    fit = approx.hermite("relu", 2, mean=means, std=stds)
    assert fit.coefficients.shape == (4, 3) and fit.channel_intervals.shape == (4, 2)
    for ch in range(4):  # per-channel rows equal the scalar fits
        single = approx.gaussian_wls("relu", means[ch], stds[ch], 2)
        np.testing.assert_allclose(fit.coefficients[ch], single.coefficients, atol=1e-15)
    abc = approx.fold_to_quadratic(fit)
    np.testing.assert_array_equal(abc, fit.fold_quadratic())
    assert abc.shape == (4, 3)
    x = rng.normal(means[:, None], stds[:, None], (4, 1000))
    folded = abc[:, :1] * x**2 + abc[:, 1:2] * x + abc[:, 2:]
    np.testing.assert_allclose(folded, fit(x, channel_axis=0), rtol=1e-12, atol=1e-12)
    # channel axis may be any axis of the input
    np.testing.assert_allclose(fit(x.T, channel_axis=-1), fit(x, channel_axis=0).T)
    with pytest.raises(ValueError):
        fit(x)


# ------------------------------------------------------------------------------ minimax


def test_minimax_abs_approaches_bernstein_constant() -> None:
    products = [approx.minimax("abs", -1, 1, d).max_error * d for d in (16, 32, 64)]
    gaps = [BERNSTEIN - p for p in products]
    assert all(abs(g) < 0.02 * BERNSTEIN for g in gaps)
    assert gaps[0] > gaps[1] > gaps[2] > 0  # monotone from below toward beta


@pytest.mark.parametrize("name, a, b, degree", [("relu", -3, 5, 7), ("sigmoid", -8, 8, 9)])
def test_remez_equioscillation(name: str, a: float, b: float, degree: int) -> None:
    fit = approx.minimax(name, a, b, degree)
    points = fit.reference_points
    assert points.shape == (degree + 2,)
    assert np.all(np.diff(points) > 0) and a <= points[0] and points[-1] <= b
    err = fit(points) - approx.make_activation(name)(points)
    assert np.all(np.sign(err[1:]) == -np.sign(err[:-1]))
    np.testing.assert_allclose(np.abs(err), fit.max_error, rtol=1e-6)
    # Minimax beats Chebyshev interpolation in the uniform norm.
    assert fit.max_error <= approx.chebyshev(name, a, b, degree).max_error


def test_minimax_exact_for_polynomial_target() -> None:
    fit = approx.minimax(lambda x: 1 - 2 * x + 0.5 * x**3, -2, 3, 5)
    assert fit.max_error < 1e-12


# ------------------------------------------------------------------------------ chebyshev


def test_chebyshev_interpolation() -> None:
    target = np.polynomial.Polynomial([0.5, -1.0, 0.0, 2.0, 0.25])
    for degree in (4, 6):
        fit = approx.chebyshev(target, -2, 3, degree)
        assert fit.max_error < 1e-12 and fit.weighted_mse is None
    errors = [approx.chebyshev("sigmoid", -8, 8, d).max_error for d in (3, 7, 11, 15, 19)]
    assert np.all(np.diff(errors) < 0)


# ------------------------------------------------------------------------------ OLA wls


def test_wls_beats_interval_methods_under_skewed_distribution() -> None:
    rng = np.random.default_rng(3)
    samples = np.concatenate([rng.normal(-1.0, 0.4, 80_000), rng.normal(2.5, 1.2, 20_000)])
    dist = approx.EmpiricalDistribution.from_samples(samples, bins=512)
    points, weights = dist.points_and_weights()
    for degree in (2, 4, 6):
        fit = approx.wls("relu", dist, degree)
        for other in (
            approx.chebyshev("relu", dist.low, dist.high, degree),
            approx.minimax("relu", dist.low, dist.high, degree),
        ):
            other_mse = float(np.sum(weights * (other(points) - _relu(points)) ** 2))
            assert fit.weighted_mse < other_mse
    # ridge shrinks the coefficients
    plain, ridged = approx.wls("relu", dist, 6), approx.wls("relu", dist, 6, ridge=1e-2)
    assert np.linalg.norm(ridged.coefficients) < np.linalg.norm(plain.coefficients)


# ------------------------------------------------------------------------------ Flash quad


def test_quad_per_channel_and_exact_recovery() -> None:
    rng = np.random.default_rng(4)
    dists = [
        approx.EmpiricalDistribution.from_samples(rng.normal(m, s, 5000))
        for m, s in [(0, 1), (1, 0.5), (-2, 3)]
    ]
    fit = approx.quad("relu", dists)
    assert fit.coefficients.shape == (3, 3) and fit.basis == "power"
    target = np.polynomial.Polynomial([0.3, -1.2, 0.7])
    exact = approx.quad(target, dists)
    np.testing.assert_allclose(exact.coefficients, np.tile([0.3, -1.2, 0.7], (3, 1)), atol=1e-10)
    assert exact.max_error < 1e-9 and exact.weighted_mse < 1e-20
    samples = rng.normal(0, 1, (3, 2000))  # raw per-channel samples
    assert approx.quad("relu", samples).coefficients.shape == (3, 3)
    flash = approx.quad("relu", dists, flash_form=True)
    np.testing.assert_array_equal(flash.coefficients[:, 2], flash.coefficients[:, 1])
    assert flash.weighted_mse >= fit.weighted_mse  # the restricted form cannot fit better
    # x^2 + x is recovered exactly up to scale and offset by the Flash form
    shaped = approx.quad(lambda x: 2.0 * (x**2 + x) - 1.0, dists[0], flash_form=True)
    np.testing.assert_allclose(shaped.coefficients, [-1.0, 2.0, 2.0], atol=1e-10)


# ------------------------------------------------------------------------------ conversions


@pytest.mark.parametrize(
    "make",
    [
        lambda: approx.minimax("relu", -3, 5, 7),
        lambda: approx.gaussian_wls("gelu", 0.4, 1.2, 5),
        lambda: approx.hermite("relu", 4, mean=np.array([0.1, -0.3]), std=np.array([1.0, 2.0])),
        lambda: approx.quad(
            "relu",
            [approx.EmpiricalDistribution.from_samples(np.random.default_rng(5).normal(0, 1, 1000))]
            * 2,
        ),
    ],
)
def test_basis_conversions_and_serialization_round_trip(make) -> None:
    fit = make()
    x = np.linspace(*fit.interval, 257)
    per_channel = fit.coefficients.ndim == 2
    grid = np.tile(x, (fit.coefficients.shape[0], 1)) if per_channel else x
    reference = fit(grid, channel_axis=0) if per_channel else fit(grid)
    a, b = fit.interval
    cheb = np.atleast_2d(fit.chebyshev_coefficients())
    power = np.atleast_2d(fit.power_coefficients())
    wider = np.atleast_2d(fit.chebyshev_coefficients(a - 1.0, b + 2.0))
    assert cheb.shape[-1] == power.shape[-1] == fit.degree + 1
    t = (2 * x - (a + b)) / (b - a)
    t_wide = (2 * x - (a + b + 1.0)) / (b - a + 3.0)
    scale = np.max(np.abs(reference)) + 1.0
    for ch, ref in enumerate(np.atleast_2d(reference)):
        np.testing.assert_allclose(
            np.polynomial.chebyshev.chebval(t, cheb[ch]), ref, atol=1e-9 * scale
        )
        np.testing.assert_allclose(
            np.polynomial.chebyshev.chebval(t_wide, wider[ch]), ref, atol=1e-9 * scale
        )
        np.testing.assert_allclose(
            np.polynomial.polynomial.polyval(x, power[ch]), ref, atol=1e-9 * scale
        )
    restored = approx.PolynomialFit.from_dict(json.loads(json.dumps(fit.to_dict())))
    assert restored.to_dict() == fit.to_dict()
    np.testing.assert_array_equal(restored.coefficients, fit.coefficients)
    restored_values = restored(grid, channel_axis=0) if per_channel else restored(grid)
    np.testing.assert_array_equal(restored_values, reference)


# ------------------------------------------------------------------------------ dispatcher


def test_fit_dispatcher() -> None:
    dist = approx.EmpiricalDistribution.from_samples(np.random.default_rng(6).normal(0, 1, 4000))
    assert approx.fit("minimax", "relu", 5, interval=(-2, 2)).method == "minimax"
    assert approx.fit("chebyshev", "tanh", 5, distribution=dist).interval == (dist.low, dist.high)
    assert approx.fit("wls", "relu", 4, distribution=dist, ridge=1e-6).method == "wls"
    g = approx.fit("gaussian_wls", "relu", 4, distribution=dist)
    assert (g.mean, g.std) == (dist.mean, dist.std)
    h = approx.fit("hermite", "relu", 2, mean=np.zeros(3), std=np.ones(3))
    assert h.coefficients.shape == (3, 3)
    assert approx.fit("quad", "relu", 2, distribution=dist, flash_form=True).method == "quad"
    clip = approx.fit("chebyshev", "clip", 4, interval=(-3, 3), lo=-1, hi=1)
    assert dict(clip.function_params) == {"lo": -1.0, "hi": 1.0}
    for method, kwargs in [
        ("newton", {"interval": (0, 1)}),  # unknown method
        ("minimax", {}),  # no interval
        ("wls", {}),  # no distribution
        ("gaussian_wls", {"mean": 0.0}),  # no std
        ("quad", {"distribution": dist, "degree": 3}),  # quad is degree 2
        ("minimax", {"interval": (0, 1), "ridge": 0.1}),  # parameter of another method
    ]:
        degree = kwargs.pop("degree", 2)
        with pytest.raises(ValueError):
            approx.fit(method, "relu", degree, **kwargs)
    with pytest.raises(ValueError):
        approx.fit("minimax", "swish", 3, interval=(0, 1))


class LevelCounter:
    """A slot engine whose "ciphertexts" are their levels: counts the depth of what the
    runtime's power-basis product tree (``slot_program.power_series``) really multiplies."""

    def multiply(self, a: int, b: int) -> int:
        return max(a, b) + 1

    def multiply_plain(self, ciphertext: int, vector: np.ndarray, key: tuple) -> int:
        return ciphertext + 1

    def multiply_scalar(self, ciphertext: int, value: float) -> int:
        return ciphertext + 1

    def add(self, a: int, b: int) -> int:
        return max(a, b)

    def add_plain(self, ciphertext: int, vector: np.ndarray, key: tuple) -> int:
        return ciphertext

    def add_scalar(self, ciphertext: int, value: float) -> int:
        return ciphertext


@pytest.mark.parametrize("degree", range(1, 8))
def test_polynomial_depth_is_the_product_tree_depth(degree: int) -> None:
    """With a small bound, degrees 1..7 are evaluated in the power basis: the cost model's
    depth is the level-optimal ceil(log2(d+1)) and the levels the product tree really spends."""
    rng = np.random.default_rng(degree)
    chebyshev = rng.normal(size=degree + 1) + 0.5  # no zero coefficient
    power = basis.chebyshev_to_power(chebyshev, (-2.0, 2.0), snap=True)[0]
    spent = power_series(LevelCounter(), 0, power)
    assert polynomial_depth(degree, bound=2.0) == spent == math.ceil(math.log2(degree + 1))


def test_folded_square_costs_one_level() -> None:
    """s^2 + gamma (a folded square: unit leading coefficient, no linear term) is one squaring."""
    square = basis.power_to_chebyshev([0.7, 0.0, 1.0], (-3.0, 5.0))
    power = basis.chebyshev_to_power(square, (-3.0, 5.0), snap=True)[0]
    np.testing.assert_array_equal(power[1:], [0.0, 1.0])  # round-off snapped to exact 0 and 1
    assert power_series(LevelCounter(), 0, power) == 1
    assert polynomial_depth(2, bound=5.0, folded=True) == 1
    assert polynomial_depth(2, bound=5.0) == 2


# ------------------------------------------------------------------------------ basis


def test_chebyshev_to_power_reproduces_both_former_conversions() -> None:
    """Bit for bit: numpy's convert (padded; the compiler's copies) and, with snap, the
    runtime's snapping of round-off to exactly 0 and 1."""
    rng = np.random.default_rng(7)
    for degree in (0, 1, 2, 3, 5, 7, 13):
        rows = rng.normal(size=(3, degree + 1))
        a, b = sorted(rng.uniform(-6, 6, 2))
        power = basis.chebyshev_to_power(rows, (a, b))
        assert power.shape == rows.shape
        for row, converted in zip(rows, power, strict=True):
            series = np.polynomial.Chebyshev(row, domain=[a, b])
            expected = series.convert(kind=np.polynomial.Polynomial, domain=[-1, 1],
                                      window=[-1, 1]).coef
            padded = np.pad(expected, (0, row.size - expected.size))
            np.testing.assert_array_equal(converted, padded)
            snapped = basis.chebyshev_to_power(row, (a, b), snap=True)
            assert snapped.shape == (1, degree + 1)
            tolerance = basis.SNAP_TOLERANCE * max(float(np.max(np.abs(expected))), 1.0)
            expected = expected.copy()
            expected[np.abs(expected) < tolerance] = 0.0
            expected[np.abs(expected - 1.0) < tolerance] = 1.0
            np.testing.assert_array_equal(snapped[0, :expected.size], expected)
    # a row whose exact power form has a zero leading term keeps the input width
    assert basis.chebyshev_to_power([1.0, 0.0, 0.0], (-1.0, 1.0)).shape == (1, 3)
    # round trip
    rows = rng.normal(size=(2, 4))
    back = basis.power_to_chebyshev(basis.chebyshev_to_power(rows, (-2.0, 3.0)), (-2.0, 3.0))
    np.testing.assert_allclose(back, rows, atol=1e-12)
