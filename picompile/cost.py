"""Cost model: estimated CKKS cost of a polynomial activation, by degree.

Reads: a degree, the number of activation elements, and a cost table.
Writes: estimated seconds (and the depth and multiplication counts behind them).

The default table holds what we measured of OpenFHE here (../shared/OPENFHE_NOTES.md; N=2^16,
one thread): a ciphertext-ciphertext multiplication with relinearization ≈ 0.3 s at mid-chain,
a scalar multiply/add ≈ 0.015 s, and a bootstrap ≈ 50 s that refreshes 10 levels; so every
level a polynomial consumes costs about 5 s of amortized bootstrapping per ciphertext. That is
OLA's point: depth, not multiplications, dominates, so lower degrees pay off doubly. The CKKS
issue's ``calibrate-costs`` replaces this table with measurements of the user's machine.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class CostTable:
    slots: int = 32768
    multiply_seconds: float = 0.30
    scalar_seconds: float = 0.015
    bootstrap_seconds: float = 50.0
    levels_per_bootstrap: int = 10

    @property
    def level_seconds(self) -> float:
        return self.bootstrap_seconds / self.levels_per_bootstrap


DEFAULT_COST_TABLE = CostTable()


#: Levels OpenFHE's EvalChebyshevSeries consumes on an interval [a, b] ≠ [-1, 1], measured with
#: openfhe 1.6.1 (FLEXIBLEAUTO): (largest degree, levels). The affine map to [-1, 1] costs one.
CHEBYSHEV_LEVELS = ((1, 2), (2, 3), (5, 4), (13, 5), (27, 6), (59, 7), (119, 8), (247, 9))


def polynomial_depth(degree: int) -> int:
    """Levels consumed by OpenFHE's Chebyshev-series evaluation of a degree-``degree`` series."""
    for largest, levels in CHEBYSHEV_LEVELS:
        if degree <= largest:
            return levels
    raise ValueError(f"degree {degree} is above the largest supported ({CHEBYSHEV_LEVELS[-1][0]})")


def polynomial_multiplications(degree: int) -> int:
    """Ciphertext multiplications of Paterson–Stockmeyer evaluation in the Chebyshev basis."""
    if degree <= 1:
        return 0
    if degree == 2:
        return 1
    baby = max(1, math.ceil(math.sqrt(degree / 2)))
    giant = max(0, math.ceil(math.log2(max(degree / baby, 1))))
    return baby + giant + math.ceil(degree / baby) - 1


def activation_cost(degree: int, elements: int, table: CostTable = DEFAULT_COST_TABLE) -> float:
    """Estimated seconds to evaluate a degree-``degree`` polynomial on ``elements`` values."""
    ciphertexts = max(1, math.ceil(elements / table.slots))
    per_ciphertext = (polynomial_multiplications(degree) * table.multiply_seconds
                      + (degree + 1) * table.scalar_seconds
                      + polynomial_depth(degree) * table.level_seconds)
    return ciphertexts * per_ciphertext
