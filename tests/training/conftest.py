"""Shared fixtures for the training tests."""

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

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
