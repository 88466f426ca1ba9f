"""The in-memory image set every loader returns, its splits, and model-space conversion.

Images stay compact as uint8 (N, C, H, W) in memory; :func:`to_model_space` turns one batch
into float [-1, 1] (the model's space, see DESIGN.md) and :func:`from_model_space` goes back.
These two functions are the only place that conversion is written.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, get_args

import torch
import torch.nn.functional as F
from torch import Tensor

Split = Literal["train", "test", "all"]
SPLITS: tuple[str, ...] = get_args(Split)


@dataclass(frozen=True)
class ImageSet:
    """A labelled and/or captioned set of images held in memory.

    Attributes:
        images: (N, C, H, W) uint8, C in {1, 3}.
        labels: (N,) int64 class ids, or None.
        class_names: name of each class id (``class_names[label]``), or None.
        captions: one string per image, or None.
        name: short name for logs and run configs, e.g. ``"fashion-mnist-train"``.
        control: (N, C', H, W) uint8 spatial control maps aligned with the images (edges,
            sketch, mask, layout or a user's maps; :mod:`pixdiff.data.control`), or None.
    """

    images: Tensor
    labels: Tensor | None = None
    class_names: list[str] | None = None
    captions: list[str] | None = None
    name: str = "images"
    control: Tensor | None = None

    def __post_init__(self) -> None:
        if self.images.dtype != torch.uint8 or self.images.ndim != 4:
            raise ValueError(
                f"ImageSet {self.name!r}: images must be uint8 (N, C, H, W), "
                f"got {self.images.dtype} {tuple(self.images.shape)}"
            )
        n = len(self.images)
        bad_labels = self.labels is not None and (
            self.labels.dtype != torch.int64 or self.labels.shape != (n,)
        )
        if bad_labels:
            raise ValueError(
                f"ImageSet {self.name!r}: labels must be int64 of shape ({n},), "
                f"got {self.labels.dtype} {tuple(self.labels.shape)}"
            )
        if self.captions is not None and len(self.captions) != n:
            raise ValueError(
                f"ImageSet {self.name!r}: {len(self.captions)} captions for {n} images"
            )
        bad_control = self.control is not None and (
            self.control.dtype != torch.uint8
            or self.control.dim() != 4
            or self.control.shape[0] != n
            or self.control.shape[2:] != self.images.shape[2:]
        )
        if bad_control:
            raise ValueError(
                f"ImageSet {self.name!r}: control maps must be uint8 (N, C, H, W) like the "
                f"images {tuple(self.images.shape)}, got {self.control.dtype} "
                f"{tuple(self.control.shape)}"
            )

    def __len__(self) -> int:
        return len(self.images)

    @property
    def num_classes(self) -> int | None:
        """Number of classes: ``len(class_names)``, else ``max(label) + 1``, else None."""
        return count_classes(self.class_names, self.labels)

    def subset(self, rows: Tensor, *, name: str) -> ImageSet:
        """The images (and their labels and captions) at ``rows``, a 1-D index tensor."""
        captions = None if self.captions is None else [self.captions[i] for i in rows.tolist()]
        labels = None if self.labels is None else self.labels[rows]
        control = None if self.control is None else self.control[rows]
        return ImageSet(self.images[rows], labels, self.class_names, captions, name, control)


def count_classes(class_names: list[str] | None, labels: Tensor | None) -> int | None:
    """Number of classes: ``len(class_names)``, else ``max(label) + 1``, else None."""
    if class_names is not None:
        return len(class_names)
    if labels is None or len(labels) == 0:
        return None
    return int(labels.max()) + 1


def concatenate(parts: list[ImageSet], *, name: str) -> ImageSet:
    """One set of ``parts`` in order; they must agree on shape, class names and what they hold."""
    first = parts[0]
    for part in parts[1:]:
        if part.images.shape[1:] != first.images.shape[1:] or part.class_names != first.class_names:
            raise ValueError(f"cannot concatenate {part.name!r} and {first.name!r}: they differ")
        held = [(p.labels is None, p.captions is None, p.control is None) for p in (part, first)]
        if held[0] != held[1]:
            raise ValueError(f"{part.name!r} and {first.name!r} differ in labels, captions or maps")
    labels = None if first.labels is None else torch.cat([p.labels for p in parts])
    captions = None if first.captions is None else [c for p in parts for c in p.captions]
    images = torch.cat([p.images for p in parts])
    control = None if first.control is None else torch.cat([p.control for p in parts])
    return ImageSet(images, labels, first.class_names, captions, name, control)


def to_model_space(images: Tensor) -> Tensor:
    """uint8 [0, 255] -> float32 [-1, 1] (the model's space)."""
    if images.dtype != torch.uint8:
        raise TypeError(f"to_model_space expects uint8 images, got {images.dtype}")
    return images.to(torch.float32) / 127.5 - 1.0


def from_model_space(x: Tensor) -> Tensor:
    """float [-1, 1] -> uint8 [0, 255], rounding to nearest and clamping out-of-range values."""
    if not x.is_floating_point():
        raise TypeError(f"from_model_space expects a float tensor, got {x.dtype}")
    return ((x.float() + 1.0) * 127.5).round().clamp(0, 255).to(torch.uint8)


def check_fits_in_memory(n: int, channels: int, size: int, what: str) -> None:
    """Refuse (ValueError) to hold n uint8 (channels, size, size) images that would take more
    than half of this machine's memory: a one-line error instead of a crash or an OOM kill."""
    need = n * channels * size * size
    total = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    if need > total // 2:
        raise ValueError(
            f"{what}: {n} images of {channels}x{size}x{size} need {need / 2**30:.1f} GiB, over "
            f"half of this machine's {total / 2**30:.1f} GiB of memory; use a smaller image size"
        )


def resize_images(images: Tensor, size: int) -> Tensor:
    """Resize uint8 (N, C, H, W) square images to (N, C, size, size), antialiased bicubic."""
    if images.shape[-2:] == (size, size):
        return images
    check_fits_in_memory(len(images), images.shape[1], size, "resizing")
    out = torch.empty((*images.shape[:2], size, size), dtype=torch.uint8)
    for start in range(0, len(images), 4096):  # chunks bound the float32 working memory
        chunk = images[start : start + 4096].float()
        chunk = F.interpolate(chunk, size=(size, size), mode="bicubic", antialias=True)
        out[start : start + 4096] = chunk.round().clamp(0, 255).to(torch.uint8)
    return out


def convert_channels(images: Tensor, channels: Literal[1, 3]) -> Tensor:
    """Convert uint8 (N, C, H, W) between grey (C=1) and RGB (C=3); ITU-R 601 luma for grey."""
    if images.shape[1] == channels:
        return images
    if channels == 3 and images.shape[1] == 1:
        return images.expand(-1, 3, -1, -1).contiguous()
    if channels == 1 and images.shape[1] == 3:
        weights = torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)
        grey = (images.float() * weights).sum(1, keepdim=True)
        return grey.round().clamp(0, 255).to(torch.uint8)
    raise ValueError(f"cannot convert {images.shape[1]}-channel images to {channels} channels")


def default_cache_dir() -> Path:
    """Cache folder: ``$PIXDIFF_CACHE`` if set, else ``~/.cache/pixdiff``."""
    env = os.environ.get("PIXDIFF_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "pixdiff"
