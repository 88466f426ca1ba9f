"""Grids of class-conditional samples: one row per class, whatever the number of images."""

from __future__ import annotations

import pytest
import torch

from pixdiff.images import grid_rows, make_grid

PAD = 2


def numbered(n: int, size: int = 4) -> torch.Tensor:
    """n one-channel images, image i filled with the value i / 1000 (never the padding's 1)."""
    return (
        (torch.arange(n, dtype=torch.float32) / 1000).reshape(n, 1, 1, 1).expand(n, 1, size, size)
    )


def cells(grid: torch.Tensor, size: int = 4) -> list[list[int | None]]:
    """The image index in every cell of a make_grid output (None: a blank, white cell)."""
    _, height, width = grid.shape
    rows, cols = (height - PAD) // (size + PAD), (width - PAD) // (size + PAD)
    out = []
    for r in range(rows):
        row = []
        for c in range(cols):
            value = grid[0, PAD + r * (size + PAD), PAD + c * (size + PAD)].item()
            row.append(None if value == 1 else round(value * 1000))
        out.append(row)
    return out


def layout(labels: list) -> list[list[int | None]]:
    x = numbered(len(labels))
    tiles, nrow = grid_rows(x, labels)
    return cells(make_grid(tiles, nrow=nrow))


@pytest.mark.parametrize("n", [10, 20, 25])
def test_all_classes_give_one_row_per_class(n):
    labels = (torch.arange(n) % 10).tolist()  # what --class all draws
    grid = layout(labels)
    assert len(grid) == 10  # one row per class, top to bottom 0..9
    for k, row in enumerate(grid):
        filled = [i for i in row if i is not None]
        assert filled == [i for i in range(n) if i % 10 == k]  # only class k, in order
        assert row == filled + [None] * (len(row) - len(filled))  # blanks only at the end
    assert len(grid[0]) == -(-n // 10)


def test_a_class_list_gives_rows_in_order_of_first_appearance():
    labels = ["Bag", "Bag", "Sneaker", "Dress", "Sneaker", "Bag"]
    assert layout(labels) == [[0, 1, 5], [2, 4, None], [3, None, None]]


def test_tensor_labels_are_keys_by_value():
    x = numbered(6)
    tiles, nrow = grid_rows(x, torch.tensor([1, 0, 1, 0, 1, 0]))
    assert nrow == 3 and cells(make_grid(tiles, nrow=nrow)) == [[0, 2, 4], [1, 3, 5]]


def test_one_class_keeps_the_square_grid():
    x = numbered(9)
    tiles, nrow = grid_rows(x, [7] * 9)
    assert nrow is None and torch.equal(tiles, x)
    assert cells(make_grid(tiles)) == [[0, 1, 2], [3, 4, 5], [6, 7, 8]]


def test_a_key_per_image_is_required():
    with pytest.raises(ValueError, match="3 keys, 4 images"):
        grid_rows(numbered(4), [0, 1, 0])
