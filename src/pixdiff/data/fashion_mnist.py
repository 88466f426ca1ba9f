"""Fashion-MNIST (Xiao et al. 2017) from the IDX files of the Debian `dataset-fashion-mnist`.

The IDX format (LeCun et al., http://yann.lecun.com/exdb/mnist/): a big-endian header of two
zero bytes, a type code, the number of dimensions, one uint32 per dimension, then the data.
"""

from __future__ import annotations

import gzip
import struct
import zlib
from pathlib import Path
from typing import Literal

import numpy as np
import torch

from pixdiff.data.image_set import ImageSet

DEFAULT_ROOT = Path("/usr/share/datasets/fashion-mnist")
CLASS_NAMES = [
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
]  # fmt: skip
INSTALL_HINT = "sudo apt-get install dataset-fashion-mnist"
_REINSTALL = (
    "if it came from dataset-fashion-mnist, "
    "`sudo apt-get install --reinstall dataset-fashion-mnist` restores it"
)

_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
# IDX type code -> big-endian numpy dtype
_IDX_DTYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def parse_idx(data: bytes, *, source: str = "<bytes>") -> np.ndarray:
    """Decode one IDX blob into an array; ``source`` names the file in error messages."""
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] not in _IDX_DTYPES:
        raise ValueError(
            f"{source}: not an IDX file (bad magic number {data[:4].hex() or 'none'}); "
            f"it is corrupt; {_REINSTALL}"
        )
    dtype, ndim = np.dtype(_IDX_DTYPES[data[2]]), data[3]
    header = 4 + 4 * ndim
    if len(data) < header:
        raise ValueError(f"{source}: IDX header is truncated; {_REINSTALL}")
    shape = struct.unpack(f">{ndim}I", data[4:header])
    expected = header + int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if len(data) != expected:
        raise ValueError(
            f"{source}: IDX header promises shape {shape} ({expected} bytes) but the file has "
            f"{len(data)} bytes: it is truncated or corrupt; {_REINSTALL}"
        )
    array = np.frombuffer(data, dtype=dtype, offset=header).reshape(shape)
    return array.astype(dtype.newbyteorder("="), copy=True)  # writable, native byte order


def read_idx(path: str | Path) -> np.ndarray:
    """Read an IDX file, gzip-compressed (``.gz``) or raw, naming the file on any failure."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise FileNotFoundError(f"{path} not found; `{INSTALL_HINT}` installs it") from None
    except OSError as err:
        raise ValueError(f"{path}: cannot read ({err.strerror or err})") from None
    if data[:2] == b"\x1f\x8b":  # gzip magic, whatever the file is called
        try:
            data = gzip.decompress(data)
        except (EOFError, OSError, zlib.error) as err:
            raise ValueError(
                f"{path}: cannot decompress ({err}): the file is truncated or corrupt; {_REINSTALL}"
            ) from None
    return parse_idx(data, source=str(path))


def _find(root: Path, stem: str) -> Path:
    """``root/stem.gz`` or ``root/stem``, else a FileNotFoundError with the install command."""
    for candidate in (root / f"{stem}.gz", root / stem):
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(
        f"Fashion-MNIST file {stem}.gz not found in {root}; `{INSTALL_HINT}` installs it "
        f"(or pass root= a folder holding the four IDX files)"
    )


def _check(images: np.ndarray, labels: np.ndarray, image_path: Path, label_path: Path) -> None:
    """Raise if the image/label arrays are not a consistent Fashion-MNIST split."""
    if images.dtype != np.uint8 or images.ndim != 3 or images.shape[1:] != (28, 28):
        raise ValueError(
            f"{image_path}: expected uint8 images of shape (N, 28, 28), "
            f"got {images.dtype} {images.shape}"
        )
    if labels.dtype != np.uint8 or labels.ndim != 1 or len(labels) != len(images):
        raise ValueError(
            f"{label_path}: expected {len(images)} uint8 labels to match {image_path.name}, "
            f"got {labels.dtype} {labels.shape}"
        )
    if len(labels) and labels.max() >= len(CLASS_NAMES):
        raise ValueError(f"{label_path}: label {labels.max()} outside 0..{len(CLASS_NAMES) - 1}")


def load_fashion_mnist(
    split: Literal["train", "test"] = "train", *, root: str | Path = DEFAULT_ROOT
) -> ImageSet:
    """Fashion-MNIST ``split`` (60000 train / 10000 test) as uint8 (N, 1, 28, 28) with labels."""
    if split not in _FILES:
        raise ValueError(f"unknown Fashion-MNIST split {split!r}; use 'train' or 'test'")
    root = Path(root)
    image_path, label_path = (_find(root, stem) for stem in _FILES[split])
    images, labels = read_idx(image_path), read_idx(label_path)
    _check(images, labels, image_path, label_path)
    return ImageSet(
        images=torch.from_numpy(images).unsqueeze(1),
        labels=torch.from_numpy(labels.astype(np.int64)),
        class_names=list(CLASS_NAMES),
        name=f"fashion-mnist-{split}",
    )
