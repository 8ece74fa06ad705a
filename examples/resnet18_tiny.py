"""A Tiny-ImageNet-shaped ResNet-18 as an ONNX model with random weights (numpy + onnx only).

The point of this model is its *shape*, not its accuracy: it is the network used for cost and
packing studies of tensors larger than one CKKS ciphertext. With the default stem (3x3, stride
2, 64 channels) on a 3x64x64 image, the activation after the stem is 64x32x32 = 65536 values,
already more than the 32768 slots of a ring-dimension-2^16 ciphertext, and every stage keeps
that size halving spatially as channels double (128x16x16, 256x8x8, 512x4x4).

Architecture (input ``input`` [1, 3, 64, 64] float32, output ``logits`` [1, classes]):

* stem: Conv 3x3 (``width`` channels, stride ``stem_stride``, pads 1, bias) -> activation.
  There is no MaxPool: max pooling cannot be evaluated under FHE.
* 4 stages of 2 BasicBlocks, channels width, 2w, 4w, 8w. A block is conv3x3 -> act -> conv3x3
  -> Add(shortcut) -> act; the first block of stages 2-4 has stride 2 on its first conv and a
  1x1 stride-2 Conv shortcut. Batch norm is taken as folded into the convs: every Conv has a
  bias and there are no BatchNormalization nodes.
* GlobalAveragePool -> Flatten -> Gemm (``classes`` outputs).

Weights are He-normal (std sqrt(2 / fan_in)) float32, biases normal with std 0.01, all drawn
from ``numpy.random.default_rng(seed)``. The second conv of every block is scaled by 0.5 so
that the residual stream does not blow up with depth: on a standard-normal input (seed 0,
width 64) the RMS of ``stage4.output`` is about 2.3 with it and about 15 without it (the stream
grows by roughly sqrt(2) per block when both branches have equal variance).

Tensor names are readable (``stage2.block1.conv1``, ``stage2.block1.conv1.weight``, ...), and
the tensors between stages have stable names: ``stem.output`` enters stage 1 and
``stage{k}.output`` leaves stage k (and enters stage k + 1); :func:`stage_tensors` gives the
pair for a stage, and :func:`stage_model` cuts one stage out as its own model.

    python examples/resnet18_tiny.py -o resnet18_tiny.onnx [--seed S] [--width W] [--classes K]
"""

from __future__ import annotations

import argparse

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = 13
IR_VERSION = 8  # read by onnxruntime >= 1.10
INPUT_SHAPE = (1, 3, 64, 64)
STAGES = 4
BLOCKS_PER_STAGE = 2
RESIDUAL_SCALE = 0.5  # on the second conv of every block


def stage_tensors(stage: int) -> tuple[str, str]:
    """The names of the tensors entering and leaving ``stage`` (1-4) in :func:`resnet18_tiny`."""
    if not 1 <= stage <= STAGES:
        raise ValueError(f"stage must be in 1..{STAGES}, not {stage}")
    return ("stem.output" if stage == 1 else f"stage{stage - 1}.output", f"stage{stage}.output")


