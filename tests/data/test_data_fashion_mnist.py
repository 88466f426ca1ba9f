"""Fashion-MNIST: the IDX parser on hand-written files, and the real Debian dataset."""

import gzip
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from pixdiff.data import load_dataset
from pixdiff.data.fashion_mnist import (
    CLASS_NAMES,
    DEFAULT_ROOT,
    load_fashion_mnist,
    parse_idx,
    read_idx,
)


def idx_bytes(array: np.ndarray) -> bytes:
    """Encode ``array`` as IDX (big-endian), independently of the parser under test."""
    code = {np.uint8: 0x08, np.int32: 0x0C, np.float32: 0x0D}[array.dtype.type]
    header = struct.pack(">BBBB", 0, 0, code, array.ndim)
    header += struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.astype(array.dtype.newbyteorder(">")).tobytes()


def write_split(root: Path, prefix: str, images: np.ndarray, labels: np.ndarray) -> None:
    root.mkdir(parents=True, exist_ok=True)
    (root / f"{prefix}-images-idx3-ubyte.gz").write_bytes(gzip.compress(idx_bytes(images)))
    (root / f"{prefix}-labels-idx1-ubyte.gz").write_bytes(gzip.compress(idx_bytes(labels)))


def test_idx_round_trip_all_types(tmp_path):
    rng = np.random.default_rng(0)
    arrays = [
        rng.integers(0, 256, (3, 4, 5), dtype=np.uint8),
        rng.integers(-(2**31), 2**31, (7,), dtype=np.int32),
        rng.standard_normal((2, 3)).astype(np.float32),
    ]
    for i, array in enumerate(arrays):
        raw, gz = tmp_path / f"a{i}.idx", tmp_path / f"a{i}.idx.gz"
        raw.write_bytes(idx_bytes(array))
        gz.write_bytes(gzip.compress(idx_bytes(array)))
        for path in (raw, gz):
            out = read_idx(path)
            assert out.dtype == array.dtype.newbyteorder("=") and out.flags.writeable
            np.testing.assert_array_equal(out, array)


def test_truncated_idx_names_the_file(tmp_path):
    data = idx_bytes(np.zeros((4, 28, 28), np.uint8))
    raw = tmp_path / "short-images-idx3-ubyte"
    raw.write_bytes(data[:-10])
    with pytest.raises(ValueError, match=r"short-images-idx3-ubyte.*truncated"):
        read_idx(raw)
    gz = tmp_path / "short-images-idx3-ubyte.gz"
    gz.write_bytes(gzip.compress(data)[:-20])
    with pytest.raises(ValueError, match=r"short-images-idx3-ubyte\.gz.*decompress"):
        read_idx(gz)


def test_bad_magic_and_short_header():
    with pytest.raises(ValueError, match="x.idx: not an IDX file"):
        parse_idx(b"\x89PNG\r\n\x1a\n", source="x.idx")
    with pytest.raises(ValueError, match="x.idx: IDX header is truncated"):
        parse_idx(bytes([0, 0, 8, 3, 0, 0]), source="x.idx")


def test_load_split_from_custom_root(tmp_path):
    images = np.arange(5 * 28 * 28, dtype=np.uint8).reshape(5, 28, 28)
    write_split(tmp_path, "t10k", images, np.array([0, 9, 3, 3, 1], np.uint8))
    data = load_fashion_mnist("test", root=tmp_path)
    assert data.images.shape == (5, 1, 28, 28) and data.images.dtype == torch.uint8
    assert torch.equal(data.images[:, 0], torch.from_numpy(images))
    assert data.labels.tolist() == [0, 9, 3, 3, 1] and data.labels.dtype == torch.int64
    assert data.class_names == CLASS_NAMES and data.name == "fashion-mnist-test"


def test_inconsistent_split_raises(tmp_path):
    write_split(tmp_path, "t10k", np.zeros((5, 28, 28), np.uint8), np.zeros(4, np.uint8))
    with pytest.raises(ValueError, match="t10k-labels-idx1-ubyte.gz: expected 5 uint8 labels"):
        load_fashion_mnist("test", root=tmp_path)
    write_split(tmp_path, "t10k", np.zeros((2, 28, 28), np.uint8), np.array([0, 10], np.uint8))
    with pytest.raises(ValueError, match="label 10 outside"):
        load_fashion_mnist("test", root=tmp_path)


def test_missing_dataset_says_how_to_install(tmp_path):
    with pytest.raises(FileNotFoundError, match="sudo apt-get install dataset-fashion-mnist"):
        load_fashion_mnist("train", root=tmp_path / "nowhere")
    with pytest.raises(ValueError, match="use 'train' or 'test'"):
        load_fashion_mnist("val", root=tmp_path)


needs_dataset = pytest.mark.skipif(
    not (DEFAULT_ROOT / "t10k-images-idx3-ubyte.gz").is_file(),
    reason="Debian package dataset-fashion-mnist is not installed",
)


@needs_dataset
@pytest.mark.parametrize(("split", "n"), [("train", 60000), ("test", 10000)])
def test_real_fashion_mnist(split, n):
    data = load_fashion_mnist(split)
    assert data.images.shape == (n, 1, 28, 28) and data.images.dtype == torch.uint8
    assert torch.equal(data.labels.bincount(), torch.full((10,), n // 10))
    assert data.num_classes == 10
    assert 60 < data.images.float().mean() < 90  # mostly dark background, bright garments


@needs_dataset
def test_load_dataset_resizes_and_converts():
    data = load_dataset("fashion-mnist", image_size=16, channels=3, split="test")
    assert data.images.shape == (10000, 3, 16, 16)
    assert torch.equal(data.images[:, 0], data.images[:, 2])


def test_load_dataset_all_is_train_then_test_and_bad_split_is_named():
    data = load_dataset("fashion-mnist", image_size=28, split="all")
    assert len(data) == 70000 and data.name == "fashion-mnist-all"
    with pytest.raises(ValueError, match="valid splits are train, test, all"):
        load_dataset("fashion-mnist", image_size=28, split="val")
