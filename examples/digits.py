"""Deterministic split of scikit-learn's digits dataset and model-input transforms.

Only numpy and scikit-learn are needed here (no torch), so the exact model
inputs can be reproduced anywhere:

    from digits import load_split, to_model_input
    d = load_split()
    x = to_model_input(d["test_images"], "img32x3")   # (n, 3, 32, 32) float32
"""
from __future__ import annotations

import os

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
DATA_FILE = os.path.join(HERE, "digits_data.npz")

N_CALIB = 256
INPUT_KINDS = ("flat64", "img8", "img32x3")


def make_split():
    """Return (train_images, train_labels, test_images, test_labels).

    images: float32 (n, 1, 8, 8) with values in [0, 1] (digits / 16); labels int64.
    """
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    images = (digits.images.astype(np.float32) / np.float32(16.0)).reshape(-1, 1, 8, 8)
    labels = digits.target.astype(np.int64)
    tr_x, te_x, tr_y, te_y = train_test_split(
        images, labels, test_size=0.2, random_state=0, stratify=labels
    )
    return (
        np.ascontiguousarray(tr_x, dtype=np.float32),
        np.ascontiguousarray(tr_y, dtype=np.int64),
        np.ascontiguousarray(te_x, dtype=np.float32),
        np.ascontiguousarray(te_y, dtype=np.int64),
    )


def load_split(path: str = DATA_FILE) -> dict:
    """Read digits_data.npz (next to this file) into a dict of arrays.

    Keys: test_images, test_labels, calib_images, calib_labels, mlp_sklearn_predict.
    """
    with np.load(path) as z:
        return {k: z[k] for k in z.files}


def to_model_input(images: np.ndarray, kind: str) -> np.ndarray:
    """Convert (n, 1, 8, 8) float32 images to the input layout of a model.

    flat64  -> (n, 64)
    img8    -> (n, 1, 8, 8) unchanged
    img32x3 -> nearest-neighbour upsample x4 on both spatial axes, then 3 channels
               -> (n, 3, 32, 32)
    """
    images = np.asarray(images, dtype=np.float32)
    if images.ndim != 4 or images.shape[1:] != (1, 8, 8):
        raise ValueError(f"expected (n,1,8,8) images, got {images.shape}")
    if kind == "flat64":
        return np.ascontiguousarray(images.reshape(images.shape[0], 64), dtype=np.float32)
    if kind == "img8":
        return np.ascontiguousarray(images, dtype=np.float32)
    if kind == "img32x3":
        x = np.repeat(np.repeat(images, 4, axis=2), 4, axis=3)
        x = np.repeat(x, 3, axis=1)
        return np.ascontiguousarray(x, dtype=np.float32)
    raise ValueError(f"unknown input kind {kind!r}; expected one of {INPUT_KINDS}")
