"""Distribution-aware methods: fit an activation under what calibration measured.

Reads: a target (activation name or callable), a degree, and the inputs' distribution: a
histogram or raw samples (:class:`EmpiricalDistribution`), or Gaussian statistics (mean/std,
scalars or one per channel).
Writes: :class:`PolynomialFit` records with ``weighted_mse`` under the distribution used and
``max_error`` measured on a dense grid of each channel's range.

Methods
    ``wls``
        OLA: weighted least squares under each layer's measured input distribution, solved in
        the Chebyshev basis.
    ``gaussian_wls``
        AutoReP's DaPa (distribution-aware polynomial approximation): the least-squares
        polynomial under ``x ~ N(mean, std^2)``, in closed form in the orthonormal Hermite
        basis ``He_k(z) / sqrt(k!)``, ``z = (x - mean) / std``.
    ``hermite``
        AESPA: the Hermite expansion of ReLU truncated at a degree, with basis-wise
        normalization from per-channel calibration statistics (per-channel mean/std).
    ``quad``
        Flash: a per-channel quadratic ``a*x^2 + b*x + c`` fitted by weighted least squares
        under each channel's distribution, optionally restricted to Flash's ``x^2 + x`` shape.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
from numpy.polynomial import chebyshev as cheb

from picompile.approx.distributions import (
    EmpiricalDistribution,
    gaussian_expansion,
    points_weights,
)
from picompile.approx.polynomial_fit import (
    PolynomialFit,
    chebyshev_fit,
    check_degree,
    check_interval,
    with_measured_error,
)
from picompile.approx.targets import Target, resolve

#: Ranges used for max_error of Gaussian fits: mean +- GAUSS_RANGE * std.
GAUSS_RANGE = 4.0


def wls(
    function: str | Target,
    distribution: EmpiricalDistribution | np.ndarray,
    degree: int,
    *,
    interval: tuple[float, float] | None = None,
    ridge: float = 0.0,
) -> PolynomialFit:
    """OLA: weighted least squares under a measured input distribution.

    Minimizes ``sum_i w_i (p(x_i) - f(x_i))^2 + ridge * |c|^2`` over Chebyshev coefficients
    ``c`` on ``interval`` (default [low, high] of the distribution), with (x_i, w_i) the
    histogram bin centres and weights, or raw samples with equal weights.  All points are
    used, also those outside an explicitly narrower interval.  ``weighted_mse`` is measured
    under the same weights.
    """
    f, name, params = resolve(function)
    degree = check_degree(degree)
    if ridge < 0:
        raise ValueError("ridge must be >= 0")
    x, w, low, high = points_weights(distribution)
    a, b = check_interval(*(interval if interval is not None else (low, high)))
    y = f(x)
    vander = cheb.chebvander((2.0 * x - (a + b)) / (b - a), degree)
    root = np.sqrt(w)
    lhs, rhs = vander * root[:, None], y * root
    if ridge > 0:
        lhs = np.vstack([lhs, math.sqrt(ridge) * np.eye(degree + 1)])
        rhs = np.concatenate([rhs, np.zeros(degree + 1)])
    coef = np.linalg.lstsq(lhs, rhs, rcond=None)[0]
    mse = float(np.sum(w * (vander @ coef - y) ** 2))
    return chebyshev_fit(f, name, params, "wls", coef, (a, b), weighted_mse=mse)


def gaussian_fit(
    function: str | Target,
    mean: float | np.ndarray,
    std: float | np.ndarray,
    degree: int,
    method: str,
) -> PolynomialFit:
    """The L2-optimal fit under N(mean, std^2) in the normalized Hermite basis, recorded as
    ``method`` (``gaussian_wls`` or ``hermite``); per-channel when mean/std are arrays."""
    f, name, params = resolve(function)
    degree = check_degree(degree)
    per_channel = np.ndim(mean) > 0 or np.ndim(std) > 0
    m_arr, s_arr = (np.atleast_1d(np.asarray(v, dtype=float)) for v in (mean, std))
    m_arr, s_arr = np.broadcast_arrays(m_arr, s_arr)
    if m_arr.ndim != 1:
        raise ValueError("mean/std must be scalars or 1-d per-channel arrays")
    if not (np.all(np.isfinite(m_arr)) and np.all(np.isfinite(s_arr)) and np.all(s_arr > 0)):
        raise ValueError("mean must be finite and std finite and positive")
    coef, residual = gaussian_expansion(f, name, params, m_arr, s_arr, degree)
    ranges = np.column_stack([m_arr - GAUSS_RANGE * s_arr, m_arr + GAUSS_RANGE * s_arr])
    record = PolynomialFit(
        function=name,
        function_params=params,
        method=method,
        degree=degree,
        basis="hermite",
        coefficients=coef if per_channel else coef[0],
        interval=(float(ranges[:, 0].min()), float(ranges[:, 1].max())),
        mean=m_arr.copy() if per_channel else float(m_arr[0]),
        std=s_arr.copy() if per_channel else float(s_arr[0]),
        weighted_mse=float(residual.mean()),
        channel_intervals=ranges if per_channel else None,
    )
    return with_measured_error(record, f, ranges)


def gaussian_wls(
    function: str | Target,
    mean: float,
    std: float,
    degree: int,
) -> PolynomialFit:
    """AutoReP DaPa: the polynomial minimizing E[(p(x) - f(x))^2] for x ~ N(mean, std^2).

    In the orthonormal basis He_k(z)/sqrt(k!), z = (x - mean)/std, the optimum is
    ``c_k = E[f(mean + std z) He_k(z)] / sqrt(k!)``.  Exact closed form (phi, Phi) for
    relu / leaky_relu / abs / relu6 / clip, Gauss-HermiteE quadrature (200 nodes) otherwise;
    ``weighted_mse`` is the exact residual E[f^2] - sum c_k^2 for the former and the
    quadrature residual for the latter.  ``max_error`` is measured on mean +- 4 std.
    Per-channel mean/std arrays are accepted too.
    """
    return gaussian_fit(function, mean, std, degree, "gaussian_wls")


def hermite(
    function: str | Target,
    degree: int,
    *,
    mean: float | np.ndarray = 0.0,
    std: float | np.ndarray = 1.0,
) -> PolynomialFit:
    """AESPA: Hermite expansion of the activation (ReLU) truncated at ``degree``.

    The expansion is in the probabilists' Hermite basis He_k(z)/sqrt(k!), with basis-wise
    normalization from calibration statistics: z = (x - mean)/std per channel, so each basis
    output has zero mean and unit variance under the channel's (Gaussian-modelled)
    distribution.  mean/std arrays give per-channel coefficients (channels, degree+1).  At
    mean 0, std 1 ReLU's coefficients are 1/sqrt(2 pi), 1/2, 1/sqrt(4 pi), 0,
    -1/(sqrt(2 pi) sqrt(24)), 0, ... (AESPA's fixed expansion); with statistics they are the
    exact L2-optimal coefficients of relu(x), x ~ N(mean, std^2).  Use
    :func:`fold_to_quadratic` / :meth:`PolynomialFit.fold_quadratic` at degree 2 to get
    a*x^2 + b*x + c in x.
    """
    return gaussian_fit(function, mean, std, degree, "hermite")


def quad(
    function: str | Target,
    distribution: EmpiricalDistribution | Sequence[EmpiricalDistribution] | np.ndarray,
    *,
    flash_form: bool = False,
) -> PolynomialFit:
    """Flash: per-channel quadratic ``c0 + c1 x + c2 x^2`` by weighted least squares.

    ``distribution``: one EmpiricalDistribution or 1-d samples (a single quadratic,
    coefficients (3,)), or a sequence of EmpiricalDistribution / a 2-d array
    (channels, samples) (coefficients (channels, 3)).  Basis "power", order c0, c1, c2.
    ``flash_form=True`` restricts to Flash's shape: fits ``y ~ alpha (x^2 + x) + beta``
    (stored as c0 = beta, c1 = c2 = alpha).  ``max_error`` is measured on each channel's
    [low, high]; ``weighted_mse`` is the mean over channels of the weighted MSE.
    """
    f, name, params = resolve(function)
    if isinstance(distribution, EmpiricalDistribution):
        dists: list[Any] = [distribution]
        per_channel = False
    elif isinstance(distribution, np.ndarray) and distribution.ndim <= 1:
        dists, per_channel = [distribution], False
    elif isinstance(distribution, np.ndarray):
        if distribution.ndim != 2:
            raise ValueError("sample arrays must be 1-d or (channels, samples)")
        dists, per_channel = list(distribution), True
    else:
        dists, per_channel = list(distribution), True
        if not dists:
            raise ValueError("empty sequence of distributions")
    coefs, mses, ranges = [], [], []
    for dist in dists:
        x, w, low, high = points_weights(dist)
        y = f(x)
        if flash_form:
            design = np.column_stack([np.ones_like(x), x * x + x])
        else:
            design = np.column_stack([np.ones_like(x), x, x * x])
        root = np.sqrt(w)
        norms = np.linalg.norm(design * root[:, None], axis=0)
        norms = np.where(norms > 0, norms, 1.0)
        sol = np.linalg.lstsq(design * (root[:, None] / norms), y * root, rcond=None)[0] / norms
        c = np.array([sol[0], sol[1], sol[1]]) if flash_form else sol
        coefs.append(c)
        mses.append(float(np.sum(w * (design @ sol - y) ** 2)))
        ranges.append((low, high) if high > low else (low - 0.5, high + 0.5))
    ranges_arr = np.array(ranges)
    record = PolynomialFit(
        function=name,
        function_params=params,
        method="quad",
        degree=2,
        basis="power",
        coefficients=np.array(coefs) if per_channel else coefs[0],
        interval=(float(ranges_arr[:, 0].min()), float(ranges_arr[:, 1].max())),
        weighted_mse=float(np.mean(mses)),
        channel_intervals=ranges_arr if per_channel else None,
    )
    return with_measured_error(record, f, ranges_arr)
