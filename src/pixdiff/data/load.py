"""Datasets by name: ``load_dataset`` picks the loader for ``'fashion-mnist'``, ``'emoji'`` or a
folder of images and returns the set at one size and channel count."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pixdiff.data.control import ControlConfig, with_control
from pixdiff.data.emoji import emoji_split, load_emoji
from pixdiff.data.fashion_mnist import load_fashion_mnist
from pixdiff.data.folder import load_folder
from pixdiff.data.image_set import (
    SPLITS,
    ImageSet,
    Split,
    concatenate,
    convert_channels,
    resize_images,
)

DATASET_NAMES = ("fashion-mnist", "emoji")


def load_dataset(
    spec: str,
    *,
    image_size: int,
    channels: Literal[1, 3] | None = None,
    split: Split = "train",
    cache_dir: str | Path | None = None,
    skip_bad_images: bool = False,
    control: ControlConfig | None = None,
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
        control: attach these control maps to the set (:func:`pixdiff.data.control.with_control`).
    """
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
        folder = load_folder(
            Path(spec).expanduser(), image_size=image_size, channels=channels or 3,
            skip_bad_images=skip_bad_images,
        )  # fmt: skip
        return with_control(folder, control, source=spec, cache_dir=cache_dir)
    else:
        raise FileNotFoundError(
            f"unknown dataset {spec!r}: it is neither one of {', '.join(DATASET_NAMES)} "
            f"nor an existing folder ({Path(spec).expanduser().resolve()})"
        )
    if channels is not None:
        images = convert_channels(images, channels)
    data = ImageSet(images, data.labels, data.class_names, data.captions, data.name)
    return with_control(data, control, source=spec, cache_dir=cache_dir)
