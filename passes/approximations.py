"""Polynomial approximations of nonlinear activations for CKKS / HE+MPC inference.

This module is the approximation library used by the compiler passes that replace
nonlinear activations (ReLU, GELU, ...) with polynomials, per layer and per channel.

Reads
    * a target function: a name from :data:`ACTIVATIONS` (``"relu"``, ``"gelu"``, ...) or a
      callable, e.g. ``make_activation("clip", lo=0, hi=6)``;
    * what is known about the function's inputs: an interval ``[a, b]``, a measured
      :class:`EmpiricalDistribution` (histogram + moments from calibration data) or raw
      calibration samples, or Gaussian statistics ``mean`` / ``std`` (scalars, or one per
      channel).

Writes
    :class:`PolynomialFit` records: the polynomial (its basis and coefficients, one row per
    channel for per-channel fits), the range it is meant for, and *measured* quality figures
    (``max_error`` on a dense grid, ``weighted_mse`` under the distribution used).  A fit can
    be re-expressed as Chebyshev coefficients on any interval
    (:meth:`PolynomialFit.chebyshev_coefficients`, what CKKS ``EvalChebyshevSeries``
    consumes) or as power-basis coefficients (:meth:`PolynomialFit.power_coefficients`).

Methods
    ``minimax``
        Best uniform approximation on ``[a, b]`` by the Remez exchange algorithm (the
        classical baseline of HE activation approximation).
    ``chebyshev``
        Interpolation at Chebyshev points of the first kind (near-minimax, cheap).
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

Gaussian expectations are exact (closed form through ``phi`` / ``Phi``) for the
piecewise-linear activations ``relu``, ``leaky_relu``, ``abs``, ``relu6`` and ``clip``;
for every other target they use Gauss-HermiteE quadrature with 200 nodes.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import math
import types
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.polynomial import Chebyshev, HermiteE, Polynomial
from numpy.polynomial import chebyshev as _cheb
from numpy.polynomial import hermite_e as _herme
from scipy import special as _special

__all__ = [
    "ACTIVATIONS",
    "EmpiricalDistribution",
    "PolynomialFit",
    "chebyshev",
    "fit",
    "fold_to_quadratic",
    "gaussian_wls",
    "hermite",
    "make_activation",
    "minimax",
    "multiplicative_depth",
    "quad",
    "wls",
]

# Number of points of the dense grid used to measure max_error (uniform + Chebyshev spaced).
_ERROR_GRID_POINTS = 4097
# Gauss-HermiteE nodes for Gaussian expectations of non piecewise-linear targets.
_QUADRATURE_NODES = 200
# Ranges used for max_error of Gaussian fits: mean +- _GAUSS_RANGE * std.
_GAUSS_RANGE = 4.0

# --------------------------------------------------------------------------------------------
# Activations
# --------------------------------------------------------------------------------------------


def _relu(x: np.ndarray) -> np.ndarray:
    """max(x, 0)."""
    return np.maximum(np.asarray(x, dtype=float), 0.0)


def _clip(x: np.ndarray, *, lo: float, hi: float) -> np.ndarray:
    """min(max(x, lo), hi); ``lo`` and ``hi`` are required."""
    if not lo < hi:
        raise ValueError(f"clip needs lo < hi, got lo={lo}, hi={hi}")
    return np.clip(np.asarray(x, dtype=float), lo, hi)


def _relu6(x: np.ndarray) -> np.ndarray:
    """min(max(x, 0), 6)."""
    return np.clip(np.asarray(x, dtype=float), 0.0, 6.0)


def _leaky_relu(x: np.ndarray, *, alpha: float = 0.01) -> np.ndarray:
    """x for x >= 0, alpha * x otherwise."""
    x = np.asarray(x, dtype=float)
    return np.where(x >= 0.0, x, alpha * x)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    """1 / (1 + exp(-x)), computed without overflow."""
    return _special.expit(np.asarray(x, dtype=float))


def _tanh(x: np.ndarray) -> np.ndarray:
    """Hyperbolic tangent."""
    return np.tanh(np.asarray(x, dtype=float))


def _gelu(x: np.ndarray) -> np.ndarray:
    """Exact GELU: x * Phi(x) = x/2 * (1 + erf(x / sqrt(2)))."""
    x = np.asarray(x, dtype=float)
    return 0.5 * x * (1.0 + _special.erf(x / math.sqrt(2.0)))


def _abs(x: np.ndarray) -> np.ndarray:
    """|x|."""
    return np.abs(np.asarray(x, dtype=float))


ACTIVATIONS: Mapping[str, Callable[..., np.ndarray]] = types.MappingProxyType(
    {
        "relu": _relu,
        "relu6": _relu6,
        "clip": _clip,
        "leaky_relu": _leaky_relu,
        "sigmoid": _sigmoid,
        "tanh": _tanh,
        "gelu": _gelu,
        "abs": _abs,
    }
)
"""Known activations by name (read-only).  ``clip`` needs ``lo``/``hi``: use make_activation."""


def make_activation(name: str, **params: float) -> Callable[[np.ndarray], np.ndarray]:
    """Return the activation ``name`` with its parameters bound (a ``functools.partial``).

    Examples: ``make_activation("clip", lo=0, hi=6)``, ``make_activation("leaky_relu",
    alpha=0.1)``.  Raises ``ValueError`` for an unknown name, an unknown parameter or a missing
    required parameter.
    """
    if name not in ACTIVATIONS:
        raise ValueError(f"unknown activation {name!r}; known: {', '.join(sorted(ACTIVATIONS))}")
    func = ACTIVATIONS[name]
    try:
        inspect.signature(func).bind(np.zeros(1), **params)
    except TypeError as exc:
        raise ValueError(f"bad parameters {params} for activation {name!r}: {exc}") from exc
    if name == "clip" and not params["lo"] < params["hi"]:
        raise ValueError(f"clip needs lo < hi, got {params}")
    return functools.partial(func, **{k: float(v) for k, v in params.items()})


def _resolve(
    function: str | Callable[[np.ndarray], np.ndarray],
) -> tuple[Callable[[np.ndarray], np.ndarray], str, dict[str, float]]:
    """Return (callable, name, params) for a name or a callable."""
    if isinstance(function, str):
        return make_activation(function), function, {}
    if not callable(function):
        raise ValueError(f"function must be an activation name or a callable, got {function!r}")
    if isinstance(function, functools.partial) and not function.args:
        for name, func in ACTIVATIONS.items():
            if function.func is func:
                return function, name, dict(function.keywords)
    for name, func in ACTIVATIONS.items():
        if function is func:
            return function, name, {}
    return function, getattr(function, "__name__", "custom"), {}


def _piecewise_linear(
    name: str, params: Mapping[str, float]
) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """Knots t (m,), intercepts u (m+1,) and slopes v (m+1,) of a piecewise-linear activation.

    Piece i covers (t[i-1], t[i]) with t[-1] = -inf and t[m] = +inf; returns None when the
    activation is not piecewise linear.
    """
    if name == "relu":
        return np.array([0.0]), np.zeros(2), np.array([0.0, 1.0])
    if name == "leaky_relu":
        return np.array([0.0]), np.zeros(2), np.array([params.get("alpha", 0.01), 1.0])
    if name == "abs":
        return np.array([0.0]), np.zeros(2), np.array([-1.0, 1.0])
    if name in ("relu6", "clip"):
        lo, hi = (0.0, 6.0) if name == "relu6" else (params["lo"], params["hi"])
        return np.array([lo, hi]), np.array([lo, 0.0, hi]), np.array([0.0, 1.0, 0.0])
    return None


# --------------------------------------------------------------------------------------------
# Records
# --------------------------------------------------------------------------------------------


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


@dataclass(frozen=True, eq=False, kw_only=True)
class PolynomialFit:
    """A polynomial replacing an activation, with its measured quality.

    Bases:
        ``"chebyshev"``: coefficients of ``T_k(t)``, ``t = (2x - a - b) / (b - a)`` with
        ``[a, b] = interval``;
        ``"hermite"``: coefficients of ``He_k(z) / sqrt(k!)``, ``z = (x - mean) / std``
        (``mean``/``std`` may be per channel);
        ``"power"``: coefficients of ``x^k`` (used for degree <= 2 only).

    ``coefficients`` has shape (degree+1,) or, per channel, (channels, degree+1).
    ``interval`` is the fit range (for Gaussian fits the range used for ``max_error``); for
    per-channel fits each channel has its own range in ``channel_intervals`` (channels, 2) and
    ``interval`` is their hull.  ``max_error`` is max |p(x) - f(x)| on a dense grid
    (>= 2049 points) of the range (max over channels); ``weighted_mse`` is E[(p - f)^2] under
    the distribution used (mean over channels; None when no distribution was used).
    ``reference_points`` are the final alternation points of a minimax fit.
    """

    function: str
    method: str
    degree: int
    basis: str
    coefficients: np.ndarray
    interval: tuple[float, float]
    mean: float | np.ndarray = 0.0
    std: float | np.ndarray = 1.0
    max_error: float
    weighted_mse: float | None
    reference_points: np.ndarray | None = None
    channel_intervals: np.ndarray | None = None
    function_params: Mapping[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.basis not in ("chebyshev", "hermite", "power"):
            raise ValueError(f"unknown basis {self.basis!r}")
        coef = np.array(self.coefficients, dtype=float)
        if coef.ndim not in (1, 2) or coef.shape[-1] != self.degree + 1:
            raise ValueError(f"coefficients must have shape (..., {self.degree + 1})")
        coef.setflags(write=False)
        object.__setattr__(self, "coefficients", coef)
        object.__setattr__(self, "degree", int(self.degree))
        a, b = (float(v) for v in self.interval)
        if not a < b:
            raise ValueError(f"interval must satisfy a < b, got {self.interval}")
        object.__setattr__(self, "interval", (a, b))
        for name in ("mean", "std"):
            value = getattr(self, name)
            if np.ndim(value) == 0:
                object.__setattr__(self, name, float(value))
            else:
                arr = np.array(value, dtype=float)
                if coef.ndim != 2 or arr.shape != (coef.shape[0],):
                    raise ValueError(f"per-channel {name} needs per-channel coefficients")
                arr.setflags(write=False)
                object.__setattr__(self, name, arr)
        for name in ("reference_points", "channel_intervals"):
            value = getattr(self, name)
            if value is not None:
                arr = np.array(value, dtype=float)
                arr.setflags(write=False)
                object.__setattr__(self, name, arr)
        object.__setattr__(self, "max_error", float(self.max_error))
        if self.weighted_mse is not None:
            object.__setattr__(self, "weighted_mse", float(self.weighted_mse))
        params = {k: float(v) for k, v in dict(self.function_params).items()}
        object.__setattr__(self, "function_params", types.MappingProxyType(params))

    @property
    def channels(self) -> int | None:
        """Number of channels of a per-channel fit, None for a single polynomial."""
        return self.coefficients.shape[0] if self.coefficients.ndim == 2 else None

    def _channel_rows(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Coefficients (C, d+1), means (C,), stds (C,) with C = 1 for a single polynomial."""
        coef = np.atleast_2d(self.coefficients)
        n = coef.shape[0]
        return coef, np.broadcast_to(self.mean, (n,)), np.broadcast_to(self.std, (n,))

    def __call__(self, x: np.ndarray, channel_axis: int | None = None) -> np.ndarray:
        """Evaluate the polynomial at ``x`` (vectorized).

        For per-channel coefficients, ``channel_axis`` names the axis of ``x`` that indexes
        channels; coefficients (and per-channel mean/std) broadcast along it.
        """
        x = np.asarray(x, dtype=float)
        coef = self.coefficients
        mean: float | np.ndarray = self.mean
        std: float | np.ndarray = self.std
        if coef.ndim == 2:
            if channel_axis is None:
                raise ValueError("per-channel fit: pass channel_axis")
            if not -x.ndim <= channel_axis < x.ndim:
                raise ValueError(f"channel_axis {channel_axis} out of range for {x.ndim}-d input")
            axis = channel_axis % x.ndim
            if x.shape[axis] != coef.shape[0]:
                raise ValueError(f"x has {x.shape[axis]} channels, fit has {coef.shape[0]}")
            shape = [1] * x.ndim
            shape[axis] = coef.shape[0]
            terms = [coef[:, k].reshape(shape) for k in range(self.degree + 1)]
            if np.ndim(mean):
                mean = np.reshape(mean, shape)
            if np.ndim(std):
                std = np.reshape(std, shape)
        else:
            terms = [coef[k] for k in range(self.degree + 1)]
        if self.basis == "chebyshev":
            a, b = self.interval
            return _clenshaw(terms, (2.0 * x - (a + b)) / (b - a))
        if self.basis == "hermite":
            return _hermite_series(terms, (x - mean) / std)
        result = np.zeros_like(x) + terms[-1]
        for c in reversed(terms[:-1]):
            result = result * x + c
        return result

    def _series(self, row: int) -> Chebyshev | HermiteE | Polynomial:
        """numpy.polynomial object for one channel row (acting on x)."""
        coef, mean, std = self._channel_rows()
        c = coef[row]
        if self.basis == "chebyshev":
            return Chebyshev(c, domain=list(self.interval))
        if self.basis == "hermite":
            scale = 1.0 / np.sqrt(_factorials(self.degree))
            m, s = float(mean[row]), float(std[row])
            return HermiteE(c * scale, domain=[m - s, m + s])
        return Polynomial(c)

    def _reshape_rows(self, rows: list[np.ndarray]) -> np.ndarray:
        out = np.array([np.pad(r, (0, self.degree + 1 - r.size)) for r in rows])
        return out if self.coefficients.ndim == 2 else out[0]

    def chebyshev_coefficients(self, a: float | None = None, b: float | None = None) -> np.ndarray:
        """The same polynomial as Chebyshev coefficients on [a, b] (default: ``interval``).

        This is what CKKS ``EvalChebyshevSeries(x, coefficients, a, b)`` consumes.  Shape
        (degree+1,) or (channels, degree+1).
        """
        lo = self.interval[0] if a is None else float(a)
        hi = self.interval[1] if b is None else float(b)
        if not lo < hi:
            raise ValueError("need a < b")
        if self.basis == "chebyshev" and (lo, hi) == self.interval:
            return np.array(self.coefficients)
        rows = [
            self._series(i).convert(domain=[lo, hi], kind=Chebyshev, window=[-1, 1]).coef
            for i in range(np.atleast_2d(self.coefficients).shape[0])
        ]
        return self._reshape_rows(rows)

    def power_coefficients(self) -> np.ndarray:
        """Power-basis coefficients c0..cd in x; shape (d+1,) or (channels, d+1).

        Ill-conditioned for degree > 3 (large cancelling coefficients): evaluate those through
        the Chebyshev or Hermite form instead.
        """
        if self.basis == "power":
            return np.array(self.coefficients)
        rows = [
            self._series(i).convert(kind=Polynomial).coef
            for i in range(np.atleast_2d(self.coefficients).shape[0])
        ]
        return self._reshape_rows(rows)

    def fold_quadratic(self) -> np.ndarray:
        """Per-channel (a, b, c) of ``a*x^2 + b*x + c`` in the original x; see fold_to_quadratic."""
        return fold_to_quadratic(self)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able dict (numbers and lists) that :meth:`from_dict` turns back exactly."""

        def plain(value: Any) -> Any:
            return value.tolist() if isinstance(value, np.ndarray) else value

        return {
            "function": self.function,
            "function_params": dict(self.function_params),
            "method": self.method,
            "degree": self.degree,
            "basis": self.basis,
            "coefficients": self.coefficients.tolist(),
            "interval": list(self.interval),
            "mean": plain(self.mean),
            "std": plain(self.std),
            "max_error": self.max_error,
            "weighted_mse": self.weighted_mse,
            "reference_points": plain(self.reference_points),
            "channel_intervals": plain(self.channel_intervals),
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> PolynomialFit:
        """Inverse of :meth:`to_dict`."""

        def arr(value: Any) -> Any:
            return None if value is None else np.asarray(value, dtype=float)

        def stat(value: Any) -> float | np.ndarray:
            return np.asarray(value, dtype=float) if isinstance(value, list) else float(value)

        return cls(
            function=d["function"],
            function_params=d.get("function_params", {}),
            method=d["method"],
            degree=int(d["degree"]),
            basis=d["basis"],
            coefficients=np.asarray(d["coefficients"], dtype=float),
            interval=(float(d["interval"][0]), float(d["interval"][1])),
            mean=stat(d.get("mean", 0.0)),
            std=stat(d.get("std", 1.0)),
            max_error=float(d["max_error"]),
            weighted_mse=None if d["weighted_mse"] is None else float(d["weighted_mse"]),
            reference_points=arr(d.get("reference_points")),
            channel_intervals=arr(d.get("channel_intervals")),
        )


def fold_to_quadratic(fit: PolynomialFit) -> np.ndarray:
    """Fold a degree <= 2 fit (e.g. AESPA ``hermite`` degree 2) into ``a*x^2 + b*x + c``.

    Returns an array (channels, 3) whose columns are **(a, b, c)** — highest power first, in
    the original input x (not the standardized z); a single polynomial gives (1, 3).
    """
    if fit.degree > 2:
        raise ValueError(f"fold_to_quadratic needs degree <= 2, got {fit.degree}")
    power = np.atleast_2d(fit.power_coefficients())
    power = np.pad(power, ((0, 0), (0, 3 - power.shape[1])))
    return power[:, ::-1].copy()


# --------------------------------------------------------------------------------------------
# Numerical helpers
# --------------------------------------------------------------------------------------------


def _factorials(degree: int) -> np.ndarray:
    """k! for k = 0..degree as floats."""
    return np.concatenate(([1.0], np.cumprod(np.arange(1, degree + 1, dtype=float))))


def _clenshaw(terms: Sequence[Any], t: np.ndarray) -> np.ndarray:
    """sum_k terms[k] T_k(t) by Clenshaw's recurrence (terms broadcast against t)."""
    b1 = np.zeros_like(t)
    b2 = np.zeros_like(t)
    for c in reversed(terms[1:]):
        b1, b2 = 2.0 * t * b1 - b2 + c, b1
    return t * b1 - b2 + terms[0]


