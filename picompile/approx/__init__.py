"""Polynomial approximations of nonlinear activations for CKKS / HE+MPC inference.

The library the compiler passes use to replace nonlinear activations (ReLU, GELU, ...) with
polynomials, per layer and per channel.

Reads
    * a target function: a name from :data:`ACTIVATIONS` (``"relu"``, ``"gelu"``, ...; the
      exact table :mod:`picompile.plan.activations`) or a callable, e.g.
      ``make_activation("clip", lo=0, hi=6)``;
    * what is known about the function's inputs: an interval ``[a, b]``, a measured
      :class:`EmpiricalDistribution` (histogram + moments from calibration data) or raw
      calibration samples, or Gaussian statistics ``mean`` / ``std`` (scalars, or one per
      channel).

Writes
    :class:`PolynomialFit` records: the polynomial (its basis and coefficients, one row per
    channel for per-channel fits), the range it is meant for, and *measured* quality figures
    (``max_error`` on a dense grid, ``weighted_mse`` under the distribution used).

Modules: ``basis`` (Chebyshev / Hermite / power bases and the conversions between them),
``targets`` (activations by name), ``distributions`` (histograms, Gaussian expectations),
``polynomial_fit`` (the record), ``interval`` (minimax, chebyshev), ``distribution_methods``
(wls, gaussian_wls, hermite, quad) and ``dispatch`` (``fit``).
"""

from picompile.approx.dispatch import METHODS, fit
from picompile.approx.distribution_methods import gaussian_wls, hermite, quad, wls
from picompile.approx.distributions import EmpiricalDistribution
from picompile.approx.interval import chebyshev, minimax
from picompile.approx.polynomial_fit import PolynomialFit, fold_to_quadratic
from picompile.approx.targets import ACTIVATIONS, make_activation

__all__ = [
    "ACTIVATIONS",
    "METHODS",
    "EmpiricalDistribution",
    "PolynomialFit",
    "chebyshev",
    "fit",
    "fold_to_quadratic",
    "gaussian_wls",
    "hermite",
    "make_activation",
    "minimax",
    "quad",
    "wls",
]
