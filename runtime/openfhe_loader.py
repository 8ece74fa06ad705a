"""Import OpenFHE, or explain clearly why it cannot be imported here.

Reads: the running interpreter's version and the installed ``openfhe`` package.
Writes: the imported ``openfhe`` module, or a :class:`~picompile.errors.BackendError`.

The ``openfhe`` wheels on PyPI carry a CPython 3.10 extension (Ubuntu 22.04 builds, glibc ≥ 2.34);
on any other Python the import fails deep inside the extension loader, so check first.
"""

from __future__ import annotations

import importlib
import platform
import sys
from types import ModuleType

SUPPORTED_PYTHON = (3, 10)


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
    try:
        return importlib.import_module("openfhe")
    except ImportError as exc:
        raise BackendError(
            f"cannot import openfhe ({exc}): install the pinned wheel with `pip install -e .` "
            f"on CPython 3.10 ({platform.system()} {platform.machine()} here)"
        ) from None
