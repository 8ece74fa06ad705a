"""Fashion-MNIST loader (examples/fashion.py): IDX parsing against files written here, the
committed subset, the clear error when Debian's package is missing, model-input transforms."""

from __future__ import annotations

import gzip
import json
import struct

import numpy as np
import pytest

import fashion  # examples/fashion.py (conftest puts examples/ on the path)
import picompile
from conftest import EXAMPLES
from picompile.reference import reference_outputs


def write_idx(path, array: np.ndarray, code: int = 0x08, compress: bool = True) -> None:
    header = bytes([0, 0, code, array.ndim]) + struct.pack(">" + "I" * array.ndim, *array.shape)
    raw = header + array.astype(array.dtype.newbyteorder(">")).tobytes()
    path.write_bytes(gzip.compress(raw) if compress else raw)


def fake_dataset(folder, count: int = 5) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (count, 28, 28), dtype=np.uint8)
    labels = rng.integers(0, 10, count, dtype=np.uint8)
    for split in ("train", "test"):
        image_stem, label_stem = fashion.FILES[split]
        write_idx(folder / (image_stem + ".gz"), images)
        write_idx(folder / label_stem, labels, compress=False)  # plain IDX works too
    return images, labels


def test_idx_files_parse_to_their_declared_shape_and_type(tmp_path):
    images, labels = fake_dataset(tmp_path)
    loaded_images, loaded_labels = fashion.load("test", tmp_path)
    np.testing.assert_array_equal(loaded_images, images)
    np.testing.assert_array_equal(loaded_labels, labels)
    floats = np.linspace(-1, 1, 6, dtype=np.float32).reshape(2, 3)
    write_idx(tmp_path / "floats", floats, code=0x0D)
    np.testing.assert_array_equal(fashion.read_idx(tmp_path / "floats"), floats)


def test_bad_idx_files_are_named_errors(tmp_path):
    fake_dataset(tmp_path)
    path = tmp_path / "t10k-labels-idx1-ubyte"
    path.write_bytes(path.read_bytes()[:-1])
    with pytest.raises(fashion.FashionMnistError, match="header declares"):
        fashion.load("test", tmp_path)
    path.write_bytes(b"\x01\x02\x03")
    with pytest.raises(fashion.FashionMnistError, match="not an IDX file"):
        fashion.read_idx(path)
    path.write_bytes(b"")
    with pytest.raises(fashion.FashionMnistError, match="not an IDX file"):
        fashion.read_idx(path)
    (tmp_path / "t10k-images-idx3-ubyte.gz").write_bytes(b"\x1f\x8bnot gzip")
    with pytest.raises(fashion.FashionMnistError, match="cannot read"):
        fashion.read_idx(tmp_path / "t10k-images-idx3-ubyte.gz")


def test_missing_package_names_the_apt_command(tmp_path, monkeypatch):
    monkeypatch.setenv("PICOMPILE_FASHION_MNIST", str(tmp_path / "nowhere"))
    with pytest.raises(fashion.FashionMnistError,
                       match="apt-get install dataset-fashion-mnist"):
        fashion.load("train")


def test_committed_subset():
    data = fashion.load_subset()
    assert data["test_images"].shape == (1000, 28, 28) and data["test_images"].dtype == np.uint8
    assert data["calib_images"].shape == (512, 28, 28)
    for split in ("test", "calib"):
        labels = data[f"{split}_labels"]
        assert labels.dtype == np.uint8 and set(np.unique(labels)) == set(range(10))
    np.testing.assert_array_equal(data["test_rows"], fashion.subset_indices("test", 1000))
    np.testing.assert_array_equal(data["calib_rows"], fashion.subset_indices("train", 512))


@pytest.mark.skipif(not fashion.DEFAULT_FOLDER.is_dir(),
                    reason="Debian's dataset-fashion-mnist is not installed")
def test_subset_equals_the_rows_of_the_installed_data():
    data = fashion.load_subset()
    images, labels = fashion.load("test")
    assert images.shape == (10_000, 28, 28)
    np.testing.assert_array_equal(images[data["test_rows"]], data["test_images"])
    np.testing.assert_array_equal(labels[data["test_rows"]], data["test_labels"])


def test_model_inputs():
    images = fashion.load_subset()["test_images"][:4]
    flat = fashion.to_model_input(images, "flat784")
    assert flat.shape == (4, 784) and flat.dtype == np.float32 and flat.max() <= 1.0
    padded = fashion.to_model_input(images, "img32x3")
    assert padded.shape == (4, 3, 32, 32)
    np.testing.assert_array_equal(padded[:, 1, 2:30, 2:30], images / np.float32(255.0))
    assert not padded[:, :, :2].any() and not padded[:, :, :, 30:].any()
    np.testing.assert_array_equal(padded[:, 0], padded[:, 2])
    with pytest.raises(ValueError, match="input kind"):
        fashion.to_model_input(images, "img64")


@pytest.mark.parametrize("entry", json.loads((EXAMPLES / "fashion_models.json").read_text()),
                         ids=lambda e: e["name"])
def test_fashion_models_compile_and_match_onnxruntime(entry):
    """The committed Fashion-MNIST models: the plain plan equals onnxruntime on the subset, and
    the subset's accuracy is near the recorded accuracy on the full test split."""
    data = fashion.load_subset()
    x = fashion.to_model_input(data["test_images"][:300], entry["input_kind"])
    model = EXAMPLES / entry["file"]
    logits = picompile.run(picompile.compile(model), x)[entry["output_name"]]
    expected = reference_outputs(model, {entry["input_name"]: x})[entry["output_name"]]
    np.testing.assert_allclose(logits, expected, rtol=1e-4, atol=1e-4)
    accuracy = np.mean(np.argmax(logits, 1) == data["test_labels"][:300])
    assert abs(accuracy - entry["test_accuracy"]) < 0.05
