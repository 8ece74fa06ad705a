#!/usr/bin/env python3
"""Train and export the four example models on scikit-learn's digits dataset.

Run from the repository root (this is what `make examples` does):

    .venv-train/bin/python examples/train_examples.py

Outputs (all in examples/):
    digits_data.npz        test set, calibration set, sklearn MLP reference predictions
    mlp_digits.onnx        sklearn MLPClassifier (skl2onnx, ai.onnx.ml head with ZipMap)
    cnn_digits.onnx        small CNN with BatchNormalization nodes kept
    resnet20_digits.onnx   CIFAR-style ResNet-20 (option-B shortcuts) on 3x32x32 upsampled digits
    maxpool_digits.onnx    small CNN with MaxPool
    models.json            per-model metadata and test accuracy
"""
from __future__ import annotations

import collections
import json
import os
import random
import sys
import time
import warnings

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import onnx  # noqa: E402
import onnxruntime as ort  # noqa: E402
import torch  # noqa: E402
import torch.nn as nn  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from digits import DATA_FILE, N_CALIB, make_split, to_model_input  # noqa: E402

SEED = 0
OPSET = 17
ML_OPSET = 3
THREADS = 2
TOL = 1e-4

# Ops allowed in the exported torch graphs.
ALLOWED_TORCH_OPS = {
    "Conv", "BatchNormalization", "Relu", "Add", "MaxPool", "GlobalAveragePool",
    "AveragePool", "Flatten", "Reshape", "Gemm", "MatMul", "Constant", "Identity",
    "Shape", "Gather", "Unsqueeze", "Concat",
}


def seed_everything(seed: int = SEED) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def op_counts(model: onnx.ModelProto) -> dict:
    c = collections.Counter(n.op_type for n in model.graph.node)
    return dict(sorted(c.items()))


def ort_session(path: str) -> ort.InferenceSession:
    so = ort.SessionOptions()
    so.intra_op_num_threads = THREADS
    so.inter_op_num_threads = 1
    return ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])


def describe(path: str) -> dict:
    m = onnx.load(path)
    onnx.checker.check_model(m, full_check=True)
    opsets = {(o.domain or "ai.onnx"): o.version for o in m.opset_import}
    shapes = {}
    for i in m.graph.input:
        dims = [d.dim_param or (d.dim_value if d.HasField("dim_value") else "?")
                for d in i.type.tensor_type.shape.dim]
        shapes[i.name] = dims
    return {"ops": op_counts(m), "opsets": opsets, "input_shapes": shapes,
            "size_bytes": os.path.getsize(path)}


# --------------------------------------------------------------------------- sklearn MLP
def train_mlp(tr_x, tr_y, te_x, te_y):
    from skl2onnx import to_onnx
    from skl2onnx.common.data_types import FloatTensorType
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.neural_network import MLPClassifier

    x_tr = to_model_input(tr_x, "flat64")
    x_te = to_model_input(te_x, "flat64")
    clf = MLPClassifier(hidden_layer_sizes=(32, 16), activation="relu", max_iter=300,
                        random_state=SEED)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        clf.fit(x_tr, tr_y)
    pred = clf.predict(x_te).astype(np.int64)
    proba = clf.predict_proba(x_te).astype(np.float32)
    acc = float((pred == te_y).mean())

    onx = to_onnx(clf, initial_types=[("input", FloatTensorType([None, 64]))],
                  target_opset={"": OPSET, "ai.onnx.ml": ML_OPSET})
    # skl2onnx emits opset_import in set order (varies with hash seed): sort it so the
    # file is byte-for-byte reproducible.
    imports = sorted(onx.opset_import, key=lambda o: o.domain)
    del onx.opset_import[:]
    onx.opset_import.extend(imports)
    path = os.path.join(HERE, "mlp_digits.onnx")
    onnx.save(onx, path)
    onnx.checker.check_model(onnx.load(path), full_check=True)

    sess = ort_session(path)
    out_names = [o.name for o in sess.get_outputs()]
    label, probs = sess.run(None, {"input": x_te})
    label = np.asarray(label, dtype=np.int64)
    if isinstance(probs, list):  # ZipMap -> list of {class: prob}
        probs = np.array([[d[k] for k in sorted(d)] for d in probs], dtype=np.float32)
    diff = float(np.abs(probs - proba).max())
    assert np.array_equal(label, pred), "ORT labels differ from sklearn predict()"
    assert diff < TOL, f"ORT probabilities differ from sklearn: {diff}"
    print(f"[mlp] test acc {acc:.4f}; ORT labels match; max |prob diff| {diff:.2e}")
    return acc, pred, out_names


