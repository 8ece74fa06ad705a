"""ckks_parameters — the OpenFHE CKKS parameters of an FHE plan, and the record of them.

Reads: a multiplicative depth, the slots the plan needs, whether the (insecure) test parameters
were asked for, and for bootstrapped plans the bootstrap's level budget; OpenFHE is asked which
ring dimension it selects and how many levels a bootstrap consumes, so the compiler and the
runtime agree by construction.
Writes: ring dimensions, bootstrap depths, the security label, and the ``context.analysis["ckks"]``
dict (:func:`ckks_analysis` for a runnable plan, :func:`not_runnable_analysis` otherwise).

Parameters: FLEXIBLEAUTO, ``SCALING_MOD_BITS``-bit scaling, ``FIRST_MOD_BITS``-bit first modulus
(``BOOTSTRAP_FIRST_MOD_BITS`` for bootstrapped plans: the bootstrap's error grows as
2^(q0 bits − scaling bits));
128-bit security under the HE-standard table (``HEStd_128_classic``) unless insecure, then the
small test ring (``INSECURE_BOOTSTRAP_RING`` or twice the slots for bootstrapped plans, doubled
until the slots fit for leveled ones).

OpenFHE is reached through the runtime's compile-time interface (``runtime/interface.py``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from picompile.runtime import interface
from picompile.runtime.interface import (
    BOOTSTRAP_FIRST_MOD_BITS,
    BOOTSTRAP_HEADROOM_BITS,
    FIRST_MOD_BITS,
    SCALING_MOD_BITS,
    bootstrap_correction_factor,
)

__all__ = [
    "BOOTSTRAP_FIRST_MOD_BITS",
    "BOOTSTRAP_HEADROOM_BITS",
    "FIRST_MOD_BITS",
    "INSECURE_BOOTSTRAP_RING",
    "SCALING_MOD_BITS",
    "bootstrap_correction_factor",
    "bootstrap_depth",
    "bootstrap_ring_dimension",
    "ckks_analysis",
    "leveled_ring_dimension",
    "not_runnable_analysis",
    "security_label",
]

INSECURE_BOOTSTRAP_RING = 1 << 12


def leveled_ring_dimension(depth: int, insecure: bool, largest: int) -> int:
    """Ring dimension of a leveled plan; the insecure test ring doubles until ``largest`` slots
    fit (the secure one is fixed by the depth)."""
    ring = interface.ckks_ring_dimension(depth, insecure)
    if insecure:
        while ring // 2 < largest:
            ring *= 2
    return ring


def bootstrap_depth(level_budget: Sequence[int]) -> int:
    """Levels OpenFHE's bootstrap consumes with this CoeffsToSlots / SlotsToCoeffs budget."""
    return interface.bootstrap_depth(list(level_budget))


def bootstrap_ring_dimension(depth: int, slots: int, insecure: bool,
                             scaling_mod_bits: int = SCALING_MOD_BITS) -> int:
    """Ring dimension of a bootstrapped plan of context depth ``depth`` over ``slots`` slots
    with ``scaling_mod_bits``-bit scaling."""
    if insecure:
        return max(INSECURE_BOOTSTRAP_RING, 2 * slots)
    return interface.bootstrap_ring_dimension(depth, slots, scaling_mod_bits)


def security_label(insecure: bool) -> str:
    """The plan's security line: 128-bit classical, or a warning for the test parameters."""
    return ("NONE: insecure test parameters (--insecure-test-params)" if insecure
            else "128-bit classical (HE standard, HEStd_128_classic)")


def ckks_analysis(depth: int, ring: int, slots: int, insecure: bool, input_level: int,
                  bootstrapping: dict[str, Any] | None = None,
                  leveled_depth: int | None = None,
                  scaling_mod_bits: int = SCALING_MOD_BITS) -> dict[str, Any]:
    """``context.analysis["ckks"]`` of a runnable plan; ``bootstrapping`` (with the plan's
    ``leveled_depth``) for plans that bootstrap."""
    scheme = "CKKS (OpenFHE, FLEXIBLEAUTO)"
    analysis: dict[str, Any] = {
        "scheme": scheme if bootstrapping is None else f"{scheme} with sparse bootstrapping",
        "multiplicative_depth": depth,
    }
    if bootstrapping is not None:
        analysis["leveled_depth"] = leveled_depth
    first_mod_bits = (FIRST_MOD_BITS if bootstrapping is None
                      else scaling_mod_bits + BOOTSTRAP_HEADROOM_BITS)
    analysis.update({
        "ring_dimension": ring,
        "slots": slots,
        "scaling_mod_bits": scaling_mod_bits,
        "first_mod_bits": first_mod_bits,
        "log2_q_without_special_primes": first_mod_bits + scaling_mod_bits * depth,
        "security": security_label(insecure),
        "insecure": insecure,
        "input_level": input_level,
    })
    if bootstrapping is not None:
        analysis["bootstrapping"] = bootstrapping
    analysis["runnable"] = True
    return analysis


def not_runnable_analysis(depth: int, reason: str, **extra: Any) -> dict[str, Any]:
    """``context.analysis["ckks"]`` of a plan the CKKS backend cannot run, with the reason."""
    return {"multiplicative_depth": depth, "runnable": False, "reason": reason, **extra}

