"""TEMPORARY (replaced by the approximation-library merge)."""
from __future__ import annotations

import numpy as np

SNAP_TOLERANCE = 1e-12


def chebyshev_to_power(coefficients, interval, *, snap: bool = False) -> np.ndarray:
    a, b = float(np.ravel(interval)[0]), float(np.ravel(interval)[1])
    rows = []
    for row in np.atleast_2d(np.asarray(coefficients, dtype=np.float64)):
        if snap:
            series = np.polynomial.Chebyshev(row, domain=[a, b])
            power = series.convert(kind=np.polynomial.Polynomial).coef
            tolerance = SNAP_TOLERANCE * max(float(np.max(np.abs(power))), 1.0)
            power[np.abs(power) < tolerance] = 0.0
            power[np.abs(power - 1.0) < tolerance] = 1.0
        else:
            series = np.polynomial.Chebyshev(row, domain=[a, b])
            power = series.convert(kind=np.polynomial.Polynomial, domain=[-1, 1],
                                   window=[-1, 1]).coef
        rows.append(np.pad(power, (0, len(row) - len(power))))
    return np.array(rows)