# --------------------------------------------------------------------------- torch models
class DigitsCNN(nn.Module):
    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
            nn.Conv2d(8, 16, 3, stride=2, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
        )
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(16 * 4 * 4, 10)

    def forward(self, x):
        return self.fc(self.flatten(self.features(x)))


class MaxPoolCNN(nn.Module):
    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        )
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(16 * 2 * 2, 10)

    def forward(self, x):
        return self.fc(self.flatten(self.features(x)))


class BasicBlock(nn.Module):
    def __init__(self, cin, cout, stride):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        if stride != 1 or cin != cout:  # option B: projection shortcut
            self.shortcut = nn.Sequential(
                nn.Conv2d(cin, cout, 1, stride=stride, bias=False), nn.BatchNorm2d(cout))
        else:
            self.shortcut = nn.Identity()

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class ResNet20(nn.Module):
    def __init__(self, num_classes=10, n=3):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 16, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        layers, cin = [], 16
        for cout, stride in ((16, 1), (32, 2), (64, 2)):
            for b in range(n):
                layers.append(BasicBlock(cin, cout, stride if b == 0 else 1))
                cin = cout
        self.layers = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(64, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x):
        x = F.relu(self.bn1(self.conv1(x)))
        x = self.layers(x)
        return self.fc(self.flatten(self.pool(x)))


def torch_predict(model, x, bs=256):
    model.eval()
    outs = []
    with torch.no_grad():
        for i in range(0, len(x), bs):
            outs.append(model(torch.from_numpy(x[i:i + bs])).numpy())
    return np.concatenate(outs)


def train_torch(name, model, x_tr, y_tr, x_te, y_te, epochs, lr, batch_size=64):
    seed_everything(SEED)
    g = torch.Generator().manual_seed(SEED)
    xt, yt = torch.from_numpy(x_tr), torch.from_numpy(y_tr)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    steps_per_epoch = (len(xt) + batch_size - 1) // batch_size
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, epochs=epochs,
                                                steps_per_epoch=steps_per_epoch)
    t0 = time.time()
    for ep in range(epochs):
        loss = train_epoch(model, opt, sched, xt, yt, batch_size, g)
        acc = report_epoch(name, model, x_te, y_te, ep, epochs, loss, t0)
    model.eval()
    return acc


def train_epoch(model, opt, sched, xt, yt, batch_size, generator, prepare=None):
    """One epoch of minibatch cross-entropy in a seeded order; ``prepare`` (batch, generator)
    -> batch transforms each batch (augmentation, memory format). Returns the mean loss."""
    model.train()
    perm = torch.randperm(len(xt), generator=generator)
    total = 0.0
    for i in range(0, len(xt), batch_size):
        idx = perm[i:i + batch_size]
        batch = xt[idx] if prepare is None else prepare(xt[idx], generator)
        opt.zero_grad()
        loss = F.cross_entropy(model(batch), yt[idx])
        loss.backward()
        opt.step()
        sched.step()
        total += loss.item() * len(idx)
    return total / len(xt)


def report_epoch(name, model, x_te, y_te, ep, epochs, loss, t0):
    """Test accuracy after an epoch, printed with the loss and the elapsed time."""
    acc = float((torch_predict(model, x_te).argmax(1) == y_te).mean())
    print(f"[{name}] epoch {ep + 1}/{epochs} loss {loss:.4f} "
          f"test acc {acc:.4f} ({time.time() - t0:.1f}s)", flush=True)
    return acc


def export_torch(model, example, path):
    """Export with the legacy TorchScript exporter (dynamo=False).

    training=PRESERVE (model is in eval mode) plus do_constant_folding=False keeps
    every BatchNormalization as its own node instead of folding it into the Conv.
    """
    model.eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(
            model, (torch.from_numpy(example),), path,
            dynamo=False,
            opset_version=OPSET,
            input_names=["input"], output_names=["logits"],
            dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}},
            training=torch.onnx.TrainingMode.PRESERVE,
            do_constant_folding=False,
            export_params=True,
        )
    m = onnx.load(path)
    onnx.checker.check_model(m, full_check=True)
    bad = set(op_counts(m)) - ALLOWED_TORCH_OPS
    assert not bad, f"{path}: disallowed ops {bad}"
    return m


