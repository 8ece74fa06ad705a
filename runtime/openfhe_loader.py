"""Import OpenFHE, or explain clearly why it cannot be imported here.

Reads: the running interpreter's version and the installed ``openfhe`` package.
Writes: the imported ``openfhe`` module, or a :class:`~picompile.errors.BackendError`.

The ``openfhe`` wheels on PyPI carry a CPython 3.10 extension (Ubuntu 22.04 builds, glibc ≥ 2.34);
on any other Python the import fails deep inside the extension loader, so check first.
"""

from __future__ import annotations

import importlib
import os
import platform
import sys
from types import ModuleType

SUPPORTED_PYTHON = (3, 10)
SCALING_MOD_BITS = 50
FIRST_MOD_BITS = 60
#: First modulus of bootstrappable contexts. OpenFHE requires a correction factor
#: ≥ log2(q0/Δ) (here 56 − 50 = 6) and a bootstrap's absolute error grows as 2^correction
#: (measured at N=2^16, 16384 slots, [3,3]: max error 0.12 with q0 = 2^60 (correction 10),
#: 0.008 with q0 = 2^56 (correction 6), flat for values up to 16; bench/fhe_inference.py
#: --bootstrap-only). A smaller q0 also leaves less headroom: values beyond ±16 are divided
#: into range first (``BOOTSTRAP_BOUND``).
BOOTSTRAP_FIRST_MOD_BITS = 56
#: q0 / Δ of bootstrappable contexts, in bits (the first modulus is the scaling's + this)
BOOTSTRAP_HEADROOM_BITS = BOOTSTRAP_FIRST_MOD_BITS - SCALING_MOD_BITS
INSECURE_RING_DIMENSION = 1 << 12


def load_openfhe() -> ModuleType:
    """Return the ``openfhe`` module; raise BackendError with a remedy when it cannot load."""
    from picompile.errors import BackendError

    running = sys.version_info[:2]
    if tuple(running) != SUPPORTED_PYTHON:
        raise BackendError(
            f"the encrypted backends need OpenFHE, whose PyPI wheels load only on CPython "
            f"{SUPPORTED_PYTHON[0]}.{SUPPORTED_PYTHON[1]} (Linux x86_64, glibc >= 2.34); this is "
            f"{platform.python_implementation()} {running[0]}.{running[1]}: run `make venv` "
            "(it builds .venv from .python-version) and use .venv/bin/picompile"
        )
    # OpenFHE's OpenMP threads spin: on a 2-core machine with the other core busy, 2 threads
    # run 10x slower than 1 (measured). One thread unless the user chose otherwise: the OpenMP
    # runtime reads the variable when the extension loads, and the process environment (other
    # libraries, child processes) is left as it was.
    chosen = "OMP_NUM_THREADS" in os.environ
    if not chosen:
        os.environ["OMP_NUM_THREADS"] = openmp_threads()
    try:
        return importlib.import_module("openfhe")
    except ImportError as exc:
        raise BackendError(
            f"cannot import openfhe ({exc}): install the pinned wheel with `pip install -e .` "
            f"on CPython 3.10 ({platform.system()} {platform.machine()} here)"
        ) from None
    finally:
        if not chosen:
            del os.environ["OMP_NUM_THREADS"]


def openmp_threads() -> str:
    """OpenFHE's OpenMP thread count: the user's ``OMP_NUM_THREADS``, else 1."""
    return os.environ.get("OMP_NUM_THREADS", "1")


def ckks_parameters(openfhe: ModuleType, depth: int, insecure: bool, ring: int | None = None,
                    first_mod_bits: int = FIRST_MOD_BITS,
                    scaling_mod_bits: int = SCALING_MOD_BITS) -> object:
    """CKKS parameters picompile uses: FLEXIBLEAUTO, 50-bit scaling, a 60-bit first modulus
    (``first_mod_bits``: bootstrappable contexts use ``BOOTSTRAP_FIRST_MOD_BITS``).

    128-bit security (HE standard) unless ``insecure`` (tests only), then ``ring`` or 2^12.
    """
    parameters = openfhe.CCParamsCKKSRNS()
    parameters.SetMultiplicativeDepth(depth)
    parameters.SetScalingModSize(scaling_mod_bits)
    parameters.SetFirstModSize(first_mod_bits)
    parameters.SetScalingTechnique(openfhe.FLEXIBLEAUTO)
    if insecure:
        parameters.SetSecurityLevel(openfhe.HEStd_NotSet)
        parameters.SetRingDim(ring or INSECURE_RING_DIMENSION)
    else:
        parameters.SetSecurityLevel(openfhe.HEStd_128_classic)
    return parameters


def bootstrap_correction_factor(first_mod_bits: int = BOOTSTRAP_FIRST_MOD_BITS,
                                scaling_mod_bits: int = SCALING_MOD_BITS) -> int:
    """The smallest correction factor OpenFHE accepts for FLEXIBLEAUTO bootstrapping with this
    first modulus and scaling (log2(q0/Δ)); the bootstrap's error grows as 2^factor."""
    return first_mod_bits - scaling_mod_bits
