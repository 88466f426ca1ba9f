"""Evaluation: the Fashion-MNIST classifier, feature extractors (and the FID Inception-v3), FD,
KID, IS, precision-recall; the video metrics and their motion classifier."""

from .classifier import (
    FashionClassifier,
    accuracy,
    check_images,
    classify,
    load_classifier,
    save_classifier,
)
from .classifier_training import train_classifier
from .features import (
    DEFAULT_EXTRACTOR,
    FeatureExtractor,
    check_model_space,
    classifier_extractor,
    inception_extractor,
    load_extractor,
    torchscript_extractor,
)
from .fid import FeatureStats, frechet_distance, inception_score, kid, precision_recall
from .motion_classifier import ClipExtractor, load_clip_extractor
from .reference import Reference, reference_stats
from .video import VIDEO_METRICS, evaluate_clips, score_clips

__all__ = [
    "DEFAULT_EXTRACTOR",
    "VIDEO_METRICS",
    "ClipExtractor",
    "FashionClassifier",
    "FeatureExtractor",
    "FeatureStats",
    "Reference",
    "accuracy",
    "check_images",
    "check_model_space",
    "classifier_extractor",
    "classify",
    "evaluate_clips",
    "frechet_distance",
    "inception_extractor",
    "inception_score",
    "kid",
    "load_classifier",
    "load_clip_extractor",
    "load_extractor",
    "precision_recall",
    "reference_stats",
    "save_classifier",
    "score_clips",
    "torchscript_extractor",
    "train_classifier",
]
