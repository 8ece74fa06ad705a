"""The functions the library approximates: named activations (with bound parameters) or callables.

Reads: an activation name of the one exact table, :data:`picompile.plan.activations.BY_NAME`
(``"relu"``, ``"gelu"``, ...) and its parameters, or any callable.
Writes: callables ``x -> f(x)`` (``functools.partial`` of the table's functions), the
(callable, name, parameters) triple the fitting methods record, and the knots/pieces of the
piecewise-linear activations (for closed-form Gaussian expectations).
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Mapping

import numpy as np

from picompile.plan.activations import BY_NAME

Target = Callable[[np.ndarray], np.ndarray]
Parameter = float | str

ACTIVATIONS: Mapping[str, Callable[..., np.ndarray]] = BY_NAME
"""Known activations by name (read-only).  ``clip`` needs ``lo``/``hi``: use make_activation."""

#: Keyword parameters of the activations (bound by ``make_activation``).
ACTIVATION_PARAMETERS = frozenset({"alpha", "lo", "hi", "approximate"})


def plain_parameter(value: object) -> Parameter:
    """An activation parameter as recorded: strings (Gelu's ``approximate``) as they are, numbers
    as floats."""
    return value if isinstance(value, str) else float(value)  # type: ignore[arg-type]


def make_activation(name: str, **params: Parameter) -> Target:
    """Return the activation ``name`` with its parameters bound (a ``functools.partial``).

    Examples: ``make_activation("clip", lo=0, hi=6)``, ``make_activation("leaky_relu",
    alpha=0.1)``, ``make_activation("gelu", approximate="tanh")``.  Raises ``ValueError`` for
    an unknown name, an unknown parameter, a missing required parameter or a bad value.
    """
    if name not in ACTIVATIONS:
        raise ValueError(f"unknown activation {name!r}; known: {', '.join(sorted(ACTIVATIONS))}")
    func = ACTIVATIONS[name]
    try:
        inspect.signature(func).bind(np.zeros(1), **params)
    except TypeError as exc:
        raise ValueError(f"bad parameters {params} for activation {name!r}: {exc}") from exc
    bound = {k: plain_parameter(v) for k, v in params.items()}
    func(np.zeros(1), **bound)  # bad values (clip lo >= hi, unknown approximate) raise here
    return functools.partial(func, **bound)


def resolve(function: str | Target) -> tuple[Target, str, dict[str, Parameter]]:
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


def piecewise_linear(
    name: str, params: Mapping[str, Parameter]
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
