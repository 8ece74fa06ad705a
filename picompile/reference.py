"""onnxruntime reference: the outside ground truth every plan is compared with.

Reads: an ONNX model and inputs. Writes: onnxruntime's outputs (by name).
Models exported with a static batch of 1 are run sample by sample.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np


def reference_outputs(model: str | Path | bytes, inputs: dict[str, np.ndarray]
                      ) -> dict[str, Any]:
    """Run ``model`` in onnxruntime on ``inputs`` (leading batch axis allowed)."""
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.log_severity_level = 3
    source = str(model) if isinstance(model, Path) else model
    session = onnxruntime.InferenceSession(source, options, providers=["CPUExecutionProvider"])
    specs = session.get_inputs()
    feeds = {}
    for spec in specs:
        dtype = np.float64 if "double" in spec.type else np.float32
        feeds[spec.name] = np.asarray(inputs[spec.name]).astype(dtype)
    names = [o.name for o in session.get_outputs()]
    first = feeds[specs[0].name]
    static_batch = specs[0].shape and isinstance(specs[0].shape[0], int)
    if static_batch and first.ndim == len(specs[0].shape) and first.shape[0] != specs[0].shape[0]:
        rows = [session.run(None, {k: v[i:i + 1] for k, v in feeds.items()})
                for i in range(first.shape[0])]
        return {n: np.concatenate([r[j] for r in rows]) for j, n in enumerate(names)}
    return dict(zip(names, session.run(None, feeds), strict=True))
