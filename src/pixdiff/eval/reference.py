"""Real-data reference for the feature metrics: statistics (for FD) and features (for KID and
precision/recall) of a dataset through one extractor, computed once and cached.

:func:`reference_stats` caches them per dataset, split, extractor (name and weights hash) and
sample count, as a safetensors file written atomically.
"""

from __future__ import annotations

import hashlib
import warnings
from pathlib import Path
from typing import Literal, NamedTuple

import torch
from torch import Tensor

from pixdiff.checkpoint import CheckpointError, read_tensors, save_tensors
from pixdiff.data import DATASET_NAMES, default_cache_dir, load_dataset
from pixdiff.data.folder import list_images
from pixdiff.eval.features import FeatureExtractor
from pixdiff.eval.fid import FeatureStats, stats_from_file

REFERENCE_SEED = 0  # which n real images reference_stats picks when n < the dataset size


class Reference(NamedTuple):
    """Real-data statistics (for FD) and features (N, D) float32 (for KID, precision/recall)."""

    stats: FeatureStats
    features: Tensor


def _safe(text: str) -> str:
    """``text`` reduced to characters that are safe in a file name."""
    return "".join(c if c.isalnum() or c in "._-" else "_" for c in text)


def _dataset_key(dataset: str) -> str:
    """Cache-key part for a dataset: its name, or a folder's name + hash of its files."""
    if dataset in DATASET_NAMES:
        return dataset
    folder = Path(dataset).expanduser().resolve()
    digest = hashlib.sha256(str(folder).encode())
    if folder.is_dir():  # a changed file (size or mtime) changes the key
        for p in list_images(folder):
            stat = p.stat()
            digest.update(f"{p.relative_to(folder)}:{stat.st_size}:{stat.st_mtime_ns};".encode())
    return f"{_safe(folder.name)}-{digest.hexdigest()[:12]}"


def reference_path(
    dataset: str,
    split: str,
    extractor: FeatureExtractor,
    *,
    n: int | None,
    cache_dir: Path,
    image_shape: tuple[int, int, int] | None = None,
) -> Path:
    """Cache file of :func:`reference_stats` for these arguments."""
    shape = "x".join(map(str, extractor.input_shape))
    if image_shape is not None and tuple(image_shape) != extractor.input_shape:
        shape += "-from" + "x".join(map(str, image_shape))  # resized by the extractor
    fingerprint = extractor.fingerprint or "unhashed"
    name = f"{_safe(extractor.name)}-{_safe(fingerprint)}"
    count = "all" if n is None else str(n)
    return cache_dir / f"{_dataset_key(dataset)}-{_safe(split)}-{name}-{shape}-n{count}.safetensors"


def _read_reference(path: Path) -> Reference | None:
    """The cached reference at ``path``; None (with a warning if unreadable) when absent."""
    if not path.is_file():
        return None
    try:
        tensors, metadata = read_tensors(path)
        stats = stats_from_file(tensors, metadata, path)
        features = tensors.get("features")
        if features is None or features.shape != (stats.n, stats.dim):
            raise CheckpointError(f"{path} has no features matching its statistics")
    except CheckpointError as err:
        warnings.warn(f"ignoring unreadable reference cache ({err}); recomputing", stacklevel=3)
        return None
    return Reference(stats, features)


def _real_features(
    dataset: str,
    split: Literal["train", "test"],
    extractor: FeatureExtractor,
    n: int | None,
    image_shape: tuple[int, int, int],
) -> Tensor:
    """Features (N, D) float64 of ``n`` real images (all when None) loaded at ``image_shape``
    (then fitted to the extractor's input by its own resize, as samples are)."""
    channels, height, width = image_shape
    if height != width or channels not in (1, 3):
        raise ValueError(
            f"datasets load as square grey or RGB images, not {tuple(image_shape)} (the input "
            f"of extractor {extractor.name!r} or the model's images)"
        )
    data = load_dataset(dataset, image_size=height, channels=channels, split=split)
    images = data.images
    if n is not None:
        if not 1 <= n <= len(images):
            raise ValueError(f"n must be in 1..{len(images)} (the size of {data.name}), got {n}")
        generator = torch.Generator().manual_seed(REFERENCE_SEED)
        images = images[torch.randperm(len(images), generator=generator)[:n]]
    return extractor.features(images)


def reference_stats(
    dataset: str,
    split: Literal["train", "test"],
    extractor: FeatureExtractor,
    *,
    n: int | None = None,
    cache_dir: str | Path | None = None,
    image_shape: tuple[int, int, int] | None = None,
) -> Reference:
    """Statistics and features of real data, computed once, then read from a cache file.

    The cache file (safetensors: float64 ``mu``, ``sigma``, float32 ``features``) is keyed by
    dataset (a folder also by its files' names, sizes and times), split, extractor name, weights
    fingerprint, input shape and ``n``, and written atomically. A corrupt file is recomputed.

    Args:
        dataset: ``"fashion-mnist"``, ``"emoji"`` or a folder of images (see
            :func:`pixdiff.data.load_dataset`); loaded at ``image_shape``.
        split: dataset split (only Fashion-MNIST has two).
        extractor: the feature extractor.
        n: number of real images, a fixed random subset (seed ``REFERENCE_SEED``); None: all.
        cache_dir: cache folder; default ``default_cache_dir() / "reference-stats"``.
        image_shape: (C, H, W) to load the real images at, which the extractor then resizes
            as it resizes the samples: give the model's image shape, so that both sides pass
            the same resize (standard FID compares images at their own resolution). Default:
            the extractor's input shape.
    """
    if cache_dir is None:
        folder = default_cache_dir() / "reference-stats"
    else:
        folder = Path(cache_dir).expanduser()
    shape = tuple(image_shape) if image_shape is not None else extractor.input_shape
    path = reference_path(dataset, split, extractor, n=n, cache_dir=folder, image_shape=shape)
    cached = _read_reference(path)
    if cached is not None:
        return cached
    feats = _real_features(dataset, split, extractor, n, shape)
    reference = Reference(FeatureStats.from_features(feats), feats.float())
    tensors = {**reference.stats.tensors(), "features": reference.features}
    notes = {"dataset": dataset, "split": split, "extractor": extractor.name,
             "fingerprint": extractor.fingerprint}  # fmt: skip
    try:
        save_tensors(path, tensors, {**reference.stats.metadata(), **notes})
    except OSError as err:  # a read-only home must not stop an evaluation
        warnings.warn(f"could not cache reference stats to {path} ({err})", stacklevel=2)
    return reference
