"""The fine-tuning stage end to end (what ``picompile finetune`` and ``picompile.finetune`` run).

Reads: an ONNX model, training data (``input`` + ``labels``) and the options.
Writes: a :class:`FinetuneResult` (the exported ONNX model, its training summary, the trained
model) and, when an output path is given, the ONNX file (atomically: temporary file +
``os.replace``) and a checkpoint ``OUTPUT.checkpoint.npz`` at every epoch end.

Order: the frontend (input shape, number of classes) → the training data checked against it
(:mod:`~picompile.finetuning.data`) → a seeded train/held-out split → the canonical graph
calibrated on (up to :data:`CALIBRATION_SAMPLES` of) the training split, as ``compile`` does →
the jax forward → training (:mod:`~picompile.finetuning.train`) → export
(:mod:`~picompile.finetuning.export`).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import onnx

from picompile.atomic_files import atomic_write
from picompile.finetuning.data import TrainingData, load_training_data
from picompile.finetuning.export import export_onnx
from picompile.finetuning.forward import Forward
from picompile.finetuning.train import FinetuneOptions, TrainedModel, Trainer
from picompile.frontend import import_onnx
from picompile.lowering import lower_to_plan
from picompile.pipeline import calibrated_graph

#: Training samples the activations are calibrated on (the polynomials' initial fits).
CALIBRATION_SAMPLES = 512


@dataclass
class FinetuneResult:
    """The exported model, its training summary and the trained jax model."""

    model: onnx.ModelProto
    summary: dict[str, Any]
    trained: TrainedModel
    held_out: TrainingData


def checkpoint_path(output: str | Path) -> Path:
    return Path(str(output) + ".checkpoint.npz")


def finetune_model(model: str | Path | bytes | onnx.ModelProto, data: Any,
                   output: str | Path | None = None, **options: Any) -> FinetuneResult:
    """Fine-tune ``model`` on ``data``; keyword options are :class:`FinetuneOptions` fields."""
    start = time.perf_counter()
    if output is not None and "checkpoint" not in options:
        options["checkpoint"] = checkpoint_path(output)
    settings = FinetuneOptions(**options)
    settings.validate()
    frontend = import_onnx(model)
    graph = frontend.graph
    shapes = {name: graph.shape(name) for name in graph.inputs}
    classes = int(graph.shape(graph.outputs[0])[-1])
    training = load_training_data(data, shapes, classes)
    train, held_out = training.split(settings.seed)
    calibration = {"input": train.inputs[:CALIBRATION_SAMPLES]}
    frontend, _ = calibrated_graph(model, calibration)
    forward = Forward(lower_to_plan(frontend.graph))
    trainer = Trainer(frontend.graph, forward, settings)
    trained = trainer.run(train, held_out)
    trained.summary.update({"source_model": frontend.model_name,
                            "source_sha256": frontend.model_sha256,
                            "total_seconds": time.perf_counter() - start})
    proto = export_onnx(trained)
    if output is not None:
        atomic_write(output, lambda f: f.write(proto.SerializeToString()))
    return FinetuneResult(proto, trained.summary, trained, held_out)

