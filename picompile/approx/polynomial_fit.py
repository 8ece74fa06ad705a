"""The record of a polynomial replacing an activation, and how its quality is measured.

Reads: a fitting method's coefficients (Chebyshev, normalized Hermite or power basis; one row or
one per channel), the range they are meant for and the target function.
Writes: :class:`PolynomialFit` records (immutable; evaluable; convertible to Chebyshev
coefficients on any interval, to power-basis coefficients and to a JSON-able dict), the
folded quadratic ``a*x^2 + b*x + c`` of a degree <= 2 fit, and measured ``max_error`` on a
dense grid (:func:`measured_max_error`).
"""

from __future__ import annotations

import types
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
from numpy.polynomial import Polynomial

from picompile.approx import basis as polynomial_basis
from picompile.approx.targets import Parameter, Target, plain_parameter

#: Number of points of the dense grid used to measure max_error (uniform + Chebyshev spaced).
ERROR_GRID_POINTS = 4097


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
    max_error: float = 0.0
    weighted_mse: float | None = None
    reference_points: np.ndarray | None = None
    channel_intervals: np.ndarray | None = None
    function_params: Mapping[str, Parameter] = field(default_factory=dict)

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
        params = {k: plain_parameter(v) for k, v in dict(self.function_params).items()}
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
            return polynomial_basis.clenshaw(terms, (2.0 * x - (a + b)) / (b - a))
        if self.basis == "hermite":
            return polynomial_basis.hermite_series(terms, (x - mean) / std)
        result = np.zeros_like(x) + terms[-1]
        for c in reversed(terms[:-1]):
            result = result * x + c
        return result

    def _series(self, row: int) -> polynomial_basis.Series:
        """numpy.polynomial object for one channel row (acting on x)."""
        coef, mean, std = self._channel_rows()
        c = coef[row]
        if self.basis == "chebyshev":
            return polynomial_basis.chebyshev_series(c, self.interval)
        if self.basis == "hermite":
            return polynomial_basis.normalized_hermite_series(c, mean[row], std[row])
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
            polynomial_basis.series_chebyshev_coefficients(self._series(i), (lo, hi))
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
        if self.basis == "chebyshev":
            power = polynomial_basis.chebyshev_to_power(self.coefficients, self.interval)
            return power if self.coefficients.ndim == 2 else power[0]
        rows = [
            polynomial_basis.series_power_coefficients(self._series(i))
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


def dense_grid(a: float, b: float, n: int = ERROR_GRID_POINTS) -> np.ndarray:
    """Uniform and Chebyshev-spaced points of [a, b] (both ends included), sorted."""
    t = np.union1d(np.linspace(-1.0, 1.0, n), -np.cos(np.linspace(0.0, np.pi, n)))
    return a + (t + 1.0) * (0.5 * (b - a))


def chebyshev_fit(target: Target, name: str, params: Mapping[str, Parameter], method: str,
                  coefficients: np.ndarray, interval: tuple[float, float], **extra: Any
                  ) -> PolynomialFit:
    """A Chebyshev-basis fit on ``interval`` with its ``max_error`` measured against
    ``target`` there (``extra``: ``weighted_mse``, ``reference_points``)."""
    record = PolynomialFit(function=name, function_params=params, method=method,
                           degree=len(coefficients) - 1, basis="chebyshev",
                           coefficients=coefficients, interval=interval, **extra)
    return with_measured_error(record, target)


def with_measured_error(fit: PolynomialFit, f: Target, ranges: np.ndarray | None = None
                        ) -> PolynomialFit:
    """``fit`` with ``max_error`` measured against ``f`` on dense grids of ``ranges`` (C, 2)
    (default: the fit's interval)."""
    ranges = np.array([fit.interval]) if ranges is None else ranges
    return replace(fit, max_error=measured_max_error(fit, f, ranges))


def measured_max_error(fit: PolynomialFit, f: Target, ranges: np.ndarray) -> float:
    """max |p - f| on dense grids of ranges (C, 2) (one row per channel, or one row)."""
    grid = np.stack([dense_grid(lo, hi) for lo, hi in ranges])
    if fit.coefficients.ndim == 2:
        values = fit(grid, channel_axis=0)
    else:
        values = fit(grid)
    return float(np.max(np.abs(values - f(grid))))


def check_degree(degree: int) -> int:
    """``degree`` as an int; ValueError unless it is a non-negative integer."""
    if int(degree) != degree or degree < 0:
        raise ValueError(f"degree must be a non-negative integer, got {degree}")
    return int(degree)


def check_interval(a: float, b: float) -> tuple[float, float]:
    """(a, b) as floats; ValueError unless finite with a < b."""
    a, b = float(a), float(b)
    if not (np.isfinite(a) and np.isfinite(b) and a < b):
        raise ValueError(f"need finite a < b, got [{a}, {b}]")
    return a, b