def _hermite_series(terms: Sequence[Any], z: np.ndarray) -> np.ndarray:
    """sum_k terms[k] He_k(z)/sqrt(k!) with the normalized three-term recurrence."""
    h_prev = np.ones_like(z)
    result = terms[0] * h_prev
    if len(terms) == 1:
        return result + np.zeros_like(z)
    h = z.copy()
    result = result + terms[1] * h
    for k in range(2, len(terms)):
        h, h_prev = (z * h - math.sqrt(k - 1) * h_prev) / math.sqrt(k), h
        result = result + terms[k] * h
    return result


def _normalized_hermite(z: np.ndarray, degree: int) -> np.ndarray:
    """He_k(z)/sqrt(k!) for k = 0..degree, stacked on a new last axis."""
    z = np.asarray(z, dtype=float)
    out = np.empty(z.shape + (degree + 1,))
    out[..., 0] = 1.0
    if degree >= 1:
        out[..., 1] = z
    for k in range(2, degree + 1):
        out[..., k] = (z * out[..., k - 1] - math.sqrt(k - 1) * out[..., k - 2]) / math.sqrt(k)
    return out


def _dense_grid(a: float, b: float, n: int = _ERROR_GRID_POINTS) -> np.ndarray:
    """Uniform and Chebyshev-spaced points of [a, b] (both ends included), sorted."""
    t = np.union1d(np.linspace(-1.0, 1.0, n), -np.cos(np.linspace(0.0, np.pi, n)))
    return a + (t + 1.0) * (0.5 * (b - a))


