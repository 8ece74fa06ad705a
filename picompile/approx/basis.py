"""Polynomial bases: Chebyshev series on [a, b], normalized Hermite series, the power basis in x.

Reads: coefficient arrays, one row (d+1,) or rows (rows, d+1), and what defines their basis
(an interval [a, b] for Chebyshev, a Gaussian mean/std for Hermite).
Writes: the same polynomials' coefficients in another basis, or their values at points.

Bases:
    Chebyshev on [a, b]: ``sum_k c_k T_k(t)``, ``t = (2x - a - b) / (b - a)``;
    normalized Hermite: ``sum_k c_k He_k(z) / sqrt(k!)``, ``z = (x - mean) / std``;
    power: ``sum_k c_k x^k``.

Pure numpy: the one place where a Chebyshev series becomes power-basis coefficients (the
compiler's folds and parameter bounds, and the runtime's power-basis product tree).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
from numpy.polynomial import Chebyshev, HermiteE, Polynomial

#: Relative round-off snapped to exactly 0 or 1 by ``chebyshev_to_power(..., snap=True)``
#: (CKKS precision is ~1e-9): relative to the row's largest |coefficient|, at least 1.
SNAP_TOLERANCE = 1e-12

Series = Chebyshev | HermiteE | Polynomial


def chebyshev_series(coefficients: np.ndarray, interval: Sequence[float]) -> Chebyshev:
    """numpy's Chebyshev series object for one row of coefficients on [a, b] (acting on x)."""
    a, b = (float(v) for v in interval)
    return Chebyshev(coefficients, domain=[a, b])


def normalized_hermite_series(coefficients: np.ndarray, mean: float, std: float) -> HermiteE:
    """numpy's HermiteE object for one row of ``He_k(z)/sqrt(k!)`` coefficients (acting on x)."""
    scale = 1.0 / np.sqrt(factorials(len(coefficients) - 1))
    m, s = float(mean), float(std)
    return HermiteE(np.asarray(coefficients) * scale, domain=[m - s, m + s])


def series_power_coefficients(series: Series) -> np.ndarray:
    """Power-basis coefficients in x of a numpy series (trailing exact zeros may be dropped)."""
    return series.convert(kind=Polynomial).coef


def series_chebyshev_coefficients(series: Series, interval: Sequence[float]) -> np.ndarray:
    """Chebyshev coefficients on [a, b] of a numpy series (trailing exact zeros may be dropped)."""
    a, b = (float(v) for v in interval)
    return series.convert(domain=[a, b], kind=Chebyshev, window=[-1, 1]).coef


def snap_round_off(power: np.ndarray, tolerance: float = SNAP_TOLERANCE) -> np.ndarray:
    """``power`` with entries within ``tolerance`` (relative) of 0 or 1 set to exactly 0 or 1.

    The basis change leaves round-off where the exact coefficient is 0 or 1 (a folded square
    s² + γ); snapped, they cost no product in the power-basis product tree."""
    power = np.array(power, dtype=np.float64)
    if power.size == 0:
        return power
    limit = tolerance * max(float(np.max(np.abs(power))), 1.0)
    power[np.abs(power) < limit] = 0.0
    power[np.abs(power - 1.0) < limit] = 1.0
    return power


def chebyshev_to_power(coefficients: np.ndarray, interval: Sequence[float], *,
                       snap: bool = False) -> np.ndarray:
    """Power-basis coefficients in x of Chebyshev series on [a, b].

    ``coefficients`` is one row (d+1,) or rows (rows, d+1); returns (rows, d+1) (zero padded
    to the input width). ``snap=True`` snaps each row's round-off to exactly 0 or 1
    (:func:`snap_round_off`, tolerance relative to that row).
    """
    rows = np.atleast_2d(np.asarray(coefficients, dtype=np.float64))
    if rows.ndim != 2:
        raise ValueError(f"coefficients must be (d+1,) or (rows, d+1), got shape {rows.shape}")
    power = np.zeros(rows.shape)
    for index, row in enumerate(rows):
        converted = series_power_coefficients(chebyshev_series(row, interval))
        if snap:
            converted = snap_round_off(converted)
        power[index, :converted.size] = converted
    return power


def power_to_chebyshev(coefficients: np.ndarray, interval: Sequence[float]) -> np.ndarray:
    """Chebyshev coefficients on [a, b] of power-basis rows; (rows, d+1), zero padded."""
    rows = np.atleast_2d(np.asarray(coefficients, dtype=np.float64))
    if rows.ndim != 2:
        raise ValueError(f"coefficients must be (d+1,) or (rows, d+1), got shape {rows.shape}")
    a, b = (float(v) for v in interval)
    chebyshev = np.zeros(rows.shape)
    for index, row in enumerate(rows):
        converted = Polynomial(row).convert(kind=Chebyshev, domain=[a, b]).coef
        chebyshev[index, :converted.size] = converted
    return chebyshev


def factorials(degree: int) -> np.ndarray:
    """k! for k = 0..degree as floats."""
    return np.concatenate(([1.0], np.cumprod(np.arange(1, degree + 1, dtype=float))))


def clenshaw(terms: Sequence[Any], t: np.ndarray) -> np.ndarray:
    """sum_k terms[k] T_k(t) by Clenshaw's recurrence (terms broadcast against t)."""
    b1 = np.zeros_like(t)
    b2 = np.zeros_like(t)
    for c in reversed(terms[1:]):
        b1, b2 = 2.0 * t * b1 - b2 + c, b1
    return t * b1 - b2 + terms[0]


def hermite_series(terms: Sequence[Any], z: np.ndarray) -> np.ndarray:
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


def normalized_hermite(z: np.ndarray, degree: int) -> np.ndarray:
    """He_k(z)/sqrt(k!) for k = 0..degree, stacked on a new last axis."""
    z = np.asarray(z, dtype=float)
    out = np.empty(z.shape + (degree + 1,))
    out[..., 0] = 1.0
    if degree >= 1:
        out[..., 1] = z
    for k in range(2, degree + 1):
        out[..., k] = (z * out[..., k - 1] - math.sqrt(k - 1) * out[..., k - 2]) / math.sqrt(k)
    return out