def validate_torch(name, model, path, x_te, y_te, expect_bn):
    m = onnx.load(path)
    ops = op_counts(m)
    n_bn = sum(isinstance(mm, nn.BatchNorm2d) for mm in model.modules())
    if expect_bn:
        assert ops.get("BatchNormalization", 0) == n_bn, (ops, n_bn)
    ref = torch_predict(model, x_te)
    sess = ort_session(path)
    got = sess.run(["logits"], {"input": x_te})[0]
    # Also check batch-1 execution on a few samples.
    for i in range(4):
        one = sess.run(["logits"], {"input": x_te[i:i + 1]})[0]
        assert np.abs(one - ref[i:i + 1]).max() < TOL
    diff = float(np.abs(got - ref).max())
    assert diff < TOL, f"{name}: ORT vs torch max abs diff {diff}"
    acc_torch = float((ref.argmax(1) == y_te).mean())
    acc_ort = float((got.argmax(1) == y_te).mean())
    assert acc_torch == acc_ort
    print(f"[{name}] ORT test acc {acc_ort:.4f}; max |logit diff| vs torch {diff:.2e}; "
          f"ops {ops}", flush=True)
    return acc_ort


def main():
    t_start = time.time()
    torch.set_num_threads(THREADS)
    seed_everything(SEED)

    tr_x, tr_y, te_x, te_y = make_split()
    print(f"train {tr_x.shape} test {te_x.shape}")

    entries = []

    # 1. sklearn MLP
    acc, mlp_pred, mlp_outputs = train_mlp(tr_x, tr_y, te_x, te_y)
    entries.append({"name": "mlp_digits", "file": "mlp_digits.onnx", "input_kind": "flat64",
                    "input_name": "input", "output_name": mlp_outputs[0],
                    "output_names": mlp_outputs, "test_accuracy": round(acc, 6),
                    "framework": "sklearn"})

    np.savez_compressed(
        DATA_FILE,
        test_images=te_x, test_labels=te_y,
        calib_images=tr_x[:N_CALIB], calib_labels=tr_y[:N_CALIB],
        mlp_sklearn_predict=mlp_pred,
    )
    print(f"wrote {DATA_FILE}")

    # 2-4. torch models
    specs = [
        ("cnn_digits", DigitsCNN, "img8", 30, 3e-3, True),
        ("resnet20_digits", ResNet20, "img32x3", 8, 3e-3, True),
        ("maxpool_digits", MaxPoolCNN, "img8", 40, 5e-3, False),
    ]
    for name, cls, kind, epochs, lr, has_bn in specs:
        t0 = time.time()
        seed_everything(SEED)
        model = cls()
        x_tr = to_model_input(tr_x, kind)
        x_te = to_model_input(te_x, kind)
        train_torch(name, model, x_tr, tr_y, x_te, te_y, epochs, lr)
        path = os.path.join(HERE, f"{name}.onnx")
        export_torch(model, x_te[:1], path)
        acc = validate_torch(name, model, path, x_te, te_y, has_bn)
        entries.append({"name": name, "file": f"{name}.onnx", "input_kind": kind,
                        "input_name": "input", "output_name": "logits",
                        "test_accuracy": round(acc, 6), "framework": "pytorch"})
        print(f"[{name}] done in {time.time() - t0:.1f}s", flush=True)

    with open(os.path.join(HERE, "models.json"), "w") as f:
        json.dump(entries, f, indent=2)
        f.write("\n")

    print("\nsummary")
    for e in entries:
        d = describe(os.path.join(HERE, e["file"]))
        print(f"  {e['file']}: acc {e['test_accuracy']:.4f} opsets {d['opsets']} "
              f"inputs {d['input_shapes']} size {d['size_bytes']} B")
        print(f"    ops {d['ops']}")
    print(f"total runtime {time.time() - t_start:.1f}s")


if __name__ == "__main__":
    main()