def _max_error(
    fit_: PolynomialFit, f: Callable[[np.ndarray], np.ndarray], ranges: np.ndarray
) -> float:
    """max |p - f| on dense grids of ranges (C, 2) (one row per channel, or one row)."""
    grid = np.stack([_dense_grid(lo, hi) for lo, hi in ranges])
    if fit_.coefficients.ndim == 2:
        values = fit_(grid, channel_axis=0)
    else:
        values = fit_(grid)
    return float(np.max(np.abs(values - f(grid))))


def _check_degree(degree: int) -> int:
    if int(degree) != degree or degree < 0:
        raise ValueError(f"degree must be a non-negative integer, got {degree}")
    return int(degree)


def _check_interval(a: float, b: float) -> tuple[float, float]:
    a, b = float(a), float(b)
    if not (np.isfinite(a) and np.isfinite(b) and a < b):
        raise ValueError(f"need finite a < b, got [{a}, {b}]")
    return a, b


# --------------------------------------------------------------------------------------------
# Interval methods: minimax (Remez) and Chebyshev interpolation
# --------------------------------------------------------------------------------------------


def _golden_max(
    g: Callable[[np.ndarray], np.ndarray], lo: np.ndarray, hi: np.ndarray, iterations: int = 48
) -> np.ndarray:
    """Vectorized golden-section search for maxima of g on brackets [lo, hi]."""
    ratio = (math.sqrt(5.0) - 1.0) / 2.0
    for _ in range(iterations):
        x1 = hi - ratio * (hi - lo)
        x2 = lo + ratio * (hi - lo)
        left = g(x1) >= g(x2)
        hi = np.where(left, x2, hi)
        lo = np.where(left, lo, x1)
    return 0.5 * (lo + hi)


