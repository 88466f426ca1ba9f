"""Images in and out: model space [-1, 1] NCHW floats to PNG files, grids and GIFs, and input
images and masks read for editing and upscaling."""

from __future__ import annotations

import io
import math
import warnings
from collections.abc import Hashable, Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from pixdiff.data.folder import open_image, to_mode
from pixdiff.data.image_set import from_model_space, to_model_space
from pixdiff.files import atomic_write


def make_grid(images: Tensor, *, nrow: int | None = None, pad: int = 2) -> Tensor:
    """Tile (N, C, H, W) images into one (C, H', W') image, ``nrow`` per row, white padding."""
    n, c, h, w = images.shape
    nrow = nrow or math.ceil(math.sqrt(n))
    rows = math.ceil(n / nrow)
    grid = images.new_ones(c, rows * (h + pad) + pad, nrow * (w + pad) + pad)
    for i in range(n):
        r, k = divmod(i, nrow)
        top, left = pad + r * (h + pad), pad + k * (w + pad)
        grid[:, top : top + h, left : left + w] = images[i]
    return grid


def grid_rows(images: Tensor, keys: Sequence[Hashable] | Tensor) -> tuple[Tensor, int | None]:
    """Cells and ``nrow`` for :func:`make_grid` with one row per distinct key (a class id or a
    prompt), in order of first appearance, each row that key's images in their order; shorter
    rows end in blank (white) cells. A single key gives the cells unchanged and nrow None
    (the square grid). images: (N, C, H, W); keys: N of them."""
    keys = keys.tolist() if isinstance(keys, Tensor) else list(keys)
    if len(keys) != len(images):
        raise ValueError(f"need one grid-row key per image: {len(keys)} keys, {len(images)} images")
    groups: dict[Hashable, list[int]] = {}
    for i, key in enumerate(keys):
        groups.setdefault(key, []).append(i)
    if len(groups) < 2:
        return images, None
    width = max(map(len, groups.values()))
    blank = images.new_ones(images.shape[1:])
    cells: list[Tensor] = []
    for members in groups.values():
        cells += [images[i] for i in members] + [blank] * (width - len(members))
    return torch.stack(cells), width


def to_pil(image: Tensor) -> Image.Image:
    """(C, H, W) in [-1, 1] -> a PIL image (L for 1 channel, RGB for 3)."""
    arr = from_model_space(image.detach().float().cpu()).permute(1, 2, 0).numpy()
    return Image.fromarray(arr[..., 0] if arr.shape[2] == 1 else arr)


def png_bytes(img: Image.Image, *, scale: int = 1) -> bytes:
    if scale > 1:
        img = img.resize((img.width * scale, img.height * scale), Image.NEAREST)
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def save_png(image: Tensor, path: str | Path, *, scale: int = 1) -> Path:
    atomic_write(path, png_bytes(to_pil(image), scale=scale))
    return Path(path)


def from_pil(image: Image.Image) -> Tensor:
    """A PIL image -> (C, H, W) float32 in [-1, 1] (grey stays one channel, else RGB)."""
    image = image if image.mode in ("L", "RGB") else image.convert("RGB")
    arr = torch.from_numpy(np.array(image))
    arr = arr[None] if arr.dim() == 2 else arr.permute(2, 0, 1)
    return to_model_space(arr.contiguous())


def save_images(
    images: Tensor | Sequence[Image.Image],
    directory: str | Path,
    *,
    nrow: int | None = None,
    rows: Sequence[Hashable] | Tensor | None = None,
) -> list[Path]:
    """Write images as 000000.png, 000001.png, ... and their grid.png (at twice the size) into
    ``directory``; returns [grid, images...]. Tensors are (N, C, H, W) in [-1, 1], clipped.

    Args:
        nrow: images per grid row (default: a square grid).
        rows: one key per image (its class or prompt): the grid gets one row per key
            (:func:`grid_rows`), e.g. ``rows=labels`` for ``classes="all"``; overrides nrow.
    """
    x = images if isinstance(images, Tensor) else torch.stack([from_pil(i) for i in images])
    if x.dim() != 4 or len(x) == 0:
        raise ValueError(f"save_images needs (N, C, H, W) images, got shape {tuple(x.shape)}")
    x = x.clamp(-1, 1)
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    paths = [save_png(img, directory / f"{i:06d}.png") for i, img in enumerate(x)]
    cells = x
    if rows is not None:
        cells, nrow = grid_rows(x, rows)
    return [save_png(make_grid(cells, nrow=nrow), directory / "grid.png", scale=2), *paths]


def save_gif(
    frames: list[Tensor], path: str | Path, *, scale: int = 1, duration_ms: int = 80
) -> Path:
    """Animated GIF of (C, H, W) frames in [-1, 1]; the last frame is held longer."""
    pil = [to_pil(f).convert("RGB") for f in frames]
    if scale > 1:
        pil = [p.resize((p.width * scale, p.height * scale), Image.NEAREST) for p in pil]
    buf = io.BytesIO()
    durations = [duration_ms] * (len(pil) - 1) + [1500]
    pil[0].save(buf, format="GIF", save_all=True, append_images=pil[1:], duration=durations, loop=0)
    atomic_write(path, buf.getvalue())
    return Path(path)


# ----------------------------------------------------------------------------- reading


def _check_size(image: Image.Image, path: str | Path, size: int, needed: str) -> None:
    """Raise ``{path} is WxH, but {needed}`` unless the image is size x size."""
    if image.size != (size, size):
        raise ValueError(f"{path} is {image.width}x{image.height}, but {needed}")


def read_image(path: str | Path, *, size: int, channels: int, who: str = "the model") -> Tensor:
    """An image file as (1, channels, size, size) in [-1, 1].

    A mode other than grey (``channels`` 1) or RGB (3) is converted with a warning, transparency
    composited on white as for training folders; a size other than size x size is refused,
    since resizing would silently change what the model is given.
    """
    image = open_image(path)
    target = "L" if channels == 1 else "RGB"
    if image.mode != target:
        try:
            converted = to_mode(image, channels)
        except ValueError as e:  # Pillow converts most modes, but not e.g. LAB
            raise ValueError(
                f"{path} has mode {image.mode}, which cannot be converted to {target} ({e}); "
                "save it as a grey or RGB PNG"
            ) from None
        warnings.warn(
            f"{path}: converted {image.mode} to {target} (transparency on white)", stacklevel=2
        )
        image = converted
    _check_size(image, path, size, f"{who} takes {size}x{size} images; resize it first")
    array = np.asarray(image).reshape(size, size, channels)
    return to_model_space(torch.from_numpy(array.copy()).permute(2, 0, 1)[None])


def read_mask(path: str | Path, *, size: int, image: str | Path) -> Tensor:
    """An inpainting mask file as (1, 1, size, size) ``known``: white (>= 128) marks the region
    to fill (0), black the region to keep (1). Modes other than grey are converted with a
    warning; a size other than that of ``image`` (the input's path, size x size) is refused."""
    mask = open_image(path)
    if mask.mode not in ("L", "1"):
        warnings.warn(f"{path}: converted the {mask.mode} mask to grey", stacklevel=2)
    mask = mask.convert("L")
    _check_size(mask, f"mask {path}", size, f"image {image} is {size}x{size}; they must match")
    fill = torch.from_numpy(np.asarray(mask) >= 128)
    return (~fill).float()[None, None]
