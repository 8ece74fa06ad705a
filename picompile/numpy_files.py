"""Reading user-supplied numpy files (.npy arrays, .npz archives) with clear errors.

Reads: a path. Writes: an array (.npy) or a dict of arrays by name (.npz). Never unpickles.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from picompile.errors import PicompileError


def read_numpy_file(path: str | Path, error: type[PicompileError], what: str
                    ) -> np.ndarray | dict[str, np.ndarray]:
    """Load ``path``; a missing or unreadable file raises ``error`` naming ``what`` it is."""
    file = Path(path)
    if not file.exists():
        raise error(f"{what} {file} does not exist")
    try:
        if file.suffix == ".npz":
            with np.load(file, allow_pickle=False) as data:
                return {k: data[k] for k in data.files}
        return np.load(file, allow_pickle=False)
    except Exception as exc:  # noqa: BLE001 - np.load on untrusted bytes: zip, header parsing
        raise error(f"cannot read {what} {file}: {type(exc).__name__}: {exc}") from None
