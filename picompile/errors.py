"""Errors users see.

Every error picompile raises on purpose derives from :class:`PicompileError`; the CLI prints its
message on one line and exits non-zero, with no traceback.
"""

from __future__ import annotations


class PicompileError(Exception):
    """Base class of every error picompile reports to users."""

    exit_code = 1


class ModelError(PicompileError):
    """The ONNX model cannot be read, is invalid, or has shapes picompile cannot fix statically."""


class UnsupportedOpError(PicompileError):
    """The model uses an operator (or an operator setting) that picompile does not compile."""


class CalibrationError(PicompileError):
    """Calibration data is missing, unreadable or of the wrong shape."""


class PlanError(PicompileError):
    """A plan file is corrupt, tampered with, or from an incompatible schema version."""


class BackendError(PicompileError):
    """A runtime backend is missing or misconfigured (e.g. OpenFHE cannot be imported)."""


class ProtocolError(PicompileError):
    """A protocol peer vanished, timed out, or sent a malformed message."""


class InputError(PicompileError):
    """An inference input has the wrong shape, dtype or name."""


class FinetuneError(PicompileError):
    """Fine-tuning could not produce a sound model (the loss kept diverging, or the run was
    interrupted: the last checkpoint is kept), or its extra (jax, optax) is not installed."""


class AccuracyBudgetError(PicompileError):
    """The degree search cannot meet ``--accuracy-budget`` (the message gives the best accuracy
    reached, its cost and what to do; ``--allow-budget-miss`` writes the plan anyway)."""


class OptionError(PicompileError):
    """A compile option is invalid, or two options conflict."""

    exit_code = 2
