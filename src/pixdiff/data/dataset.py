"""The in-memory image set every loader returns, model-space conversion, and training batches.

Images stay compact as uint8 (N, C, H, W) in memory; :func:`to_model_space` turns one batch
into float [-1, 1] (the model's space, see DESIGN.md) and :func:`from_model_space` goes back.
These two functions are the only place that conversion is written.

Batches are planned by :class:`BatchPlan` so that batch ``k`` of epoch ``e`` on rank ``r`` is a
pure function of ``(seed, e, k, r)``: a trainer resumes mid-epoch exactly from its step count.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, NamedTuple, get_args

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

DATASET_NAMES = ("fashion-mnist", "emoji")
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
    """

    images: Tensor
    labels: Tensor | None = None
    class_names: list[str] | None = None
    captions: list[str] | None = None
    name: str = "images"

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

    def __len__(self) -> int:
        return len(self.images)

    @property
    def num_classes(self) -> int | None:
        """Number of classes: ``len(class_names)``, else ``max(label) + 1``, else None."""
        if self.class_names is not None:
            return len(self.class_names)
        if self.labels is None or len(self.labels) == 0:
            return None
        return int(self.labels.max()) + 1

    def subset(self, rows: Tensor, *, name: str) -> ImageSet:
        """The images (and their labels and captions) at ``rows``, a 1-D index tensor."""
        captions = None if self.captions is None else [self.captions[i] for i in rows.tolist()]
        labels = None if self.labels is None else self.labels[rows]
        return ImageSet(self.images[rows], labels, self.class_names, captions, name)


def concatenate(parts: list[ImageSet], *, name: str) -> ImageSet:
    """One set of ``parts`` in order; they must agree on shape, class names and what they hold."""
    first = parts[0]
    for part in parts[1:]:
        if part.images.shape[1:] != first.images.shape[1:] or part.class_names != first.class_names:
            raise ValueError(f"cannot concatenate {part.name!r} and {first.name!r}: they differ")
        if (part.labels is None) != (first.labels is None) or (part.captions is None) != (
            first.captions is None
        ):
            raise ValueError(f"{part.name!r} and {first.name!r} differ in labels or captions")
    labels = None if first.labels is None else torch.cat([p.labels for p in parts])
    captions = None if first.captions is None else [c for p in parts for c in p.captions]
    images = torch.cat([p.images for p in parts])
    return ImageSet(images, labels, first.class_names, captions, name)


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


def resize_images(images: Tensor, size: int) -> Tensor:
    """Resize uint8 (N, C, H, W) square images to (N, C, size, size), antialiased bicubic."""
    if images.shape[-2:] == (size, size):
        return images
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


class Batch(NamedTuple):
    """One training batch: images (B, C, H, W) float [-1, 1], labels (B,) or None, captions."""

    images: Tensor
    labels: Tensor | None
    captions: list[str] | None


@dataclass(frozen=True)
class BatchPlan:
    """Which items form batch ``k`` of epoch ``e`` on one rank: shuffled, sharded, resumable.

    Each epoch draws a permutation (and a horizontal-flip coin per item) from
    ``numpy.random.default_rng([seed, epoch])``. The permutation is cut into ``world_size``
    disjoint, equal slices (``num_items % world_size`` items sit out that epoch, a different
    few each epoch) and rank ``r`` walks its slice in batches. Nothing depends on earlier
    batches, so a resumed run sees exactly the batches it would have seen. The flip coins are
    drawn whether or not ``flip`` is set, so turning flips on does not change the order.
    """

    num_items: int
    batch_size: int
    seed: int = 0
    rank: int = 0
    world_size: int = 1
    flip: bool = False
    drop_last: bool = True

    def __post_init__(self) -> None:
        if self.batch_size < 1 or self.world_size < 1 or self.seed < 0:
            raise ValueError(
                f"need batch_size >= 1, world_size >= 1 and seed >= 0; got batch_size="
                f"{self.batch_size}, world_size={self.world_size}, seed={self.seed}"
            )
        if not 0 <= self.rank < self.world_size:
            raise ValueError(f"rank {self.rank} is outside [0, world_size={self.world_size})")
        if self.steps_per_epoch == 0:
            raise ValueError(
                f"{self.num_items} images cannot fill one batch of {self.batch_size} on each of "
                f"{self.world_size} rank(s); lower the batch size or use more images"
            )

    @property
    def per_rank(self) -> int:
        """Items each rank sees per epoch."""
        return self.num_items // self.world_size

    @property
    def steps_per_epoch(self) -> int:
        """Batches per epoch (identical on every rank)."""
        if self.drop_last:
            return self.per_rank // self.batch_size
        return math.ceil(self.per_rank / self.batch_size)

    def locate(self, step: int) -> tuple[int, int]:
        """Global step -> (epoch, batch index within the epoch)."""
        return divmod(step, self.steps_per_epoch)

    def epoch_order(self, epoch: int) -> tuple[Tensor, Tensor]:
        """This rank's item indices (per_rank,) int64 and flip flags (per_rank,) bool."""
        rng = np.random.default_rng([self.seed, epoch])
        perm = rng.permutation(self.num_items)
        flips = rng.random(self.num_items) < 0.5
        if not self.flip:
            flips[:] = False
        start = self.rank * self.per_rank
        shard = slice(start, start + self.per_rank)
        return torch.from_numpy(perm[shard]), torch.from_numpy(flips[shard])

    def batch(self, epoch: int, k: int) -> tuple[Tensor, Tensor]:
        """Item indices and flip flags of batch ``k`` of ``epoch`` on this rank."""
        if not 0 <= k < self.steps_per_epoch:
            raise IndexError(f"batch {k} outside epoch of {self.steps_per_epoch} batches")
        order, flips = self.epoch_order(epoch)
        rows = slice(k * self.batch_size, (k + 1) * self.batch_size)
        return order[rows], flips[rows]


