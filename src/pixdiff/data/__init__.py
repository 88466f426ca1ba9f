"""Datasets as compact uint8 :class:`ImageSet` s, and resumable, sharded training batches."""

from .dataset import (
    DATASET_NAMES,
    Batch,
    BatchPlan,
    ImageSet,
    batches,
    convert_channels,
    default_cache_dir,
    from_model_space,
    gather_batch,
    load_dataset,
    resize_images,
    to_model_space,
)
from .emoji import load_emoji, render_emoji
from .fashion_mnist import CLASS_NAMES as FASHION_MNIST_CLASSES
from .fashion_mnist import load_fashion_mnist, read_idx
from .folder import load_folder

__all__ = [
    "DATASET_NAMES",
    "FASHION_MNIST_CLASSES",
    "Batch",
    "BatchPlan",
    "ImageSet",
    "batches",
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
]