def _alternating_extrema(
    err: Callable[[np.ndarray], np.ndarray], grid: np.ndarray, npoints: int
) -> tuple[np.ndarray, np.ndarray, float] | None:
    """Choose ``npoints`` consecutive alternating-sign extrema of err (Remez exchange).

    Splits the grid into runs of constant error sign, takes the largest |err| of each run,
    refines it by golden-section search between the neighbouring grid points and keeps the
    window of ``npoints`` consecutive extrema that contains the global maximum and has the
    largest minimum |err|.  Returns (points, errors, max |err|) or None if too few extrema.
    """
    e = err(grid)
    sign = np.where(e >= 0.0, 1.0, -1.0)
    starts = np.concatenate(([0], np.flatnonzero(sign[1:] != sign[:-1]) + 1))
    seg_max = np.maximum.reduceat(np.abs(e), starts)
    seg_id = np.repeat(np.arange(starts.size), np.diff(np.append(starts, grid.size)))
    hits = np.flatnonzero(np.abs(e) == seg_max[seg_id])
    _, first = np.unique(seg_id[hits], return_index=True)
    idx = hits[first]
    s = sign[idx]
    lo = grid[np.maximum(idx - 1, 0)]
    hi = grid[np.minimum(idx + 1, grid.size - 1)]
    refined = _golden_max(lambda t: s * err(t), lo, hi)
    better = s * err(refined) > s * e[idx]
    points = np.where(better, refined, grid[idx])
    values = err(points)
    if points.size < npoints:
        return None
    mags = np.abs(values)
    top = int(np.argmax(mags))
    first_start = max(0, top - npoints + 1)
    last_start = min(top, points.size - npoints)
    window_min = [mags[k : k + npoints].min() for k in range(first_start, last_start + 1)]
    k = first_start + int(np.argmax(window_min))
    return points[k : k + npoints], values[k : k + npoints], float(mags.max())


