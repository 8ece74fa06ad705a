"""Client-side head: the plaintext classifier tail run after decryption.

Reads: the head ONNX model stored in the plan (Softmax, ArgMax, ai.onnx.ml label mapping, Cast,
ZipMap ...) and the decrypted server output.
Writes: the model's original outputs (labels, probabilities).

The head runs on the client, in the clear, with onnxruntime, so label mapping and ZipMap keep
their exact ONNX semantics.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from picompile.plan import Plan


def run_head(plan: Plan, server_output: np.ndarray) -> dict[str, Any]:
    """Apply the plan's client head to a (batch of) decrypted server output(s)."""
    import onnxruntime

    assert plan.head is not None
    options = onnxruntime.SessionOptions()
    options.log_severity_level = 3
    session = onnxruntime.InferenceSession(plan.head_model, options,
                                           providers=["CPUExecutionProvider"])
    feed_type = session.get_inputs()[0].type
    dtype = np.float64 if "double" in feed_type else np.float32
    results = session.run(None, {plan.head.input: server_output.astype(dtype)})
    return dict(zip([o.name for o in session.get_outputs()], results, strict=True))
