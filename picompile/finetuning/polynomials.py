"""Trainable polynomial activations, initialised from the calibrated fits of ``approximate``.

Reads: a calibrated activation node of the canonical IR (its ``_distribution``,
``_channel_distributions`` and ``calibration`` summary), a method and a degree.
Writes: a :class:`PolynomialActivation` — the static part of one trainable activation
(normalization, basis, calibrated range) and its initial coefficients — and, after training,
each channel's power-basis coefficients in the normalized input (what the ONNX export writes).

Forms (one row of coefficients per channel, axis 1 of the activation's input):

* ``hermite`` (AESPA): ``sum_k c_k He_k(z)/sqrt(k!)``, ``z = (x - mean_c)/std_c`` with the
  channel's calibrated mean and std (basis-wise normalization), initialised from the Hermite
  expansion of ReLU under N(mean_c, std_c²);
* ``quad`` (Flash): ``a_c x² + b_c x + c_c`` (basis ``power`` in x), initialised from Flash's
  ``α_c(x² + x) + β_c`` fitted under each channel's measured distribution (or, with
  ``flash=False``, the free per-channel least-squares quadratic ``compile --method quad`` uses);
* ``wls`` (OLA/DaPa): ``sum_k c_k T_k(t)``, ``t = (2x - lo - hi)/(hi - lo)`` on the layer's
  calibrated range, initialised from the layer's weighted least-squares fit at degree D (the
  same row for every channel, then trained per channel).

A mask per channel mixes the exact activation in: ``m·p(x) + (1 - m)·relu(x)`` — the
progressive schedule and ReLU selection move ``m`` from 0 to 1.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.polynomial import Chebyshev, HermiteE, Polynomial

from picompile import approx
from picompile.approx.basis import factorials
from picompile.errors import OptionError
from picompile.ir import Node
from picompile.passes.approximate import activation_target, fit_activation, fit_range

#: Methods ``picompile finetune`` trains, and the basis each evaluates in.
BASES = {"hermite": "hermite", "quad": "power", "wls": "chebyshev"}


@dataclass
class PolynomialActivation:
    """One trainable activation: ``p(z)`` per channel with ``z = (x - center)/scale``."""

    step: str
    method: str
    degree: int
    basis: str
    center: np.ndarray          # (C,)
    scale: np.ndarray           # (C,)
    coefficients: np.ndarray    # (C, degree+1), the initial (calibrated) coefficients
    interval: tuple[float, float]  # the layer's calibrated range (range penalty)

    @property
    def channels(self) -> int:
        return int(self.coefficients.shape[0])

    def evaluate(self, x: Any, coefficients: Any) -> Any:
        """p(x) in jax (or numpy): channel axis 1 of ``x``."""
        shape = (1, -1) + (1,) * (x.ndim - 2)
        z = (x - self.center.reshape(shape).astype(x.dtype)) \
            / self.scale.reshape(shape).astype(x.dtype)
        terms = [coefficients[:, k].reshape(shape) for k in range(self.degree + 1)]
        return series(self.basis, terms, z)

    def power_coefficients(self, coefficients: np.ndarray) -> np.ndarray:
        """(C, degree+1) power-basis coefficients in z of the trained rows (float64)."""
        rows = np.asarray(coefficients, dtype=np.float64)
        out = np.zeros(rows.shape)
        for index, row in enumerate(rows):
            if self.basis == "power":
                power = row
            elif self.basis == "hermite":
                power = HermiteE(row / np.sqrt(factorials(self.degree))).convert(
                    kind=Polynomial).coef
            else:
                power = Chebyshev(row).convert(kind=Polynomial).coef
            out[index, :len(power)] = power
        return out


def series(basis: str, terms: list[Any], z: Any) -> Any:
    """sum_k terms[k] B_k(z) for the basis (power, normalized Hermite, Chebyshev); works on jax
    and numpy arrays alike (terms broadcast against z)."""
    if basis == "power":
        result = terms[-1] + 0.0 * z
        for c in reversed(terms[:-1]):
            result = result * z + c
        return result
    if basis == "hermite":
        h_prev, h = 1.0 + 0.0 * z, z
        result = terms[0] * h_prev
        if len(terms) > 1:
            result = result + terms[1] * h
        for k in range(2, len(terms)):
            h, h_prev = (z * h - math.sqrt(k - 1) * h_prev) / math.sqrt(k), h
            result = result + terms[k] * h
        return result
    b1 = b2 = 0.0 * z
    for c in reversed(terms[1:]):
        b1, b2 = 2.0 * z * b1 - b2 + c, b1
    return z * b1 - b2 + terms[0]


def channels_of(node: Node) -> int:
    return len(node.meta["calibration"]["channel_mean"])


def flash_fit(node: Node) -> approx.PolynomialFit:
    """Flash's shape: per channel ``α_c(x² + x) + β_c`` under the channel's distribution."""
    function, params = activation_target(node)
    return approx.fit("quad", function, 2, distribution=node.meta["_channel_distributions"],
                      flash_form=True, **params)


def initial_activation(node: Node, method: str, degree: int, flash: bool = True
                       ) -> PolynomialActivation:
    """The trainable form of ``node``'s activation, initialised from its calibrated fit
    (``quad``: Flash's ``α(x² + x) + β`` shape when ``flash``, else the free quadratic)."""
    if method not in BASES:
        raise OptionError(f"unknown fine-tuning method {method!r}: use "
                          f"{', '.join(BASES)}")
    if method == "quad" and degree != 2:
        raise OptionError("--method quad trains a·x²+b·x+c: use --degree 2")
    if not 1 <= degree <= 15:
        raise OptionError("--degree must be in 1..15 for fine-tuning")
    channels = channels_of(node)
    interval = fit_range(node)
    fit = (flash_fit(node) if method == "quad" and flash else
           fit_activation(node, method, degree))
    if method == "hermite":
        center = np.broadcast_to(np.asarray(fit.mean, dtype=np.float64), (channels,))
        scale = np.broadcast_to(np.asarray(fit.std, dtype=np.float64), (channels,))
        rows = np.atleast_2d(fit.coefficients)
    elif method == "quad":
        center, scale = np.zeros(channels), np.ones(channels)
        rows = np.atleast_2d(fit.power_coefficients())
    else:
        lo, hi = interval
        center = np.full(channels, 0.5 * (lo + hi))
        scale = np.full(channels, 0.5 * (hi - lo))
        rows = np.atleast_2d(fit.chebyshev_coefficients(lo, hi))
    rows = np.broadcast_to(rows, (channels, degree + 1))
    return PolynomialActivation(node.name, method, degree, BASES[method],
                                np.array(center, dtype=np.float64),
                                np.array(scale, dtype=np.float64),
                                np.array(rows, dtype=np.float64), interval)