def minimax(
    function: str | Callable[[np.ndarray], np.ndarray],
    a: float,
    b: float,
    degree: int,
    *,
    max_iterations: int = 100,
    tolerance: float = 1e-12,
) -> PolynomialFit:
    """Best uniform (minimax) polynomial approximation on [a, b] by the Remez exchange.

    Starts from the Chebyshev extrema; each iteration solves the (d+2)x(d+2) levelled system
    ``sum_k c_k T_k(t_i) + (-1)^i E = f(t_i)`` in the Chebyshev basis, then exchanges the
    reference for d+2 alternating-sign extrema of the error (dense grid of >= 20001 uniform
    plus Chebyshev-spaced points, refined by golden-section search, so non-smooth targets such
    as |x| and relu work).  Stops when ``(max|err| - |E|) / max|err| < tolerance``; returns the
    best iterate, with its alternation points in ``reference_points``.
    """
    f, name, params = _resolve(function)
    a, b = _check_interval(a, b)
    degree = _check_degree(degree)
    half = 0.5 * (b - a)

    def ft(t: np.ndarray) -> np.ndarray:
        return f(a + (t + 1.0) * half)

    n = max(20001, 200 * (degree + 2) + 1)
    grid = np.union1d(np.linspace(-1.0, 1.0, n), -np.cos(np.linspace(0.0, np.pi, n)))
    npoints = degree + 2
    reference = -np.cos(np.pi * np.arange(npoints) / (degree + 1))
    signs = (-1.0) ** np.arange(npoints)
    scale = max(float(np.max(np.abs(ft(grid)))), 1e-300)
    best: tuple[float, np.ndarray, np.ndarray] | None = None
    restarted = False
    stalled = 0
    for _ in range(max_iterations):
        system = np.column_stack([_cheb.chebvander(reference, degree), signs])
        solution = np.linalg.solve(system, ft(reference))
        coef, levelled = solution[:-1], abs(solution[-1])

        def err(t: np.ndarray, c: np.ndarray = coef) -> np.ndarray:
            return _cheb.chebval(t, c) - ft(t)

        found = _alternating_extrema(err, grid, npoints)
        if found is None:
            # Degenerate symmetric reference (e.g. an even target with even degree gives E = 0
            # and too few sign changes): restart once from an asymmetric reference.
            if restarted:
                break
            restarted = True
            reference = -np.cos(np.pi * np.arange(npoints) / (degree + 2))
            continue
        new_reference, _, max_err = found
        if best is None or max_err < best[0] * (1.0 - tolerance):
            stalled = 0
        else:
            stalled += 1
        if best is None or max_err < best[0]:
            best = (max_err, coef, new_reference)
        if stalled >= 5:  # rounding floor reached before the tolerance
            break
        if max_err - levelled <= tolerance * max_err or max_err <= 1e-15 * scale:
            break
        reference = new_reference
    if best is None:  # degenerate: fall back to the levelled solution
        best = (float("nan"), coef, reference)
    _, coef, reference = best
    record = PolynomialFit(
        function=name,
        function_params=params,
        method="minimax",
        degree=degree,
        basis="chebyshev",
        coefficients=coef,
        interval=(a, b),
        max_error=0.0,
        weighted_mse=None,
        reference_points=a + (reference + 1.0) * half,
    )
    ref_err = float(np.max(np.abs(record(record.reference_points) - f(record.reference_points))))
    max_err = max(_max_error(record, f, np.array([[a, b]])), ref_err)
    return dataclasses.replace(record, max_error=max_err)


