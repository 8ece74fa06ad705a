"""The runtime's compile-time interface: the only runtime module the compiler imports.

Reads: whatever each query names (a plan being built, a tensor, a depth). Writes: nothing.

The compiler needs three things of the runtime, and only these (a layering test enforces it):

* **simulation** — the plain backend's kernels, so that calibration, the degree search and the
  layout measure exactly what the runtime will compute: :func:`execute_step` (one step on
  float64 tensors), :func:`op_matrix` (a linear step as a sparse matrix),
  :func:`polynomial_values` (a ``Polynomial`` step's Chebyshev series on a tensor, per layer or
  per channel), :func:`normalize_inputs`, and the diagonals' offsets of linear steps
  (:func:`generalized_diagonals`; over several ciphertexts :func:`pair_offsets`,
  :func:`block_count`);
* **backend capabilities** — what OpenFHE will pick for given parameters (ring dimensions at
  128-bit security, bootstrapping depth), the BFV plaintext primes, the BFV row rotation and
  the CKKS rotation decomposition, so the plan's parameters are the ones the runtime builds;
* **protocol costs** — the MPC protocols' bytes and rounds per element (:func:`mpc_cost`), and
  how a split linear step's giant steps are shared among workers (:func:`partition_giants`,
  for the cost model's scale-out prediction).
"""

from __future__ import annotations

from picompile.runtime.backend import normalize_inputs
from picompile.runtime.bfv import context_shape as bfv_context_shape
from picompile.runtime.bfv import plaintext_primes, row_rotation
from picompile.runtime.blocks import block_count, generalized_diagonals, pair_offsets
from picompile.runtime.ckks import PLAINTEXT_CACHE_BYTES, bootstrap_parameters
from picompile.runtime.mpc import cost as mpc_cost
from picompile.runtime.openfhe_loader import (
    BOOTSTRAP_FIRST_MOD_BITS,
    BOOTSTRAP_HEADROOM_BITS,
    FIRST_MOD_BITS,
    SCALING_MOD_BITS,
    bootstrap_correction_factor,
    ckks_parameters,
    load_openfhe,
)
from picompile.runtime.plain import execute_step, op_matrix
from picompile.runtime.rotations import power_of_two_keys, rotation_digits
from picompile.runtime.slot_program import partition_giants
from picompile.runtime.tensor_ops import chebyshev_series as polynomial_values


def ckks_ring_dimension(depth: int, insecure: bool) -> int:
    """The ring dimension OpenFHE picks for a leveled CKKS context of ``depth`` levels
    (128-bit unless ``insecure``)."""
    openfhe = load_openfhe()
    return int(openfhe.GenCryptoContext(ckks_parameters(openfhe, depth, insecure))
               .GetRingDimension())


def bootstrap_depth(level_budget: list[int]) -> int:
    """Levels a CKKS bootstrap with ``level_budget`` consumes (uniform ternary secret)."""
    openfhe = load_openfhe()
    return int(openfhe.CryptoContext.GetBootstrapDepth(list(level_budget),
                                                       openfhe.UNIFORM_TERNARY))


def bootstrap_ring_dimension(depth: int, slots: int,
                             scaling_mod_bits: int = SCALING_MOD_BITS) -> int:
    """The ring dimension of a 128-bit bootstrappable context of ``depth`` levels with
    ``scaling_mod_bits``-bit scaling (and its first modulus, 6 bits more)."""
    openfhe = load_openfhe()
    parameters = bootstrap_parameters(openfhe, depth, False, None, slots,
                                      scaling_mod_bits + BOOTSTRAP_HEADROOM_BITS,
                                      scaling_mod_bits)
    return int(openfhe.GenCryptoContext(parameters).GetRingDimension())


__all__ = [
    "BOOTSTRAP_FIRST_MOD_BITS", "BOOTSTRAP_HEADROOM_BITS", "FIRST_MOD_BITS",
    "PLAINTEXT_CACHE_BYTES",
    "SCALING_MOD_BITS",
    "bfv_context_shape", "block_count",
    "bootstrap_correction_factor", "bootstrap_depth",
    "bootstrap_ring_dimension", "ckks_ring_dimension", "execute_step", "generalized_diagonals",
    "mpc_cost",
    "normalize_inputs", "op_matrix", "pair_offsets", "partition_giants", "plaintext_primes",
    "polynomial_values",
    "power_of_two_keys", "rotation_digits",
    "row_rotation",
]
