"""Evaluation: the Fashion-MNIST classifier whose features feed FD / KID / precision-recall."""

from .classifier import (
    FashionClassifier,
    accuracy,
    check_images,
    classify,
    load_classifier,
    save_classifier,
    train_classifier,
)

__all__ = [
    "FashionClassifier",
    "accuracy",
    "check_images",
    "classify",
    "load_classifier",
    "save_classifier",
    "train_classifier",
]
