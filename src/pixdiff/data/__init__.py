"""Datasets as compact uint8 :class:`ImageSet` s, and resumable, sharded training batches."""

from .batching import Batch, BatchPlan, batches, gather_batch
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

__all__ = [
    "CONTROL_KINDS",
    "DATASET_NAMES",
    "FASHION_MNIST_CLASSES",
    "Batch",
    "BatchPlan",
    "ControlConfig",
    "ImageSet",
    "Split",
    "batches",
    "compute_maps",
    "convert_channels",
    "default_cache_dir",
    "from_model_space",
    "gather_batch",
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
