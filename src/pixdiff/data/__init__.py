"""Datasets as compact uint8 :class:`ImageSet` s (clips: :class:`ClipSet` s), and resumable,
sharded training batches. Clip files are written by :mod:`pixdiff.data.video_io`, which is not
imported here (it imports :mod:`pixdiff.images`, which imports this package)."""

from .batching import Batch, BatchPlan, batches, gather_batch
from .clip_folder import load_clip_folder
from .clip_load import CLIP_DATASETS, is_clip_dataset, load_clip_dataset
from .clip_set import ClipSet
from .clips import ClipSpec, load_clips, make_clips
from .control import CONTROL_KINDS, ControlConfig, compute_maps, with_control
from .emoji import load_emoji, render_emoji
from .fashion_mnist import CLASS_NAMES as FASHION_MNIST_CLASSES
from .fashion_mnist import load_fashion_mnist, read_idx
from .folder import load_folder
from .image_set import (
    ImageSet,
    Split,
    convert_channels,
    default_cache_dir,
    from_model_space,
    resize_images,
    to_model_space,
)
from .load import DATASET_NAMES, load_dataset
from .motions import MOTIONS

__all__ = [
    "CLIP_DATASETS",
    "CONTROL_KINDS",
    "DATASET_NAMES",
    "FASHION_MNIST_CLASSES",
    "MOTIONS",
    "Batch",
    "BatchPlan",
    "ClipSet",
    "ClipSpec",
    "ControlConfig",
    "ImageSet",
    "Split",
    "batches",
    "compute_maps",
    "convert_channels",
    "default_cache_dir",
    "from_model_space",
    "gather_batch",
    "make_clips",
    "is_clip_dataset",
    "load_clip_dataset",
    "load_clip_folder",
    "load_clips",
    "load_dataset",
    "load_emoji",
    "load_fashion_mnist",
    "load_folder",
    "read_idx",
    "render_emoji",
    "resize_images",
    "to_model_space",
    "with_control",
]
