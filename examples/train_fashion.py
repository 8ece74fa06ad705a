#!/usr/bin/env python3
"""Train and export the Fashion-MNIST example models (the harder real workload).

Run from the repository root in the training venv (``make examples`` does, after
``make fashion-data``):

    .venv-train/bin/python examples/train_fashion.py [--models mlp vgg resnet20]

Reads: the full Fashion-MNIST from Debian's ``dataset-fashion-mnist`` (examples/fashion.py).
Writes (examples/): ``mlp_fashion.onnx`` (784-256-256-10 ReLU MLP), ``vgg_fashion.onnx``
(VGG-style: two conv-conv-MaxPool stages, 28×28 input), ``resnet20_fashion.onnx`` (the
CIFAR-style ResNet-20 of ``train_examples.py`` on 28×28 images zero-padded to 32×32 and
replicated to 3 channels, BatchNormalization kept in the graph), and ``fashion_models.json``
(input kind and onnxruntime test accuracy on the 10,000 test images, per model).

ResNet-20 measured ~12–22 min per epoch on this 2-core machine, so its run is opt-in
(``--models resnet20``): it needs a few hours here (or a GPU box).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import torch  # noqa: E402
import torch.nn as nn  # noqa: E402
from train_examples import (  # noqa: E402
    THREADS,
    ResNet20,
    export_torch,
    seed_everything,
    train_torch,
    validate_torch,
)

import fashion  # noqa: E402

MODELS_FILE = os.path.join(HERE, "fashion_models.json")


class FashionMLP(nn.Module):
    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(784, 256), nn.ReLU(), nn.Linear(256, 256), nn.ReLU(),
                                 nn.Linear(256, 10))

    def forward(self, x):
        return self.net(x)


class FashionVGG(nn.Module):
    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(), nn.Conv2d(16, 16, 3, padding=1), nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.Conv2d(32, 32, 3, padding=1),
            nn.ReLU(), nn.MaxPool2d(2),
        )
        self.flatten = nn.Flatten()
        self.classifier = nn.Sequential(nn.Linear(32 * 7 * 7, 128), nn.ReLU(),
                                        nn.Linear(128, 10))

    def forward(self, x):
        return self.classifier(self.flatten(self.features(x)))


#: name → (model class, input kind, epochs, learning rate, batch size, BatchNormalization kept)
SPECS = {
    "mlp": (FashionMLP, "flat784", 12, 2e-3, 128, False),
    "vgg": (FashionVGG, "img28", 10, 2e-3, 128, False),
    "resnet20": (ResNet20, "img32x3", 15, 3e-3, 128, True),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", nargs="+", choices=sorted(SPECS), default=["mlp", "vgg"])
    args = parser.parse_args()
    torch.set_num_threads(THREADS)
    train_images, train_labels = fashion.load("train")
    test_images, test_labels = fashion.load("test")
    y_tr, y_te = train_labels.astype(np.int64), test_labels.astype(np.int64)
    entries = {}
    if os.path.exists(MODELS_FILE):
        with open(MODELS_FILE) as f:
            entries = {e["name"]: e for e in json.load(f)}
    for short in args.models:
        cls, kind, epochs, lr, batch_size, has_bn = SPECS[short]
        name = f"{short}_fashion"
        start = time.time()
        seed_everything()
        model = cls()
        x_tr = fashion.to_model_input(train_images, kind)
        x_te = fashion.to_model_input(test_images, kind)
        train_torch(name, model, x_tr, y_tr, x_te, y_te, epochs, lr, batch_size)
        path = os.path.join(HERE, f"{name}.onnx")
        export_torch(model, x_te[:1], path)
        accuracy = validate_torch(name, model, path, x_te, y_te, has_bn)
        entries[name] = {"name": name, "file": f"{name}.onnx", "input_kind": kind,
                         "input_name": "input", "output_name": "logits",
                         "test_accuracy": round(accuracy, 6), "epochs": epochs,
                         "train_seconds": round(time.time() - start, 1)}
        print(f"[{name}] onnxruntime test accuracy {accuracy:.4f} "
              f"({time.time() - start:.0f} s)", flush=True)
    with open(MODELS_FILE, "w") as f:
        json.dump(sorted(entries.values(), key=lambda e: e["name"]), f, indent=2)
        f.write("\n")


if __name__ == "__main__":
    main()