class _Builder:
    """Accumulates nodes and initializers, drawing weights from one generator."""

    def __init__(self, seed: int, activation: str) -> None:
        self.rng = np.random.default_rng(seed)
        self.activation = activation
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[onnx.TensorProto] = []

    def _param(self, name: str, array: np.ndarray) -> str:
        self.initializers.append(numpy_helper.from_array(array.astype(np.float32), name))
        return name

    def conv(self, name: str, x: str, cin: int, cout: int, kernel: int, stride: int,
             scale: float = 1.0, out: str | None = None) -> str:
        std = np.sqrt(2.0 / (cin * kernel * kernel))
        w = self.rng.normal(0.0, std, (cout, cin, kernel, kernel)) * scale
        b = self.rng.normal(0.0, 0.01, cout)
        pad = kernel // 2
        out = out or name
        self.nodes.append(helper.make_node(
            "Conv", [x, self._param(f"{name}.weight", w), self._param(f"{name}.bias", b)], [out],
            name=name, kernel_shape=[kernel, kernel], strides=[stride, stride], pads=[pad] * 4))
        return out

    def act(self, name: str, x: str, out: str | None = None) -> str:
        out = out or name
        self.nodes.append(helper.make_node(self.activation, [x], [out], name=name))
        return out

    def block(self, prefix: str, x: str, cin: int, cout: int, stride: int,
              out: str | None = None) -> str:
        h = self.act(f"{prefix}.act1", self.conv(f"{prefix}.conv1", x, cin, cout, 3, stride))
        h = self.conv(f"{prefix}.conv2", h, cout, cout, 3, 1, scale=RESIDUAL_SCALE)
        shortcut = x
        if stride != 1 or cin != cout:
            shortcut = self.conv(f"{prefix}.shortcut", x, cin, cout, 1, stride)
        self.nodes.append(helper.make_node("Add", [h, shortcut], [f"{prefix}.add"],
                                           name=f"{prefix}.add"))
        return self.act(f"{prefix}.act2", f"{prefix}.add", out=out)

    def gemm(self, name: str, x: str, features: int, classes: int, out: str) -> str:
        w = self.rng.normal(0.0, np.sqrt(2.0 / features), (classes, features))
        b = self.rng.normal(0.0, 0.01, classes)
        self.nodes.append(helper.make_node(
            "Gemm", [x, self._param(f"{name}.weight", w), self._param(f"{name}.bias", b)], [out],
            name=name, transB=1))
        return out


def resnet18_tiny(seed: int = 0, width: int = 64, classes: int = 200, stem_stride: int = 2,
                  activation: str = "Relu") -> onnx.ModelProto:
    """The ResNet-18 described in the module docstring, checked by ``onnx.checker``."""
    b = _Builder(seed, activation)
    x = b.act("stem.act", b.conv("stem.conv", "input", INPUT_SHAPE[1], width, 3, stem_stride),
              out=stage_tensors(1)[0])
    cin = width
    for stage in range(1, STAGES + 1):
        cout = width * 2 ** (stage - 1)
        for block in range(1, BLOCKS_PER_STAGE + 1):
            stride = 2 if stage > 1 and block == 1 else 1
            last = block == BLOCKS_PER_STAGE
            x = b.block(f"stage{stage}.block{block}", x, cin, cout, stride,
                        out=stage_tensors(stage)[1] if last else None)
            cin = cout
    b.nodes.append(helper.make_node("GlobalAveragePool", [x], ["head.pool"], name="head.pool"))
    b.nodes.append(helper.make_node("Flatten", ["head.pool"], ["head.flatten"],
                                    name="head.flatten", axis=1))
    b.gemm("head.fc", "head.flatten", cin, classes, out="logits")
    graph = helper.make_graph(
        b.nodes, f"resnet18_tiny_w{width}",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, list(INPUT_SHAPE))],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, classes])],
        initializer=b.initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                              ir_version=IR_VERSION, producer_name="picompile.examples")
    onnx.checker.check_model(model, full_check=True)
    return model


def stage_model(model: onnx.ModelProto, stage: int) -> onnx.ModelProto:
    """Stage ``stage`` (1-4) of a :func:`resnet18_tiny` model as its own model: input the
    tensor entering the stage, output the tensor leaving it (both named as in the full model,
    see :func:`stage_tensors`), shapes from ``onnx.shape_inference``."""
    inferred = onnx.shape_inference.infer_shapes(model, strict_mode=True)
    names = list(stage_tensors(stage))
    sub = onnx.utils.Extractor(inferred).extract_model(names[:1], names[1:])
    kept = [vi for vi in sub.graph.value_info if vi.name not in names]
    del sub.graph.value_info[:]
    sub.graph.value_info.extend(kept)
    sub.graph.name = f"{model.graph.name}_stage{stage}"
    onnx.checker.check_model(sub, full_check=True)
    return sub


def parameter_count(model: onnx.ModelProto) -> int:
    """The number of weights and biases (the initializers' total size)."""
    return sum(int(np.prod(t.dims)) for t in model.graph.initializer)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-o", "--output", required=True, help="where to write the .onnx file")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--width", type=int, default=64, help="channels of stage 1")
    parser.add_argument("--classes", type=int, default=200)
    args = parser.parse_args(argv)
    model = resnet18_tiny(seed=args.seed, width=args.width, classes=args.classes)
    onnx.save(model, args.output)
    print(f"{args.output}: {len(model.graph.node)} nodes, {parameter_count(model)} parameters")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
