"""Interval methods: fit an activation on a range [a, b] without a distribution.

Reads: a target (activation name or callable), an interval [a, b] and a degree.
Writes: :class:`PolynomialFit` records in the Chebyshev basis on [a, b], with ``max_error``
measured on a dense grid (and, for minimax, the final alternation points).

Methods
    ``minimax``
        Best uniform approximation on ``[a, b]`` by the Remez exchange algorithm (the
        classical baseline of HE activation approximation).
    ``chebyshev``
        Interpolation at Chebyshev points of the first kind (near-minimax, cheap).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable

import numpy as np
from numpy.polynomial import chebyshev as cheb

from picompile.approx.polynomial_fit import (
    PolynomialFit,
    chebyshev_fit,
    check_degree,
    check_interval,
)
from picompile.approx.targets import Target, resolve


def golden_max(
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


def alternating_extrema(
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
    refined = golden_max(lambda t: s * err(t), lo, hi)
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
    function: str | Target,
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
    f, name, params = resolve(function)
    a, b = check_interval(a, b)
    degree = check_degree(degree)
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
        system = np.column_stack([cheb.chebvander(reference, degree), signs])
        solution = np.linalg.solve(system, ft(reference))
        coef, levelled = solution[:-1], abs(solution[-1])

        def err(t: np.ndarray, c: np.ndarray = coef) -> np.ndarray:
            return cheb.chebval(t, c) - ft(t)

        found = alternating_extrema(err, grid, npoints)
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
    record = chebyshev_fit(f, name, params, "minimax", coef, (a, b),
                           reference_points=a + (reference + 1.0) * half)
    ref_err = float(np.max(np.abs(record(record.reference_points) - f(record.reference_points))))
    return dataclasses.replace(record, max_error=max(record.max_error, ref_err))


def chebyshev(
    function: str | Target, a: float, b: float, degree: int
) -> PolynomialFit:
    """Interpolation at the degree+1 Chebyshev points of the first kind mapped to [a, b]."""
    f, name, params = resolve(function)
    a, b = check_interval(a, b)
    degree = check_degree(degree)
    coef = cheb.chebinterpolate(lambda t: f(a + (t + 1.0) * 0.5 * (b - a)), degree)
    return chebyshev_fit(f, name, params, "chebyshev", coef, (a, b))
