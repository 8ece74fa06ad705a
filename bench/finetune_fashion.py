"""Fine-tuned low-degree activations on the Fashion-MNIST ResNet-20: accuracy before/after, time,
and what the fine-tuned model costs as an FHE and as a hybrid plan.

For each configuration METHOD:DEGREE[:RELU_BUDGET] (e.g. ``hermite:2``, ``quad:2``,
``quad:2:0.1``): fine-tune ``examples/resnet20_fashion.onnx`` on the 60,000 training images
(``picompile.finetune``; skipped with ``--reuse`` when the output model exists, its training
summary then comes from the model's metadata), then measure with onnxruntime on the full
10,000-image test split the accuracy of the original model, of the same polynomial form fitted
post-training (``epochs=0``: the calibrated initialisation) and of the fine-tuned model; compile
the fine-tuned model for ``--protocol fhe`` (predicted latency and bootstraps at 128-bit) and for
``--protocol hybrid`` (Flash quadratics where no ReLU is kept; predicted bytes and rounds).

Run: .venv/bin/python bench/finetune_fashion.py [--configs hermite:2 quad:2 quad:2:0.1]
     [--epochs 3] [--batch-size 64] [--out-dir examples/.finetuned] [--reuse]
(needs the ``train`` extra and ``make fashion-data``; about 25 minutes per configuration.)
"""

from __future__ import annotations

import argparse
import json
import time
import warnings
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from common import model_input

import fashion  # noqa: F401  (common puts examples/ on the path)
import picompile
from picompile.frontend import FINETUNE_METADATA_KEY
from picompile.report.facts import predicted_latency

MODEL = "resnet20_fashion"
CALIBRATION_SAMPLES = 512
#: Training images behind the post-training ("before") model: it is only calibrated.
BEFORE_SAMPLES = 4096


def onnx_accuracy(model: str | Path | onnx.ModelProto, x: np.ndarray, labels: np.ndarray
                  ) -> float:
    source = model.SerializeToString() if isinstance(model, onnx.ModelProto) else str(model)
    session = ort.InferenceSession(source, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    correct = 0
    for start in range(0, len(x), 1000):
        logits = session.run(None, {name: x[start:start + 1000]})[0]
        correct += int(np.sum(np.argmax(logits, axis=1) == labels[start:start + 1000]))
    return 100.0 * correct / len(x)


def parse(config: str) -> tuple[str, int, float | None]:
    parts = config.split(":")
    return parts[0], int(parts[1]), float(parts[2]) if len(parts) > 2 else None


def plan_costs(path: Path, calib: dict[str, np.ndarray], budget: float | None) -> dict:
    costs: dict = {}
    fhe = picompile.compile(path, calib=calib)
    if fhe.ckks is not None and fhe.ckks.runnable:
        seconds, _ = predicted_latency(fhe)
        boot = fhe.ckks.bootstrapping
        costs["fhe"] = (f"{seconds:.0f} s, {boot.count if boot else 0} bootstraps"
                        if seconds is not None else "—")
    else:
        costs["fhe"] = "not runnable (ReLUs kept)" if budget else "not runnable"
    quadratic = "beaver" if budget else "flash"
    hybrid = picompile.compile(path, calib=calib, protocol="hybrid",
                               quadratic_protocol=quadratic)
    predicted = hybrid.bfv.predicted
    costs["hybrid"] = (f"{quadratic}: {predicted['online_bytes'] / 2**20:.1f} MiB online, "
                       f"{predicted['offline_bytes'] / 2**20:.1f} MiB offline, "
                       f"{predicted['online_rounds']} rounds")
    return costs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configs", nargs="+", default=["hermite:2", "quad:2", "quad:2:0.1"])
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--out-dir", default="examples/.finetuned")
    parser.add_argument("--reuse", action="store_true",
                        help="measure existing fine-tuned models instead of training them")
    args = parser.parse_args()
    warnings.simplefilter("ignore", RuntimeWarning)
    print(f"command: .venv/bin/python bench/finetune_fashion.py --configs "
          f"{' '.join(args.configs)} --epochs {args.epochs} --batch-size {args.batch_size} "
          f"--lr {args.lr} --out-dir {args.out_dir}" + (" --reuse" if args.reuse else ""))
    images, labels = fashion.load("train")
    train = {"input": model_input(MODEL, images), "labels": labels.astype(np.int64)}
    test_images, test_labels = fashion.load("test")
    x_test = model_input(MODEL, test_images)
    calib = {"input": train["input"][:CALIBRATION_SAMPLES]}
    original = Path(f"examples/{MODEL}.onnx")
    print(f"{MODEL}: ReLU model {onnx_accuracy(original, x_test, test_labels):.2f} % on "
          f"{len(test_labels)} test images (onnxruntime)")
    out_dir = Path(args.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    print(f"{'method':>8} {'deg':>3} {'ReLU budget':>11} {'before':>7} {'after':>7} "
          f"{'minutes':>7}  FHE plan (predicted) | hybrid plan (predicted)")
    for config in args.configs:
        method, degree, budget = parse(config)
        name = f"{MODEL}.{method}{degree}" + (f".relu{budget:g}" if budget is not None else "")
        output = out_dir / f"{name}.onnx"
        options = {"method": method, "degree": degree, "relu_budget": budget}
        subset = {k: v[:BEFORE_SAMPLES] for k, v in train.items()}  # only calibrates
        initial = picompile.finetune(original, subset, epochs=0, **options)
        before = onnx_accuracy(initial.model, x_test, test_labels)
        if not (args.reuse and output.exists()):
            start = time.perf_counter()
            picompile.finetune(original, train, output, epochs=args.epochs,
                               batch_size=args.batch_size, lr=args.lr, progress=True, **options)
            print(f"  trained {name} in {(time.perf_counter() - start) / 60:.1f} min",
                  flush=True)
        proto = onnx.load(output)
        summary = json.loads({p.key: p.value for p in proto.metadata_props}
                             [FINETUNE_METADATA_KEY])
        after = onnx_accuracy(proto, x_test, test_labels)
        costs = plan_costs(output, calib, budget)
        kept = (f"{summary['relus_kept']}/{summary['relus_total']}"
                if "relus_kept" in summary else "—")
        print(f"{method:>8} {degree:>3} {kept:>11} {before:7.2f} {after:7.2f} "
              f"{summary['total_seconds'] / 60:7.1f}  {costs['fhe']} | {costs['hybrid']}",
              flush=True)


if __name__ == "__main__":
    main()
