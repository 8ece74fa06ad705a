"""Fashion-MNIST from Debian's package ``dataset-fashion-mnist``: IDX parsing, the committed
subset, and model-input transforms.

Reads: the four original IDX files (``train-images-idx3-ubyte.gz`` …, gzipped or not) from
``/usr/share/datasets/fashion-mnist`` (``$PICOMPILE_FASHION_MNIST`` overrides the folder), or
the committed subset ``fashion_subset.npz`` next to this file (1,000 test images and 512
calibration images from the training split, uint8, with labels) so that tests need no apt.
Writes: numpy arrays; ``write_subset`` (re)writes the subset from the full data.

No download code: a missing package is a :class:`FashionMnistError` that names
``apt-get install dataset-fashion-mnist``. Only numpy is needed::

    from fashion import load_subset, to_model_input
    d = load_subset()
    x = to_model_input(d["test_images"], "img32x3")   # (n, 3, 32, 32) float32
"""
from __future__ import annotations

import gzip
import os
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
SUBSET_FILE = HERE / "fashion_subset.npz"
PACKAGE = "dataset-fashion-mnist"
DEFAULT_FOLDER = Path("/usr/share/datasets/fashion-mnist")
FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
SPLIT_SIZES = {"train": 60_000, "test": 10_000}
CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker",
           "Bag", "Ankle boot")
SUBSET_TEST = 1000
SUBSET_CALIB = 512
SUBSET_SEED = 0
INPUT_KINDS = ("flat784", "img28", "img32x3")
#: IDX element types (the third byte of the magic number) → numpy dtype.
IDX_TYPES = {0x08: np.dtype(np.uint8), 0x09: np.dtype(np.int8), 0x0B: np.dtype(">i2"),
             0x0C: np.dtype(">i4"), 0x0D: np.dtype(">f4"), 0x0E: np.dtype(">f8")}


class FashionMnistError(RuntimeError):
    """The Fashion-MNIST files are missing or not valid IDX files."""


def data_folder() -> Path:
    return Path(os.environ.get("PICOMPILE_FASHION_MNIST", DEFAULT_FOLDER))


def read_idx(path: str | Path) -> np.ndarray:
    """An IDX file (optionally gzipped) as a numpy array of its declared type and shape."""
    path = Path(path)
    try:
        raw = path.read_bytes()
        if raw[:2] == b"\x1f\x8b":
            raw = gzip.decompress(raw)
    except (OSError, EOFError) as exc:
        raise FashionMnistError(f"cannot read {path}: {exc}") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in IDX_TYPES:
        raise FashionMnistError(f"{path} is not an IDX file (bad magic number)")
    dtype, rank = IDX_TYPES[raw[2]], raw[3]
    header = 4 + 4 * rank
    if len(raw) < header:
        raise FashionMnistError(f"{path} is truncated (its header is incomplete)")
    shape = tuple(int(d) for d in np.frombuffer(raw, dtype=">u4", count=rank, offset=4))
    count = int(np.prod(shape, dtype=np.int64))
    if len(raw) != header + count * dtype.itemsize:
        raise FashionMnistError(f"{path} holds {len(raw) - header} data bytes, its header "
                                f"declares {count * dtype.itemsize} (shape {shape})")
    return np.frombuffer(raw, dtype=dtype, offset=header).reshape(shape).astype(
        dtype.newbyteorder("="))


def _find(folder: Path, stem: str) -> Path:
    for name in (stem + ".gz", stem):
        if (folder / name).is_file():
            return folder / name
    raise FashionMnistError(
        f"Fashion-MNIST file {stem}(.gz) not found in {folder}: install Debian's package with "
        f"`apt-get install {PACKAGE}` (or set PICOMPILE_FASHION_MNIST to the folder holding the "
        "four original IDX files)")


def load(split: str, folder: str | Path | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(images uint8 (n, 28, 28), labels uint8 (n,)) of the ``train`` or ``test`` split."""
    if split not in FILES:
        raise ValueError(f"unknown split {split!r}: use train or test")
    folder = Path(folder) if folder is not None else data_folder()
    image_stem, label_stem = FILES[split]
    images, labels = read_idx(_find(folder, image_stem)), read_idx(_find(folder, label_stem))
    if images.ndim != 3 or images.shape[1:] != (28, 28) or images.dtype != np.uint8:
        raise FashionMnistError(f"{split} images have shape {images.shape} {images.dtype}, "
                                "expected (n, 28, 28) uint8")
    if labels.shape != (images.shape[0],) or labels.dtype != np.uint8 or labels.max() > 9:
        raise FashionMnistError(f"{split} labels do not match the images (shape "
                                f"{labels.shape}, classes up to {labels.max()})")
    return images, labels


def subset_indices(split: str, count: int) -> np.ndarray:
    """The rows of ``split`` the committed subset holds (a seeded permutation's first rows)."""
    rng = np.random.default_rng(SUBSET_SEED + (split == "test"))
    return np.sort(rng.permutation(SPLIT_SIZES[split])[:count])


def write_subset(path: str | Path = SUBSET_FILE, folder: str | Path | None = None) -> Path:
    """Write the subset (from the full data) with its row indices; atomic."""
    test_images, test_labels = load("test", folder)
    train_images, train_labels = load("train", folder)
    test_rows, calib_rows = subset_indices("test", SUBSET_TEST), subset_indices("train",
                                                                                SUBSET_CALIB)
    path = Path(path)
    partial = path.with_suffix(".partial.npz")
    np.savez_compressed(partial, test_images=test_images[test_rows],
                        test_labels=test_labels[test_rows], test_rows=test_rows,
                        calib_images=train_images[calib_rows],
                        calib_labels=train_labels[calib_rows], calib_rows=calib_rows)
    os.replace(partial, path)
    return path


def load_subset(path: str | Path = SUBSET_FILE) -> dict[str, np.ndarray]:
    """The committed subset: test_images/test_labels (1,000), calib_images/calib_labels (512)."""
    with np.load(path) as data:
        return {key: data[key] for key in data.files}


def to_model_input(images: np.ndarray, kind: str) -> np.ndarray:
    """uint8 (n, 28, 28) images → float32 model inputs in [0, 1].

    flat784 → (n, 784); img28 → (n, 1, 28, 28); img32x3 → zero-padded by 2 pixels on each side
    to 32×32 and replicated to 3 channels → (n, 3, 32, 32) (the CIFAR-style ResNet input).
    """
    images = np.asarray(images)
    if images.ndim != 3 or images.shape[1:] != (28, 28):
        raise ValueError(f"expected (n, 28, 28) images, got {images.shape}")
    x = images.astype(np.float32) / np.float32(255.0)
    if kind == "flat784":
        return np.ascontiguousarray(x.reshape(len(x), 784))
    if kind == "img28":
        return np.ascontiguousarray(x[:, None])
    if kind == "img32x3":
        padded = np.pad(x, ((0, 0), (2, 2), (2, 2)))
        return np.ascontiguousarray(np.repeat(padded[:, None], 3, axis=1))
    raise ValueError(f"unknown input kind {kind!r}; expected one of {INPUT_KINDS}")


if __name__ == "__main__":
    print(f"wrote {write_subset()}")
