"""picompile — compile trained ONNX models into private-inference plans and run them.

Public API::

    plan = picompile.compile("model.onnx")          # -> Plan
    picompile.finetune("model.onnx", "train.npz", "model.finetuned.onnx")  # trained polynomials
    plan.save("model.piplan")
    plan = picompile.load_plan("model.piplan")
    outputs = picompile.run(plan, x, backend="plain")  # -> {output name: value}

The plan is data (the only contract between compiler and runtime); ``run`` hands it to a
runtime backend.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from picompile.errors import (
    BackendError,
    CalibrationError,
    FinetuneError,
    InputError,
    ModelError,
    PicompileError,
    PlanError,
    ProtocolError,
    UnsupportedOpError,
)
from picompile.plan import Plan

__version__ = "0.1.0"


def compile(model: Any, output: str | Path | None = None, **options: Any) -> Plan:  # noqa: A001
    """Compile an ONNX model (path, bytes or ModelProto) into a :class:`Plan`.

    Keyword options are the fields of :class:`picompile.pipeline.CompileOptions`. When
    ``output`` is given the plan is also saved there.
    """
    from picompile.pipeline import CompileOptions, compile_model

    plan = compile_model(model, CompileOptions(**options))
    if output is not None:
        plan.save(output)
    return plan


def finetune(model: Any, data: Any, output: str | Path | None = None, **options: Any
             ) -> Any:
    """Fine-tune ``model`` (path, bytes or ModelProto) with trainable polynomial activations on
    ``data`` (a ``.npz`` path or a dict with ``input`` and ``labels``).

    Keyword options are the fields of :class:`picompile.finetuning.train.FinetuneOptions`
    (``method``, ``degree``, ``epochs``, ``batch_size``, ``lr``, ``seed``, ``relu_budget``, …).
    Returns a :class:`picompile.finetuning.stage.FinetuneResult` (``model``: the ONNX model,
    ``summary``: the training summary); with ``output`` the model is also written there.
    Needs the ``train`` extra (jax, optax).
    """
    from picompile.finetuning.stage import finetune_model

    options.setdefault("progress", False)
    return finetune_model(model, data, output, **options)


def run(plan: Plan, x: Any, backend: str = "plain", **options: Any) -> dict[str, Any]:
    """Run ``plan`` on ``x`` (one array, or a dict by input name) and the client head.

    Returns the model's outputs by name (e.g. logits, or label and probabilities).
    """
    from picompile.runtime import run_plan

    return run_plan(plan, x, backend=backend, **options).outputs


def load_plan(path: str | Path) -> Plan:
    """Load and validate a ``.piplan`` file (raises :class:`PlanError` if it is not sound)."""
    return Plan.load(path)


__all__ = [
    "compile", "finetune", "run", "load_plan", "Plan", "PicompileError", "ModelError",
    "UnsupportedOpError", "CalibrationError", "FinetuneError", "PlanError", "BackendError",
    "ProtocolError", "InputError", "__version__",
]
