"""Fit images to a feature extractor's input: channel conversion, then resizing.

Every :class:`~pixdiff.eval.features.FeatureExtractor` takes images of any height and width;
its ``prepare`` step brings them to the network's (C, H, W) as follows, and does nothing to
images that already have that shape (so scores at the extractor's own shape are unchanged).

- Channels: the same count passes; 1 -> 3 repeats the grey value (PIL's ``convert("RGB")``,
  which is how torch-fidelity and clean-fid read grey images). Any other pair is refused with
  one line: 3 -> 1 would score colour images by their grey values only, and there is no
  agreed conversion for other channel counts (RGBA, 2 channels).
- Size, ``"bilinear"`` (the default for pixdiff's own extractors): ``F.interpolate(mode=
  "bilinear", align_corners=False, antialias=True)``, a triangle filter that widens when it
  shrinks, like PIL's ``Image.resize(..., BILINEAR)``.
- Size, ``"tf1-bilinear"`` (the Inception FID extractor): TensorFlow 1.x's
  ``resize_bilinear`` with ``align_corners=False``: source position ``i * in / out`` (no
  half-pixel offset), no antialiasing. It is the resize of the original FID code (Heusel et
  al. 2017) that torch-fidelity reproduces exactly, so FIDs compare with published ones.
  (clean-fid's "clean" mode resizes with PIL's bicubic filter instead, and torchmetrics uses
  the antialiased bilinear by default; both give slightly different numbers.)
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

Resize = Literal["bilinear", "tf1-bilinear"]
RESIZES: tuple[Resize, ...] = ("bilinear", "tf1-bilinear")


def channel_problem(channels: int, target: int) -> str | None:
    """Why ``channels``-channel images cannot be fed to a ``target``-channel network, or None."""
    if channels == target or (channels, target) == (1, 3):
        return None
    if (channels, target) == (3, 1):
        return "colour images are not converted to grey (an RGB extractor is needed)"
    return f"{channels}-channel images cannot be converted to {target} channels (only 1 -> 3)"


def convert_channels(x: Tensor, channels: int, *, who: str = "the feature extractor") -> Tensor:
    """(N, C, H, W) -> (N, channels, H, W): unchanged, or grey repeated to RGB; else ValueError."""
    problem = channel_problem(x.shape[1], channels)
    if problem is not None:
        raise ValueError(f"{who} takes {channels}-channel images, got {tuple(x.shape)}: {problem}")
    return x if x.shape[1] == channels else x.repeat(1, channels, 1, 1)


def _lerp_along(x: Tensor, dim: int, size_out: int) -> Tensor:
    """TF 1.x bilinear along one axis: src = i * in / out, neighbours floor(src) and the next
    one (clamped at the edge), weights from the fractional part; float32 positions as TF."""
    size_in = x.shape[dim]
    src = torch.arange(size_out, dtype=torch.float32, device=x.device)
    src = src * torch.tensor(size_in / size_out, dtype=torch.float32)
    lo = src.long()
    hi = (lo + 1).clamp_max(size_in - 1)
    shape = [1] * x.ndim
    shape[dim] = size_out
    frac = (src - lo.float()).to(x.dtype).view(shape)
    a, b = x.index_select(dim, lo), x.index_select(dim, hi)
    return a + (b - a) * frac


def resize_tf1_bilinear(x: Tensor, size: tuple[int, int]) -> Tensor:
    """TensorFlow 1.x ``resize_bilinear(align_corners=False)`` of float (N, C, H, W) to ``size``.

    Along the width first, then the height, in the order of torch-fidelity's
    ``interpolate_bilinear_2d_like_tensorflow1x`` (bit-identical to it on the CPU).
    """
    return _lerp_along(_lerp_along(x, 3, size[1]), 2, size[0])


def resize(x: Tensor, size: tuple[int, int], *, mode: Resize = "bilinear") -> Tensor:
    """Float images (N, C, H, W) resized to ``size`` (H', W'); the same tensor if already so."""
    if tuple(x.shape[2:]) == tuple(size):
        return x
    if mode == "tf1-bilinear":
        return resize_tf1_bilinear(x, size)
    if mode == "bilinear":
        return F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=True)
    raise ValueError(f"unknown resize {mode!r}; valid: {', '.join(RESIZES)}")


def fit_images(
    x: Tensor,
    shape: tuple[int, int, int],
    *,
    mode: Resize = "bilinear",
    who: str = "the feature extractor",
) -> Tensor:
    """Float images (N, C, H, W) converted to ``shape`` (C', H', W'): size and channels (each
    channel is resized alone, so the order does not matter; resizing first is cheaper)."""
    return convert_channels(resize(x, shape[1:], mode=mode), shape[0], who=who)
