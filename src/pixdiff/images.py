"""Saving images: model space [-1, 1] NCHW floats to PNG files, grids and GIFs."""

from __future__ import annotations

import io
import math
from pathlib import Path

from PIL import Image
from torch import Tensor

from pixdiff.data.dataset import from_model_space
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