def chebyshev(
    function: str | Callable[[np.ndarray], np.ndarray], a: float, b: float, degree: int
) -> PolynomialFit:
    """Interpolation at the degree+1 Chebyshev points of the first kind mapped to [a, b]."""
    f, name, params = _resolve(function)
    a, b = _check_interval(a, b)
    degree = _check_degree(degree)
    coef = _cheb.chebinterpolate(lambda t: f(a + (t + 1.0) * 0.5 * (b - a)), degree)
    record = PolynomialFit(
        function=name,
        function_params=params,
        method="chebyshev",
        degree=degree,
        basis="chebyshev",
        coefficients=coef,
        interval=(a, b),
        max_error=0.0,
        weighted_mse=None,
    )
    return dataclasses.replace(record, max_error=_max_error(record, f, np.array([[a, b]])))


# --------------------------------------------------------------------------------------------
# Distribution-aware methods: OLA (wls), AutoReP DaPa (gaussian_wls), AESPA (hermite), Flash
# --------------------------------------------------------------------------------------------


def _points_weights(
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


def wls(
    function: str | Callable[[np.ndarray], np.ndarray],
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
    f, name, params = _resolve(function)
    degree = _check_degree(degree)
    if ridge < 0:
        raise ValueError("ridge must be >= 0")
    x, w, low, high = _points_weights(distribution)
    a, b = _check_interval(*(interval if interval is not None else (low, high)))
    y = f(x)
    vander = _cheb.chebvander((2.0 * x - (a + b)) / (b - a), degree)
    root = np.sqrt(w)
    lhs, rhs = vander * root[:, None], y * root
    if ridge > 0:
        lhs = np.vstack([lhs, math.sqrt(ridge) * np.eye(degree + 1)])
        rhs = np.concatenate([rhs, np.zeros(degree + 1)])
    coef = np.linalg.lstsq(lhs, rhs, rcond=None)[0]
    mse = float(np.sum(w * (vander @ coef - y) ** 2))
    record = PolynomialFit(
        function=name,
        function_params=params,
        method="wls",
        degree=degree,
        basis="chebyshev",
        coefficients=coef,
        interval=(a, b),
        max_error=0.0,
        weighted_mse=mse,
    )
    return dataclasses.replace(record, max_error=_max_error(record, f, np.array([[a, b]])))


def _gaussian_expansion(
    f: Callable[[np.ndarray], np.ndarray],
    name: str,
    params: Mapping[str, float],
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
    targets use Gauss-HermiteE quadrature with _QUADRATURE_NODES nodes, the residual being
    the quadrature of (p - f)^2.
    """
    pieces = _piecewise_linear(name, params)
    if pieces is None:
        nodes, weights = _herme.hermegauss(_QUADRATURE_NODES)
        weights = weights / weights.sum()
        basis = _normalized_hermite(nodes, degree)  # (n, d+1)
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
    pdf, upper = _special_pdf(tau), _special.ndtr(-tau)
    coef[:, 0] += np.sum(beta * std[:, None] * (pdf - tau * upper), axis=1)
    if degree >= 1:
        coef[:, 1] += np.sum(beta * std[:, None] * upper, axis=1)
    if degree >= 2:
        h = _normalized_hermite(tau, degree - 2)  # (C, m, d-1)
        k = np.arange(2, degree + 1, dtype=float)
        scale = 1.0 / np.sqrt(k * (k - 1.0))  # He_{k-2}/sqrt(k!) = h_{k-2}/sqrt(k(k-1))
        coef[:, 2:] += np.einsum("cm,cmk->ck", beta * std[:, None] * pdf, h) * scale
    # E[f^2] over the linear pieces (t_{i-1}, t_i) with truncated moments of z.
    alpha = np.concatenate([np.full((mean.size, 1), -np.inf), tau], axis=1)
    omega = np.concatenate([tau, np.full((mean.size, 1), np.inf)], axis=1)
    pa, pb = _special_pdf(alpha), _special_pdf(omega)
    z0 = _special.ndtr(omega) - _special.ndtr(alpha)
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


def _special_pdf(z: np.ndarray) -> np.ndarray:
    """Standard normal density (0 at +-inf)."""
    return np.exp(-0.5 * np.square(z)) / math.sqrt(2.0 * math.pi)


def _gaussian_fit(
    function: str | Callable[[np.ndarray], np.ndarray],
    mean: float | np.ndarray,
    std: float | np.ndarray,
    degree: int,
    method: str,
) -> PolynomialFit:
    f, name, params = _resolve(function)
    degree = _check_degree(degree)
    per_channel = np.ndim(mean) > 0 or np.ndim(std) > 0
    m_arr, s_arr = (np.atleast_1d(np.asarray(v, dtype=float)) for v in (mean, std))
    m_arr, s_arr = np.broadcast_arrays(m_arr, s_arr)
    if m_arr.ndim != 1:
        raise ValueError("mean/std must be scalars or 1-d per-channel arrays")
    if not (np.all(np.isfinite(m_arr)) and np.all(np.isfinite(s_arr)) and np.all(s_arr > 0)):
        raise ValueError("mean must be finite and std finite and positive")
    coef, residual = _gaussian_expansion(f, name, params, m_arr, s_arr, degree)
    ranges = np.column_stack([m_arr - _GAUSS_RANGE * s_arr, m_arr + _GAUSS_RANGE * s_arr])
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
        max_error=0.0,
        weighted_mse=float(residual.mean()),
        channel_intervals=ranges if per_channel else None,
    )
    return dataclasses.replace(record, max_error=_max_error(record, f, ranges))


def gaussian_wls(
    function: str | Callable[[np.ndarray], np.ndarray],
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
    return _gaussian_fit(function, mean, std, degree, "gaussian_wls")


def hermite(
    function: str | Callable[[np.ndarray], np.ndarray],
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
    return _gaussian_fit(function, mean, std, degree, "hermite")


def quad(
    function: str | Callable[[np.ndarray], np.ndarray],
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
    f, name, params = _resolve(function)
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
        x, w, low, high = _points_weights(dist)
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
        max_error=0.0,
        weighted_mse=float(np.mean(mses)),
        channel_intervals=ranges_arr if per_channel else None,
    )
    return dataclasses.replace(record, max_error=_max_error(record, f, ranges_arr))


# --------------------------------------------------------------------------------------------
# Dispatcher and cost model
# --------------------------------------------------------------------------------------------

_METHODS = ("minimax", "chebyshev", "wls", "gaussian_wls", "hermite", "quad")
_ACTIVATION_PARAMS = frozenset({"alpha", "lo", "hi"})


def fit(
    method: str,
    function: str | Callable[[np.ndarray], np.ndarray],
    degree: int,
    *,
    distribution: EmpiricalDistribution
    | Sequence[EmpiricalDistribution]
    | np.ndarray
    | None = None,
    interval: tuple[float, float] | None = None,
    mean: float | np.ndarray | None = None,
    std: float | np.ndarray | None = None,
    **params: Any,
) -> PolynomialFit:
    """Dispatch to one approximation method (used by the compiler passes).

    Inputs per method: ``minimax`` / ``chebyshev`` need ``interval`` (or a distribution,
    whose [low, high] is used); ``wls`` and ``quad`` (degree 2 only) need ``distribution``;
    ``gaussian_wls`` / ``hermite`` need ``mean`` and ``std`` (or a distribution, whose moments
    are used).  Activation parameters (``alpha``, ``lo``, ``hi``) in ``params`` are bound to a
    named ``function``; the other params go to the method (e.g. ``max_iterations``,
    ``ridge``, ``flash_form``).  Raises ValueError for an unknown method, missing inputs or
    unexpected parameters.
    """
    if method not in _METHODS:
        raise ValueError(f"unknown method {method!r}; known: {', '.join(_METHODS)}")
    act_params = {k: params.pop(k) for k in list(params) if k in _ACTIVATION_PARAMS}
    if act_params:
        if not isinstance(function, str):
            raise ValueError("activation parameters need a named function")
        function = make_activation(function, **act_params)
    single = distribution if isinstance(distribution, EmpiricalDistribution) else None

    def need_interval() -> tuple[float, float]:
        if interval is not None:
            return interval
        if single is not None:
            return single.low, single.high
        if isinstance(distribution, np.ndarray):
            return float(np.min(distribution)), float(np.max(distribution))
        raise ValueError(f"method {method!r} needs an interval or a distribution")

    def need_stats() -> tuple[Any, Any]:
        if mean is not None and std is not None:
            return mean, std
        if single is not None:
            return single.mean, single.std
        raise ValueError(f"method {method!r} needs mean and std (or a distribution)")

    if method in ("wls", "quad") and distribution is None:
        raise ValueError(f"method {method!r} needs a distribution")
    if method == "quad" and degree != 2:
        raise ValueError(f"method 'quad' fits degree 2 only, got degree {degree}")
    target: Callable[..., PolynomialFit]
    args: tuple[Any, ...]
    if method in ("minimax", "chebyshev"):
        target = minimax if method == "minimax" else chebyshev
        args = (function, *need_interval(), degree)
    elif method == "wls":
        target, args = wls, (function, distribution, degree)
        params["interval"] = interval
    elif method == "quad":
        target, args = quad, (function, distribution)
    elif method == "gaussian_wls":
        target, args = gaussian_wls, (function, *need_stats(), degree)
    else:
        m, s = need_stats()
        target, args = hermite, (function, degree)
        params.update(mean=m, std=s)
    try:
        inspect.signature(target).bind(*args, **params)
    except TypeError as exc:
        raise ValueError(f"bad parameters {sorted(params)} for method {method!r}: {exc}") from exc
    return target(*args, **params)


def multiplicative_depth(degree: int) -> int:
    """Multiplicative depth ceil(log2(degree + 1)) of evaluating a degree-``degree`` polynomial.

    This is the depth of the power-of-two / Paterson-Stockmeyer (Chebyshev) evaluation of the
    polynomial, not counting the extra level some libraries spend on scalar multiplication.
    """
    degree = _check_degree(degree)
    return degree.bit_length()
