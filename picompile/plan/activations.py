"""What each activation op of the plan vocabulary computes, exactly: the one table that the
runtime executes (exact ``Relu``/``Gelu``/... steps) and that the compiler fits polynomials to.

Reads: an op name (``Relu``, ``Clip``, ``LeakyRelu``, ``PRelu``, ``Sigmoid``, ``Tanh``, ``Gelu``)
or a library name (``relu``, ``relu6``, ``clip``, ``leaky_relu``, ``sigmoid``, ``tanh``,
``gelu``, ``abs``) and the op's attributes. Writes: nothing (pure numpy/scipy functions).

Attribute conventions are ONNX's: ``Clip`` has ``min``/``max``, ``LeakyRelu`` ``alpha``
(default 0.01), ``Gelu`` ``approximate`` (``"none"`` or ``"tanh"``); ``PRelu`` takes its
per-channel slope array.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Any

import numpy as np
from scipy import special

Activation = Callable[[np.ndarray], np.ndarray]


def _floating(x: np.ndarray) -> np.ndarray:
    """``x`` as a floating array, keeping float32/float64 (anything else becomes float64)."""
    x = np.asarray(x)
    return x if x.dtype in (np.float32, np.float64) else x.astype(np.float64)


def relu(x: np.ndarray) -> np.ndarray:
    """max(x, 0)."""
    x = _floating(x)
    return np.maximum(x, x.dtype.type(0))


def clip(x: np.ndarray, *, lo: float, hi: float) -> np.ndarray:
    """min(max(x, lo), hi); ``lo`` and ``hi`` are required."""
    if not lo < hi:
        raise ValueError(f"clip needs lo < hi, got lo={lo}, hi={hi}")
    return np.clip(_floating(x), lo, hi)


def relu6(x: np.ndarray) -> np.ndarray:
    """min(max(x, 0), 6)."""
    x = _floating(x)
    return np.clip(x, x.dtype.type(0), x.dtype.type(6))


def leaky_relu(x: np.ndarray, *, alpha: float = 0.01) -> np.ndarray:
    """x for x >= 0, alpha * x otherwise (``alpha`` may be a per-channel array: PRelu)."""
    x = _floating(x)
    return np.where(x >= 0.0, x, alpha * x)


def sigmoid(x: np.ndarray) -> np.ndarray:
    """1 / (1 + exp(-x)), computed without overflow."""
    return special.expit(_floating(x))


def tanh(x: np.ndarray) -> np.ndarray:
    """Hyperbolic tangent."""
    return np.tanh(_floating(x))


def gelu(x: np.ndarray, *, approximate: str = "none") -> np.ndarray:
    """GELU: x·Φ(x) (``approximate="none"``) or ONNX's tanh approximation (``"tanh"``)."""
    x = _floating(x)
    if approximate == "tanh":
        return 0.5 * x * (1.0 + np.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x ** 3)))
    if approximate != "none":
        raise ValueError(f"Gelu approximate must be 'none' or 'tanh', got {approximate!r}")
    return 0.5 * x * (1.0 + special.erf(x / math.sqrt(2.0)))


def absolute(x: np.ndarray) -> np.ndarray:
    """|x|."""
    return np.abs(_floating(x))


#: Activations by library name (read-only); parameters are keyword arguments.
BY_NAME: Mapping[str, Callable[..., np.ndarray]] = MappingProxyType({
    "relu": relu, "relu6": relu6, "clip": clip, "leaky_relu": leaky_relu, "sigmoid": sigmoid,
    "tanh": tanh, "gelu": gelu, "abs": absolute,
})

#: Plan op → library name.
OP_NAMES: Mapping[str, str] = MappingProxyType({
    "Relu": "relu", "Clip": "clip", "LeakyRelu": "leaky_relu", "PRelu": "leaky_relu",
    "Sigmoid": "sigmoid", "Tanh": "tanh", "Gelu": "gelu",
})


def name_and_parameters(op: str, attrs: Mapping[str, Any], slope: np.ndarray | None = None
                        ) -> tuple[str, dict[str, Any]]:
    """(library name, keyword parameters) of an activation step with ONNX attributes."""
    if op not in OP_NAMES:
        raise KeyError(f"{op} is not an activation op ({', '.join(OP_NAMES)})")
    if op == "Clip":
        return "clip", {"lo": float(attrs["min"]), "hi": float(attrs["max"])}
    if op == "LeakyRelu":
        return "leaky_relu", {"alpha": float(attrs.get("alpha", 0.01))}
    if op == "PRelu":
        if slope is None:
            raise ValueError("PRelu needs its slope array")
        return "leaky_relu", {"alpha": slope}
    if op == "Gelu":
        return "gelu", {"approximate": str(attrs.get("approximate", "none"))}
    return OP_NAMES[op], {}


def exact_activation(op: str, attrs: Mapping[str, Any], slope: np.ndarray | None = None
                     ) -> Activation:
    """The function an activation step computes, its attributes bound."""
    name, parameters = name_and_parameters(op, attrs, slope)
    function = BY_NAME[name]
    return (lambda x: function(x, **parameters)) if parameters else function


def evaluate(op: str, x: np.ndarray, attrs: Mapping[str, Any], slope: np.ndarray | None = None
             ) -> np.ndarray:
    """The exact activation ``op`` applied to ``x``."""
    return exact_activation(op, attrs, slope)(x)
