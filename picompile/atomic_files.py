"""Atomic file writes: a reader never sees a half-written file, and a failed write leaves none.

Reads: a path and a function that writes the content to a binary file object.
Writes: the file, through a temporary file in the same folder replaced into place in one
``os.replace`` (created with the umask's permissions, like any file the user writes).
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable
from pathlib import Path
from typing import Any


def atomic_write(path: str | Path, write: Callable[[Any], None]) -> Path:
    """Write ``path`` by ``write(binary_file)`` atomically; returns the path."""
    path = Path(path)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    try:
        with open(temporary, "xb") as file:
            write(file)
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    return path
