"""Composite sign polynomials: ReLU(x) = x·(1 + sign(x))/2 with sign a composition of odd
low-degree minimax polynomials (Lee et al. 2021; Orion's composite ReLU).

Reads: the stage degrees (each an odd degree whose power-basis evaluation fits between two
bootstraps), the precision wanted of the final sign, and for ReLU the bound ``B`` of its inputs.
Writes: :class:`CompositeSign` records — each stage's power coefficients on [-1, 1], the
transition width ``tau`` (|t| < tau is where the sign is not yet resolved), each stage's
measured error — and the ReLU's evaluation and error bounds (:func:`relu_error_bounds`).

Construction. Stage i is the odd polynomial p_i of degree d_i minimizing max |p_i(t) − 1| on
[tau_i, 1] (a linear program on a dense grid: scipy's HiGHS), constrained to 0 ≤ p_i ≤ 1 + e_i
on [0, tau_i] so that no value leaves the next stage's domain. Dividing by 1 + e_i maps
[tau_i, 1] onto [tau_{i+1}, 1] with tau_{i+1} = (1 − e_i)/(1 + e_i); the last stage is kept
undivided and written as the step function h = (1 + p_k)/2. For given stage degrees,
:func:`design_sign` searches the smallest ``tau`` whose composition reaches the wanted error.

Error bounds for ReLU on [−B, B] (t = x/B): where |t| ≥ tau, |x·h − ReLU(x)| ≤ |x|·e/2 ≤ B·e/2;
where |t| < tau, |x·h − ReLU(x)| ≤ |x|·max(h, 1 − h) ≤ tau·B·(1 + e/2). Inputs beyond ±B are
the documented failure mode: the first stage grows like t^d there and the composition is
meaningless, so ``B`` is the calibrated bound widened by a stated margin.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np

#: Precision of the final sign (its maximum error outside the transition region).
DEFAULT_SIGN_ERROR = 2.0**-10
#: Grid points per region of the stage linear programs.
GRID_POINTS = 250


@dataclass(frozen=True)
class CompositeSign:
    """sign(t) on [−1, 1] \\ (−tau, tau) as p_k ∘ … ∘ p_1 (the last stage halved into h)."""

    degrees: tuple[int, ...]
    tau: float
    stage_errors: tuple[float, ...]
    #: Power coefficients (index = power) of each stage on [−1, 1], the division by
    #: 1 + e_i applied to every stage but the last.
    stages: tuple[np.ndarray, ...]

    @property
    def error(self) -> float:
        """Maximum |sign approximation − sign| where |t| ≥ tau."""
        return self.stage_errors[-1]

    def sign(self, t: np.ndarray) -> np.ndarray:
        """The composition at ``t`` (in t's float dtype): each odd stage as t·q(t²) by Horner."""
        value = np.asarray(t)
        if value.dtype.kind != "f":
            value = value.astype(np.float64)
        for coefficients in self.stages:
            odd = coefficients[1::2].astype(value.dtype)
            square = value * value
            result = np.full_like(value, odd[-1])
            for c in odd[-2::-1]:
                result *= square
                result += c
            result *= value
            value = result
        return value

    def step(self, t: np.ndarray) -> np.ndarray:
        """h(t) = (1 + sign(t))/2 ≈ 1[t > 0]."""
        return 0.5 * (1.0 + self.sign(t))

    def relu(self, x: np.ndarray, bound: float) -> np.ndarray:
        """x·h(x/B): the composite ReLU on [−bound, bound]."""
        x = np.asarray(x)
        if x.dtype.kind != "f":
            x = x.astype(np.float64)
        return x * self.step(x * x.dtype.type(1.0 / bound))

    def stage_functions(self) -> list[np.ndarray]:
        """Power coefficients of each stage as evaluated, the last one already (1 + p)/2."""
        stages = [c.copy() for c in self.stages]
        stages[-1] = 0.5 * stages[-1]
        stages[-1][0] += 0.5
        return stages


def _stage(degree: int, tau: float) -> tuple[np.ndarray, float]:
    """The odd p of ``degree`` minimizing max |p − 1| on [tau, 1] with 0 ≤ p ≤ 1 + e on
    [0, tau]: (power coefficients, e)."""
    from scipy.optimize import linprog

    powers = np.arange(1, degree + 1, 2)
    uniform = np.linspace(tau, 1.0, GRID_POINTS)
    clustered = tau + (1.0 - tau) * (1.0 - np.cos(np.linspace(0.0, np.pi / 2, GRID_POINTS)))
    outer = np.concatenate([uniform, clustered])
    inner = np.linspace(0.0, tau, GRID_POINTS)[1:]
    p_outer, p_inner = outer[:, None] ** powers, inner[:, None] ** powers
    ones_outer, ones_inner = np.ones((len(outer), 1)), np.ones((len(inner), 1))
    a_ub = np.block([[p_outer, -ones_outer], [-p_outer, -ones_outer],
                     [p_inner, -ones_inner], [-p_inner, 0 * ones_inner]])
    b_ub = np.concatenate([np.ones(len(outer)), -np.ones(len(outer)),
                           np.ones(len(inner)), np.zeros(len(inner))])
    objective = np.zeros(len(powers) + 1)
    objective[-1] = 1.0
    result = linprog(objective, A_ub=a_ub, b_ub=b_ub,
                     bounds=[(None, None)] * len(powers) + [(0.0, None)], method="highs")
    if not result.success:
        raise ValueError(f"sign stage of degree {degree} on [{tau:g}, 1]: {result.message}")
    coefficients = np.zeros(degree + 1)
    coefficients[powers] = result.x[:-1]
    # the LP's error on its grid, re-measured on a finer one (the grid may miss a peak)
    fine = np.linspace(tau, 1.0, 8 * GRID_POINTS)
    error = float(np.max(np.abs(np.polynomial.polynomial.polyval(fine, coefficients) - 1.0)))
    return coefficients, max(error, float(result.x[-1]))


def _compose(degrees: tuple[int, ...], tau: float) -> CompositeSign:
    stages, errors, current = [], [], tau
    for index, degree in enumerate(degrees):
        coefficients, error = _stage(degree, current)
        if index < len(degrees) - 1:
            coefficients = coefficients / (1.0 + error)
            current = min((1.0 - error) / (1.0 + error), 1.0 - 1e-9)
        stages.append(coefficients)
        errors.append(error)
    sign = CompositeSign(tuple(degrees), tau, tuple(errors), tuple(stages))
    # the composition's own error on a dense grid (each stage's is measured on its domain)
    t = np.linspace(tau, 1.0, 1 << 18)
    measured = float(np.max(np.abs(sign.sign(t) - 1.0)))
    return CompositeSign(tuple(degrees), tau, tuple(errors[:-1]) + (max(errors[-1], measured),),
                         tuple(stages))


@functools.lru_cache(maxsize=64)
def design_sign(degrees: tuple[int, ...], target_error: float = DEFAULT_SIGN_ERROR
                ) -> CompositeSign:
    """The composition of odd stages of ``degrees`` with the narrowest transition ``tau``
    (bisection in log scale) whose final error is at most ``target_error``."""
    if not degrees or any(d < 3 or d % 2 == 0 for d in degrees):
        raise ValueError(f"stage degrees must be odd and ≥ 3, got {degrees}")
    low, high = 1e-4, 0.9  # log-bisection bracket of tau
    best = _compose(degrees, high)
    if best.error > target_error:
        raise ValueError(f"stages {degrees} cannot reach sign error {target_error:g}")
    for _ in range(24):
        middle = float(np.sqrt(low * high))
        candidate = _compose(degrees, middle)
        if candidate.error <= target_error:
            best, high = candidate, middle
        else:
            low = middle
        if high / low < 1.1:
            break
    return best


def relu_error_bounds(sign: CompositeSign, bound: float) -> dict[str, float]:
    """Worst-case |composite ReLU − ReLU| on [−bound, bound], split at the transition."""
    return {"bound": float(bound), "transition": sign.tau * float(bound),
            "max_error_outside_transition": float(bound) * sign.error / 2.0,
            "max_error_in_transition": sign.tau * float(bound) * (1.0 + sign.error / 2.0)}
