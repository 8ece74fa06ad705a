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

ResNet-20 is trained differently from the two small nets (``train_resnet``): SGD with Nesterov
momentum and weight decay under a one-cycle schedule, random 32×32 crops of the 2-pixel-padded
image and horizontal flips, channels-last tensors, and a checkpoint after every epoch
(``examples/.checkpoints/``, ignored by git) that ``--resume`` continues from, because a run takes
hours on a 2-core machine (``make examples`` trains all three).
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
import torch.nn.functional as F  # noqa: E402
from train_examples import (  # noqa: E402
    SEED,
    THREADS,
    ResNet20,
    export_torch,
    report_epoch,
    seed_everything,
    train_epoch,
    train_torch,
    validate_torch,
)

import fashion  # noqa: E402

MODELS_FILE = os.path.join(HERE, "fashion_models.json")
CHECKPOINTS = os.path.join(HERE, ".checkpoints")


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


def augment(batch: torch.Tensor, generator: torch.Generator, shift: int = 2) -> torch.Tensor:
    """Random crops of the ``shift``-padded images (translations by up to ``shift`` pixels) and
    random horizontal flips, one draw per image."""
    n, c, h, w = batch.shape
    padded = F.pad(batch, (shift, shift, shift, shift))
    dy = torch.randint(0, 2 * shift + 1, (n,), generator=generator)
    dx = torch.randint(0, 2 * shift + 1, (n,), generator=generator)
    rows = (dy[:, None] + torch.arange(h)[None, :])[:, None, :, None]
    picked = padded.gather(2, rows.expand(n, c, h, w + 2 * shift))
    cols = (dx[:, None] + torch.arange(w)[None, :])[:, None, None, :].expand(n, c, h, w)
    out = picked.gather(3, cols)
    flip = torch.rand(n, generator=generator) < 0.5
    out[flip] = out[flip].flip(3)
    return out


def train_resnet(name: str, model: nn.Module, x_tr: np.ndarray, y_tr: np.ndarray,
                 x_te: np.ndarray, y_te: np.ndarray, epochs: int, lr: float, batch_size: int,
                 resume: bool) -> float:
    """SGD + one-cycle + augmentation, checkpointed per epoch; returns the last test accuracy."""
    os.makedirs(CHECKPOINTS, exist_ok=True)
    checkpoint = os.path.join(CHECKPOINTS, f"{name}.pt")
    model = model.to(memory_format=torch.channels_last)
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, nesterov=True,
                          weight_decay=5e-4)
    steps_per_epoch = (len(x_tr) + batch_size - 1) // batch_size
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, epochs=epochs,
                                                steps_per_epoch=steps_per_epoch,
                                                pct_start=0.25)
    g = torch.Generator().manual_seed(SEED)
    first, acc = 0, float("nan")
    if resume and os.path.exists(checkpoint):
        state = torch.load(checkpoint, weights_only=False)
        if state["epochs"] != epochs:
            raise SystemExit(f"{checkpoint} is for {state['epochs']} epochs, not {epochs}")
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
        g.set_state(state["generator"])
        first, acc = state["epoch"], state["accuracy"]
        print(f"[{name}] resumed after epoch {first} (test acc {acc:.4f})", flush=True)
    xt, yt = torch.from_numpy(x_tr), torch.from_numpy(y_tr)
    t0 = time.time()
    def prepare(batch: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        return augment(batch, generator).contiguous(memory_format=torch.channels_last)

    for ep in range(first, epochs):
        loss = train_epoch(model, opt, sched, xt, yt, batch_size, g, prepare)
        acc = report_epoch(name, model, x_te, y_te, ep, epochs, loss, t0)
        state = {"epochs": epochs, "epoch": ep + 1, "accuracy": acc,
                 "model": model.state_dict(), "optimizer": opt.state_dict(),
                 "scheduler": sched.state_dict(), "generator": g.get_state()}
        torch.save(state, checkpoint + ".tmp")
        os.replace(checkpoint + ".tmp", checkpoint)
    model.eval()
    return acc


#: name → (model class, input kind, epochs, learning rate, batch size, BatchNormalization kept)
SPECS = {
    "mlp": (FashionMLP, "flat784", 12, 2e-3, 128, False),
    "vgg": (FashionVGG, "img28", 10, 2e-3, 128, False),
    "resnet20": (ResNet20, "img32x3", 15, 0.1, 128, True),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", nargs="+", choices=sorted(SPECS), default=list(SPECS))
    parser.add_argument("--epochs", type=int, help="override the model's epoch count")
    parser.add_argument("--resume", action="store_true",
                        help="continue ResNet-20 from its last per-epoch checkpoint")
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
        epochs = args.epochs or epochs
        name = f"{short}_fashion"
        start = time.time()
        seed_everything()
        model = cls()
        x_tr = fashion.to_model_input(train_images, kind)
        x_te = fashion.to_model_input(test_images, kind)
        if short == "resnet20":
            train_resnet(name, model, x_tr, y_tr, x_te, y_te, epochs, lr, batch_size,
                         args.resume)
        else:
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
