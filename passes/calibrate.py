"""calibrate — measure every activation's input distribution on calibration data.

Reads: the canonical IR (activation nodes carry ``meta["onnx_input"]``, the name of their input
in the source ONNX model), the source model and the calibration inputs in the context.
Writes, per activation node:

* ``meta["_distribution"]`` — the layer's :class:`EmpiricalDistribution` (256-bin histogram,
  mean, std, min, max);
* ``meta["_channel_distributions"]`` — one 64-bin distribution per channel (axis 1);
* ``meta["calibration"]`` — a JSON summary for the plan and report: mean, std, min, max,
  percentiles (0.1, 1, 50, 99, 99.9), the histogram, per-channel mean/std/min/max.

Polynomials recognised in the model (``meta["recognized"]``) are measured too, and their
Chebyshev series is re-expressed on the measured range (the same polynomial).

Also records ``context.analysis["calibration"]`` (sample count, whether labels were given).
The model runs in onnxruntime (the outside reference), with every activation input added as
an extra output. Options: ``--calib``. Missing data is a CalibrationError (raised earlier, when
the data is loaded).
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper

from picompile.approx import EmpiricalDistribution
from picompile.errors import CalibrationError
from picompile.ir import Graph, Node
from picompile.passes import polynomials
from picompile.plan import ACTIVATION_OPS
from picompile.reference import reference_outputs

NAME = "calibrate"
PERCENTILES = (0.1, 1.0, 50.0, 99.0, 99.9)
LAYER_BINS = 256
CHANNEL_BINS = 64


def activation_nodes(graph: Graph) -> list[Node]:
    return [n for n in graph.nodes() if n.op in ACTIVATION_OPS]


def _model_with_outputs(reference_model: bytes, names: list[str]) -> bytes:
    proto = onnx.load_from_string(reference_model)
    present = {o.name for o in proto.graph.output}
    for name in names:
        if name not in present:
            proto.graph.output.append(helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT,
                                                                    None))
            present.add(name)
    return proto.SerializeToString()


def channel_view(values: np.ndarray) -> np.ndarray:
    """(channels, samples) view of a (N, C, ...) or (N, F) tensor: axis 1 is the channel."""
    if values.ndim < 2:
        return values.reshape(1, -1)
    return np.moveaxis(values, 1, 0).reshape(values.shape[1], -1)


def summarize(values: np.ndarray) -> tuple[EmpiricalDistribution, list[EmpiricalDistribution],
                                           dict]:
    flat = values.reshape(-1).astype(np.float64)
    layer = EmpiricalDistribution.from_samples(flat, bins=LAYER_BINS)
    per_channel = channel_view(values).astype(np.float64)
    channels = [EmpiricalDistribution.from_samples(row, bins=CHANNEL_BINS) for row in per_channel]
    summary = {
        "samples": int(flat.size),
        "mean": float(flat.mean()), "std": float(flat.std()),
        "min": float(flat.min()), "max": float(flat.max()),
        "percentiles": dict(zip([str(p) for p in PERCENTILES],
                                np.percentile(flat, PERCENTILES).tolist(), strict=True)),
        "histogram": {"edges": layer.edges.tolist(), "counts": layer.counts.tolist()},
        "channel_mean": per_channel.mean(axis=1).tolist(),
        "channel_std": per_channel.std(axis=1).tolist(),
        "channel_min": per_channel.min(axis=1).tolist(),
        "channel_max": per_channel.max(axis=1).tolist(),
    }
    return layer, channels, summary


def run(graph: Graph, context) -> list[str]:
    calibration = context.calibration
    if calibration is None:
        raise CalibrationError("the calibrate pass needs calibration data (--calib)")
    nodes = activation_nodes(graph)
    written = [n for n in graph.nodes() if n.op == "Polynomial" and "recognized" in n.meta]
    nodes += written
    if not nodes:
        return ["no activations to calibrate"]
    names = [n.meta["onnx_input"] for n in nodes]
    model = _model_with_outputs(context.reference_model, names)
    if context.progress is not None:
        context.progress(f"calibrate: onnxruntime on {calibration.size} samples")
    outputs = reference_outputs(model, calibration.inputs)
    for node, name in zip(nodes, names, strict=True):
        values = np.asarray(outputs[name])
        expected = graph.shape(node.inputs[0])[1:]
        if values.shape[1:] != expected:
            raise CalibrationError(f"calibration of {node.name!r} produced shape {values.shape}, "
                                   f"expected (samples, {expected})")
        layer, channels, summary = summarize(values)
        node.meta["_distribution"] = layer
        node.meta["_channel_distributions"] = channels
        node.meta["calibration"] = summary
        if node in written:  # the measured range: the same polynomial, a better interval
            polynomials.calibrate_interval(node, summary["min"], summary["max"])
    context.analysis["calibration"] = {"samples": calibration.size,
                                       "labels": calibration.labels is not None,
                                       "activation_layers": len(nodes)}
    return [f"calibrated {len(nodes)} activation layers on {calibration.size} samples"]
