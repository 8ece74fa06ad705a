"""precision — does the plan keep its top-1 under its bootstraps' measured error?

Reads: the levelled IR (``meta["bootstrap_after"]``: which values are refreshed, and the
power-of-two ``scale`` each is divided by or multiplied up with), ``context.analysis["ckks"]``
(ring dimension, slots, bootstrapping), the calibration inputs, ``--accuracy-budget``.
Writes: ``context.analysis["precision"]``: the refresh error assumed (the measured largest error
``picompile.cost.bootstrap_measurement`` holds for the ring and slots, and the Gaussian sigma
derived from it), the calibration images simulated, the top-1 agreement of the plan with the
refresh noise against the plan without it, the mean and largest logit change, and ``holds``;
the imaginary parts' standard deviation at the output; one diagnostics line (a warning when the
agreement falls below 100 − budget points, or 99 % without a budget, or the output would not
decode). Leveled plans and plans without calibration data are skipped.

Model: every bootstrap adds independent Gaussian noise to the real part of each slot, sigma =
measured max error / 4.5 (at N=2^16 and 16384 slots: mean |error| 0.0013, max 0.008 over 16384
slots — the max of that many Gaussians is ~4.5 sigma), and a quarter of that to the imaginary
part (``IMAGINARY_RATIO``); a value divided by 2^k before its refresh gets 2^k times that, one
multiplied up by 2^k gets 2^-k times it. The simulation runs in complex arithmetic because CKKS
slots are complex: a polynomial amplifies an imaginary error as it does a real one
(p(x + iy) ≈ p(x) + i·y·p'(x)), and OpenFHE refuses to decode a result whose imaginary parts'
standard deviation exceeds ~2^-5 ("approximation error is too high"). Checked against four
encrypted runs: with the 60-bit first modulus (error 0.12) the Fashion ResNet-20 composite plan
diverges here (NaN) as it did encrypted (with real noise alone it looked fine: 98.8 %), and the
fine-tuned quadratic plan stays decodable (imaginary std 0.021) as it did (top-1 5/5); with
q0 = 2^56 both hold, as measured. Predicted logit changes are ~2× the measured ones. Seeded.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np

from picompile.cost import bootstrap_measurement
from picompile.ir import Graph

NAME = "precision"
#: measured max error / sigma of a refresh's Gaussian noise (see the module docstring)
MAX_ERROR_SIGMAS = 4.5
#: a refresh's imaginary error relative to its real error: OpenFHE's own precision estimate
#: after one (GetLogPrecision, from the imaginary parts) is 2 bits better than the measured
#: real error, at both first moduli (9 vs 7 bits at q0 = 2^56, 5 vs 3 bits at 2^60)
IMAGINARY_RATIO = 0.25
#: calibration images simulated in one batch
BATCH = 64
#: agreement required without an accuracy budget (percent)
DEFAULT_AGREEMENT = 99.0
#: OpenFHE does not decode a result whose imaginary parts' standard deviation exceeds this
#: (its "approximation error is too high" check: log2(std) > scaling bits − 5, in scaled units)
DECODE_LIMIT = 2.0 ** -5


def refresh_sigmas(graph: Graph, sigma: float) -> dict[str, float]:
    """The noise sigma (in the value's units) each refreshed step's output receives."""
    return {node.name: sigma * float(node.meta["bootstrap_after"].get("scale", 1.0))
            for node in graph.nodes() if node.meta.get("bootstrap_after")}


def noisy_agreement(graph: Graph, inputs: dict[str, np.ndarray], sigmas: dict[str, float],
                    seed: int = 0, imaginary_ratio: float | None = None) -> dict[str, Any]:
    """Top-1 agreement (percent) and logit changes of the plan with complex Gaussian refresh
    noise ``sigmas`` (by step name) against the plan without it, on ``inputs``; and the
    standard deviation of the output's imaginary parts (what OpenFHE's decoding checks)."""
    from picompile.simulate import GraphSimulator

    clean_simulator = GraphSimulator(graph, dtype=np.float32)
    simulator = GraphSimulator(graph, dtype=np.complex64)
    rng = np.random.default_rng(seed)
    ratio = IMAGINARY_RATIO if imaginary_ratio is None else imaginary_ratio

    def noise(sigma: float):
        return lambda value: value + sigma * (rng.standard_normal(value.shape)
                                              + 1j * ratio * rng.standard_normal(value.shape))

    perturbations = {name: noise(sigma) for name, sigma in sigmas.items()}
    count = len(next(iter(inputs.values())))
    agree, changes, largest, imaginary = 0, 0.0, 0.0, []
    for start in range(0, count, BATCH):
        chunk = {k: v[start:start + BATCH] for k, v in inputs.items()}
        size = len(next(iter(chunk.values())))
        with np.errstate(all="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore", np.exceptions.ComplexWarning)
            clean = clean_simulator.run(chunk).reshape(size, -1).astype(np.float64)
            noisy = simulator.run(chunk, perturbations=perturbations).reshape(size, -1)
            agree += int(np.sum(np.argmax(clean, 1) == np.argmax(noisy.real, 1)))
            change = np.abs(noisy.real - clean)
        finite = bool(np.all(np.isfinite(noisy)))
        changes += float(np.sum(np.mean(change, axis=1))) if finite else np.inf
        largest = max(largest, float(np.max(change)) if finite else np.inf)
        imaginary.append(noisy.imag.ravel() if finite else np.array([np.inf]))
    spread = np.concatenate(imaginary).astype(np.float64)
    with np.errstate(over="ignore", invalid="ignore"):
        deviation = float(np.std(spread)) if np.all(np.isfinite(spread)) else np.inf
    return {"images": count, "agreement": 100.0 * agree / count,
            "mean_logit_change": changes / count, "max_logit_change": largest,
            "imaginary_std": deviation if np.isfinite(deviation) else np.inf}


def simulate(graph: Graph, context, ring: int, slots: int, scaling: int,
             images: int | None = None, decode_margin: float = 1.0) -> dict[str, Any]:
    """The verdict on the annotated ``graph`` under the measured refresh error of a
    (``ring``, ``slots``, ``scaling``-bit) bootstrap, on the first ``images`` calibration images
    (all by default): :func:`noisy_agreement`'s figures, the error and sigma assumed, the
    agreement required (100 − budget points, or ``DEFAULT_AGREEMENT``), ``decodes`` (imaginary
    std below ``DECODE_LIMIT / decode_margin``) and ``holds``."""
    max_error = float(bootstrap_measurement(ring, slots, scaling)["max_error"])
    sigma = max_error / MAX_ERROR_SIGMAS
    inputs = {k: v[:images] for k, v in context.calibration.inputs.items()}
    result = noisy_agreement(graph, inputs, refresh_sigmas(graph, sigma))
    budget = context.options.accuracy_budget
    required = DEFAULT_AGREEMENT if budget is None else 100.0 - float(budget)
    decodes = result["imaginary_std"] < DECODE_LIMIT / decode_margin
    return {"refresh_max_error": max_error, "sigma": sigma, "required_agreement": required,
            "decodes": decodes, "holds": result["agreement"] >= required and decodes, **result}


def run(graph: Graph, context) -> list[str]:
    ckks = context.analysis.get("ckks") or {}
    boot = ckks.get("bootstrapping")
    if not ckks.get("runnable") or not boot or context.calibration is None:
        return []
    ring = int(ckks["ring_dimension"])
    found = context.analysis[NAME] = simulate(graph, context, ring, int(ckks["slots"]),
                                              int(ckks.get("scaling_mod_bits", 50)))
    line = (f"bootstrap error ≤ {found['refresh_max_error']:.2g} (sigma {found['sigma']:.2g}, "
            f"measured at N=2^{ring.bit_length() - 1}): top-1 kept on "
            f"{found['agreement']:.2f} % of {found['images']} calibration images (mean "
            f"|Δ logit| {found['mean_logit_change']:.2g}, max {found['max_logit_change']:.2g}; "
            f"imaginary std {found['imaginary_std']:.2g})")
    if not found["holds"]:
        reason = (f"below the {found['required_agreement']:g} % required" if found["decodes"]
                  else f"the imaginary parts exceed OpenFHE's decoding limit {DECODE_LIMIT:g}")
        line = (f"WARNING: {line}: {reason}; the encrypted run may change top-1 or fail to "
                "decrypt; use higher-degree or composite activations with larger margins")
    return [line]
