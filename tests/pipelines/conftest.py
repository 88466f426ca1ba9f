"""Shared fixtures for the pipeline tests: a tiny class-conditional base run (8x8) and a tiny
super-resolution run (8 -> 16) on the same 16 random labelled images, 2 steps each."""

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pixdiff.cli.main import main

TINY = [
    "--preset", "unet-tiny", "--batch-size", "8", "--steps", "2", "--no-progress",
    "--set", "run.sample_every=0", "--set", "run.threads=1", "--set", "optim.warmup_steps=1",
    "--set", "model.overrides.attention_resolutions=[8]",
]  # fmt: skip


@pytest.fixture(autouse=True, scope="module")
def _one_thread(one_thread):
    """Every module here runs single-threaded (``one_thread``, tests/conftest.py)."""


@pytest.fixture(scope="session")
def sr_runs(tmp_path_factory, image_folder) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("cascade")
    data = image_folder(root / "imgs", 16, 16, ["cat", "dog"])
    runs = {"base": root / "base", "sr": root / "sr", "data": data}
    train = ["train", "--data", str(data), *TINY]
    assert main([*train, "--out", str(runs["base"]), "--image-size", "8"]) == 0
    sr = ["--out", str(runs["sr"]), "--image-size", "16", "--sr-from", "8"]
    assert main([*train, *sr, "--set", "run.sample_every=2"]) == 0
    return runs


def _save_png(path: Path, size: int, mode: str = "RGB", seed: int = 0) -> Path:
    channels = {"RGB": 3, "RGBA": 4, "L": 1}[mode]
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 256, (size, size, channels), dtype=np.uint8)
    Image.fromarray(pixels[..., 0] if channels == 1 else pixels, mode=mode).save(path)
    return path


@pytest.fixture
def png():
    """``png(path, size, mode="RGB", seed=0)``: write a random size x size image, return path."""
    return _save_png


@pytest.fixture
def tiny_train_flags() -> list[str]:
    """The flags of the tiny runs above (unet-tiny, 2 steps, one thread)."""
    return list(TINY)