def gather_batch(
    data: ImageSet, indices: Tensor, flips: Tensor, *, device: torch.device | str | None = None
) -> Batch:
    """Select items, move them as uint8 (4x less traffic), flip, and convert to model space."""
    images = data.images[indices]
    if flips.any():
        images[flips] = images[flips].flip(-1)
    images = to_model_space(images.to(device, non_blocking=True))
    labels = None if data.labels is None else data.labels[indices].to(device)
    captions = None if data.captions is None else [data.captions[i] for i in indices.tolist()]
    return Batch(images, labels, captions)


def batches(
    data: ImageSet,
    *,
    batch_size: int,
    seed: int = 0,
    start_step: int = 0,
    rank: int = 0,
    world_size: int = 1,
    flip: bool = False,
    drop_last: bool = True,
    device: torch.device | str | None = None,
) -> Iterator[Batch]:
    """Endless training batches, starting at global step ``start_step`` (for resuming).

    The batch yielded for global step ``s`` is ``BatchPlan.batch(*plan.locate(s))``: the same
    whether the run started at 0 or resumed at ``s``. Per-rank batches have ``batch_size``
    items; the global batch is ``batch_size * world_size``.
    """
    plan = BatchPlan(
        num_items=len(data), batch_size=batch_size, seed=seed, rank=rank,
        world_size=world_size, flip=flip, drop_last=drop_last,
    )  # fmt: skip
    epoch, first = plan.locate(start_step)
    while True:
        order, flips = plan.epoch_order(epoch)
        for k in range(first, plan.steps_per_epoch):
            rows = slice(k * batch_size, (k + 1) * batch_size)
            yield gather_batch(data, order[rows], flips[rows], device=device)
        epoch, first = epoch + 1, 0


def load_dataset(
    spec: str,
    *,
    image_size: int,
    channels: Literal[1, 3] | None = None,
    split: Split = "train",
    cache_dir: str | Path | None = None,
    skip_bad_images: bool = False,
) -> ImageSet:
    """Load ``'fashion-mnist'``, ``'emoji'`` or a folder of images at ``image_size``.

    Args:
        spec: a dataset name from ``DATASET_NAMES`` or a path to a folder of images.
        image_size: side of the square images returned.
        channels: 1 (grey) or 3 (RGB); None keeps the dataset's own (folders default to 3).
        split: ``"train"``, ``"test"`` or ``"all"`` (both). Fashion-MNIST has its own splits;
            emoji hold out every 10th emoji in codepoint order as ``"test"``
            (:data:`pixdiff.data.emoji.HOLDOUT_EVERY`); a folder has one split: every split is
            all of its images (so ``pixdiff eval --data FOLDER`` scores against the folder).
        cache_dir: where the rendered emoji are cached (default :func:`default_cache_dir`).
        skip_bad_images: for folders, skip unreadable images with a warning instead of failing.
    """
    from .emoji import emoji_split, load_emoji
    from .fashion_mnist import load_fashion_mnist
    from .folder import load_folder

    if image_size < 1:
        raise ValueError(f"image_size must be positive, got {image_size}")
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; valid splits are {', '.join(SPLITS)}")
    if spec == "fashion-mnist":
        parts = [load_fashion_mnist(s) for s in (("train", "test") if split == "all" else (split,))]
        data = parts[0] if len(parts) == 1 else concatenate(parts, name="fashion-mnist-all")
        images = resize_images(data.images, image_size)
    elif spec == "emoji":
        data = emoji_split(load_emoji(size=image_size, cache_dir=cache_dir), split)
        images = data.images
    elif Path(spec).expanduser().is_dir():
        return load_folder(
            Path(spec).expanduser(), image_size=image_size, channels=channels or 3,
            skip_bad_images=skip_bad_images,
        )  # fmt: skip
    else:
        raise FileNotFoundError(
            f"unknown dataset {spec!r}: it is neither one of {', '.join(DATASET_NAMES)} "
            f"nor an existing folder ({Path(spec).expanduser().resolve()})"
        )
    if channels is not None:
        images = convert_channels(images, channels)
    return ImageSet(images, data.labels, data.class_names, data.captions, data.name)
