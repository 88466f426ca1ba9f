"""Fixtures shared by the test folders."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image


@pytest.fixture(scope="module")
def one_thread():
    """Run a module single-threaded: per-op overhead dominates the tiny test nets, and two
    OpenMP threads on two busy cores can be 50x slower than one."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _image_folder(root: Path, n: int, size: int, labels: list[str]) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    with (root / "metadata.jsonl").open("w") as f:
        for i in range(n):
            image = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
            Image.fromarray(image).save(root / f"{i}.png")
            f.write(json.dumps({"file_name": f"{i}.png", "label": labels[i % len(labels)]}) + "\n")
    return root


@pytest.fixture(scope="session")
def image_folder():
    """``image_folder(root, n, size, labels)``: n random size x size RGB images written to
    ``root``, image i labelled labels[i % len(labels)] in metadata.jsonl (the imagefolder
    convention); returns root."""
    return _image_folder


CAPTIONS = ["red apple", "green apple", "blue car", "yellow star"]


@pytest.fixture(scope="module")
def captioned_folder(tmp_path_factory) -> Path:
    """16 random 16x16 RGB images, each with a caption (CAPTIONS) and a label, imagefolder
    style (metadata.jsonl)."""
    root = tmp_path_factory.mktemp("captioned")
    rng = np.random.default_rng(0)
    with (root / "metadata.jsonl").open("w") as f:
        for i in range(16):
            Image.fromarray(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)).save(
                root / f"{i}.png"
            )
            row = {"file_name": f"{i}.png", "text": CAPTIONS[i % 4], "label": i % 2}
            f.write(json.dumps(row) + "\n")
    return root
