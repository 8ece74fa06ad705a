"""What is known about an activation's inputs: measured histograms and Gaussian expectations.

Reads: calibration samples or histograms (edges, counts, moments); Gaussian statistics
(per-channel mean/std) and a target function.
Writes: :class:`EmpiricalDistribution` records, (points, weights) for weighted least squares,
and the L2-optimal normalized-Hermite coefficients of a target under N(mean, std^2)
(:func:`gaussian_expansion`).

Gaussian expectations are exact (closed form through ``phi`` / ``Phi``) for the
piecewise-linear activations ``relu``, ``leaky_relu``, ``abs``, ``relu6`` and ``clip``;
for every other target they use Gauss-HermiteE quadrature with ``QUADRATURE_NODES`` nodes.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
from numpy.polynomial import hermite_e
from scipy import special

from picompile.approx.basis import normalized_hermite
from picompile.approx.targets import Parameter, Target, piecewise_linear

#: Gauss-HermiteE nodes for Gaussian expectations of non piecewise-linear targets.
QUADRATURE_NODES = 200


@dataclass(frozen=True, eq=False)
class EmpiricalDistribution:
    """One layer's (or one channel's) measured input distribution.

    ``edges`` (k+1,) and ``counts`` (k,) form a histogram (counts may be fractional
    weights); ``mean``/``std`` are the sample moments and ``low``/``high`` the observed
    minimum/maximum.
    """

    edges: np.ndarray = field(repr=False)
    counts: np.ndarray = field(repr=False)
    mean: float
    std: float
    low: float
    high: float

    def __post_init__(self) -> None:
        edges = np.array(self.edges, dtype=float)
        counts = np.array(self.counts, dtype=float)
        if edges.ndim != 1 or counts.ndim != 1 or edges.size != counts.size + 1:
            raise ValueError("edges must have shape (k+1,) and counts shape (k,)")
        if np.any(np.diff(edges) <= 0) or np.any(counts < 0) or counts.sum() <= 0:
            raise ValueError("edges must increase and counts be non-negative with positive sum")
        edges.setflags(write=False)
        counts.setflags(write=False)
        object.__setattr__(self, "edges", edges)
        object.__setattr__(self, "counts", counts)
        for name in ("mean", "std", "low", "high"):
            object.__setattr__(self, name, float(getattr(self, name)))
        if not self.low <= self.high:
            raise ValueError("low must not exceed high")

    @classmethod
    def from_samples(cls, samples: np.ndarray, bins: int = 256) -> EmpiricalDistribution:
        """Histogram ``bins`` bins over [min, max] of the (flattened) samples plus moments."""
        x = np.asarray(samples, dtype=float).ravel()
        if x.size == 0 or not np.all(np.isfinite(x)):
            raise ValueError("samples must be non-empty and finite")
        counts, edges = np.histogram(x, bins=bins)
        return cls(edges, counts, float(x.mean()), float(x.std()), float(x.min()), float(x.max()))

    def points_and_weights(self) -> tuple[np.ndarray, np.ndarray]:
        """Bin centres and normalized bin weights (summing to 1)."""
        centres = 0.5 * (self.edges[:-1] + self.edges[1:])
        return centres, self.counts / self.counts.sum()

    def percentile(self, q: float) -> float:
        """The q-th percentile (q in [0, 100]), interpolating linearly inside bins."""
        if not 0.0 <= q <= 100.0:
            raise ValueError(f"q must be in [0, 100], got {q}")
        cdf = np.concatenate(([0.0], np.cumsum(self.counts))) / self.counts.sum()
        value = float(np.interp(q / 100.0, cdf, self.edges))
        return float(np.clip(value, self.low, self.high))


def points_weights(
    distribution: EmpiricalDistribution | np.ndarray,
) -> tuple[np.ndarray, np.ndarray, float, float]:
    """(points, weights summing to 1, low, high) from a histogram or raw samples."""
    if isinstance(distribution, EmpiricalDistribution):
        x, w = distribution.points_and_weights()
        return x, w, distribution.low, distribution.high
    x = np.asarray(distribution, dtype=float).ravel()
    if x.size == 0 or not np.all(np.isfinite(x)):
        raise ValueError("samples must be non-empty and finite")
    return x, np.full(x.size, 1.0 / x.size), float(x.min()), float(x.max())


def standard_normal_pdf(z: np.ndarray) -> np.ndarray:
    """Standard normal density (0 at +-inf)."""
    return np.exp(-0.5 * np.square(z)) / math.sqrt(2.0 * math.pi)


def gaussian_expansion(
    f: Target,
    name: str,
    params: Mapping[str, Parameter],
    mean: np.ndarray,
    std: np.ndarray,
    degree: int,
) -> tuple[np.ndarray, np.ndarray]:
    """Coefficients (C, d+1) in He_k(z)/sqrt(k!) and residual E[(p - f)^2] (C,) for N(m, s^2).

    Piecewise-linear activations use the exact closed form: writing
    f(x) = u_0 + v_0 x + sum_j beta_j relu(x - t_j) and tau_j = (t_j - m)/s,
    E[relu(m + s z - t) He_k(z)] equals s (phi(tau) - tau Phi(-tau)) for k = 0,
    s Phi(-tau) for k = 1 and s phi(tau) He_{k-2}(tau) for k >= 2 (from
    He_k phi = (-1)^k phi^(k), which gives int_tau^inf He_k phi = He_{k-1}(tau) phi(tau), and
    z He_k = He_{k+1} + k He_{k-1}).  E[f^2] is summed exactly over the linear pieces from the
    truncated Gaussian moments, and the residual is E[f^2] - sum c_k^2 (Parseval).  Other
    targets use Gauss-HermiteE quadrature with QUADRATURE_NODES nodes, the residual being
    the quadrature of (p - f)^2.
    """
    pieces = piecewise_linear(name, params)
    if pieces is None:
        nodes, weights = hermite_e.hermegauss(QUADRATURE_NODES)
        weights = weights / weights.sum()
        basis = normalized_hermite(nodes, degree)  # (n, d+1)
        values = f(mean[:, None] + std[:, None] * nodes[None, :])  # (C, n)
        coef = (values * weights) @ basis
        residual = ((coef @ basis.T - values) ** 2) @ weights
        return coef, residual
    knots, u, v = pieces
    m, s = mean[:, None], std[:, None]
    coef = np.zeros((mean.size, degree + 1))
    coef[:, 0] = u[0] + v[0] * mean
    if degree >= 1:
        coef[:, 1] = v[0] * std
    beta = np.diff(v)  # (m,)
    tau = (knots[None, :] - m) / s  # (C, m)
    pdf, upper = standard_normal_pdf(tau), special.ndtr(-tau)
    coef[:, 0] += np.sum(beta * std[:, None] * (pdf - tau * upper), axis=1)
    if degree >= 1:
        coef[:, 1] += np.sum(beta * std[:, None] * upper, axis=1)
    if degree >= 2:
        h = normalized_hermite(tau, degree - 2)  # (C, m, d-1)
        k = np.arange(2, degree + 1, dtype=float)
        scale = 1.0 / np.sqrt(k * (k - 1.0))  # He_{k-2}/sqrt(k!) = h_{k-2}/sqrt(k(k-1))
        coef[:, 2:] += np.einsum("cm,cmk->ck", beta * std[:, None] * pdf, h) * scale
    # E[f^2] over the linear pieces (t_{i-1}, t_i) with truncated moments of z.
    alpha = np.concatenate([np.full((mean.size, 1), -np.inf), tau], axis=1)
    omega = np.concatenate([tau, np.full((mean.size, 1), np.inf)], axis=1)
    pa, pb = standard_normal_pdf(alpha), standard_normal_pdf(omega)
    z0 = special.ndtr(omega) - special.ndtr(alpha)
    z1 = pa - pb
    z2 = (
        z0
        + np.where(np.isfinite(alpha), alpha, 0.0) * pa
        - np.where(np.isfinite(omega), omega, 0.0) * pb
    )
    x1 = m * z0 + s * z1
    x2 = m**2 * z0 + 2.0 * m * s * z1 + s**2 * z2
    second = np.sum(u**2 * z0 + 2.0 * u * v * x1 + v**2 * x2, axis=1)
    residual = np.maximum(second - np.sum(coef**2, axis=1), 0.0)
    return coef, residual
