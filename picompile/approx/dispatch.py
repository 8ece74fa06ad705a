"""The dispatcher: one entry point that fits an activation by any method of the library.

Reads: a method name (``METHODS``), a target (activation name or callable), a degree and the
inputs each method needs (interval, distribution, or mean/std) plus method and activation
parameters.
Writes: the chosen method's :class:`PolynomialFit` (or a ValueError naming what is missing).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from picompile.approx.distribution_methods import gaussian_wls, hermite, quad, wls
from picompile.approx.distributions import EmpiricalDistribution
from picompile.approx.interval import chebyshev, minimax
from picompile.approx.polynomial_fit import PolynomialFit
from picompile.approx.targets import ACTIVATION_PARAMETERS, Target, make_activation

#: Method names ``fit`` dispatches to.
METHODS = ("minimax", "chebyshev", "wls", "gaussian_wls", "hermite", "quad")


def fit(
    method: str,
    function: str | Target,
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
    are used).  Activation parameters (``alpha``, ``lo``, ``hi``, ``approximate``) in
    ``params`` are bound to a named ``function``; the other params go to the method (e.g.
    ``max_iterations``, ``ridge``, ``flash_form``).  Raises ValueError for an unknown method,
    missing inputs or unexpected parameters.
    """
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; known: {', '.join(METHODS)}")
    act_params = {k: params.pop(k) for k in list(params) if k in ACTIVATION_PARAMETERS}
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
