"""`pixdiff sample --class all`: grid.png has one row per class, whatever -n is."""

import numpy as np
import pytest
from PIL import Image

from pixdiff.cli.main import main

pytestmark = pytest.mark.usefixtures("one_thread")

SIZE, PAD, SCALE = 28, 2, 2  # the shipped Fashion-MNIST model; grid.png is drawn at 2x


def cell(grid: np.ndarray, row: int, col: int) -> np.ndarray:
    """The image in a cell of grid.png, back at 1x."""
    top, left = (PAD + row * (SIZE + PAD)) * SCALE, (PAD + col * (SIZE + PAD)) * SCALE
    return grid[top : top + SIZE * SCALE : SCALE, left : left + SIZE * SCALE : SCALE]


@pytest.mark.parametrize("n", [10, 25])
def test_class_all_draws_one_row_per_class(n, tmp_path):
    out = tmp_path / "all"
    argv = ["sample", "--class", "all", "-n", str(n), "--steps", "1", "--no-progress"]
    assert main([*argv, "--out", str(out)]) == 0
    grid = np.asarray(Image.open(out / "grid.png"))
    per_row = -(-n // 10)
    assert grid.shape == tuple(SCALE * (PAD + k * (SIZE + PAD)) for k in (10, per_row))
    for i in range(n):  # image i has class i % 10: row i % 10, column i // 10
        image = np.asarray(Image.open(out / f"{i:06d}.png"))
        assert np.array_equal(cell(grid, i % 10, i // 10), image), i
    for row in range(n % 10 or 10, 10):  # the classes with one image fewer end in a blank
        assert (cell(grid, row, per_row - 1) == 255).all()
