"""The Fashion-MNIST evaluation classifier: a small CNN whose 128-d penultimate features feed the
Frechet distance, KID and precision/recall, and whose class probabilities feed accuracy-style
metrics of class-conditional samples.

It plays for Fashion-MNIST the role Inception-v3 plays for ImageNet-like data (Heusel et al.
2017, "GANs Trained by a Two Time-Scale Update Rule Converge to a Local Nash Equilibrium"):
FD numbers are only comparable between runs that use the same shipped weights.

The weights ship in ``pixdiff/assets/fashion_classifier/`` as ``model.safetensors`` (float16,
loaded back to float32) plus ``config.json``, read and written with the atomic, pickle-free
helpers of :mod:`pixdiff.checkpoint`.
``bench/train_classifier.py`` rebuilds them with :mod:`pixdiff.eval.classifier_training`.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor, nn

from pixdiff.checkpoint import (
    CheckpointError,
    load_state_into,
    read_json,
    read_tensors,
    save_tensors,
    write_json,
)
from pixdiff.data import ImageSet, to_model_space

DEFAULT_DIR = Path(__file__).resolve().parents[1] / "assets" / "fashion_classifier"
# the same architecture for 64x64 RGB emoji (bench/train_classifier.py --data emoji)
EMOJI_DIR = DEFAULT_DIR.parent / "emoji_classifier"
WEIGHTS_NAME = "model.safetensors"
CONFIG_NAME = "config.json"
FORMAT = "pixdiff.fashion_classifier/1"
IMAGE_SHAPE = (1, 28, 28)
# Samples of a diffusion model may overshoot [-1, 1] a little; [0, 255] images may not pass.
RANGE_TOLERANCE = 0.5
_RETRAIN_HINT = "restore the file, or rebuild it with `python bench/train_classifier.py --out DIR`"


# ----------------------------------------------------------------------------- the network


def _conv_block(c_in: int, c_out: int) -> nn.Sequential:
    """3x3 conv -> BatchNorm (Ioffe & Szegedy 2015) -> ReLU -> 2x2 max-pool: halves H and W."""
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, 3, padding=1, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU(inplace=True),
        nn.MaxPool2d(2),
    )


def check_images(x: Tensor, shape: tuple[int, int, int] = IMAGE_SHAPE) -> None:
    """Raise a ValueError unless ``x`` is a float (N, *shape) batch in model space [-1, 1]."""
    c, h, w = shape
    if x.ndim != 4 or tuple(x.shape[1:]) != tuple(shape):
        raise ValueError(
            f"the classifier expects images of shape (N, {c}, {h}, {w}), got "
            f"{tuple(x.shape)}; convert to {c} channel(s) and resize to {h}x{w} first"
        )
    if not x.is_floating_point():
        raise ValueError(
            f"the classifier expects float images in model space [-1, 1], got "
            f"{x.dtype}; convert uint8 images with pixdiff.data.to_model_space"
        )
    if x.numel() == 0:
        return
    low, high = torch.aminmax(x.detach())
    if not (torch.isfinite(low) and torch.isfinite(high)):
        raise ValueError("the images contain NaN or infinite values")
    if low < -1 - RANGE_TOLERANCE or high > 1 + RANGE_TOLERANCE:
        raise ValueError(
            f"the images must be in model space [-1, 1], but their values span "
            f"[{low.item():.3g}, {high.item():.3g}]; map [0, 255] images with "
            f"pixdiff.data.to_model_space, and [0, 1] images with x * 2 - 1"
        )


class FashionClassifier(nn.Module):
    """Three conv blocks (28 -> 14 -> 7 -> 3), a 128-d feature layer and a 10-way linear head.

    The defaults are the Fashion-MNIST network; ``in_channels`` and ``image_size`` make the same
    architecture for other images (the emoji feature network of ``bench/cascade.py`` is a
    64x64 RGB one).

    Args:
        channels: output channels of the three conv blocks.
        feature_dim: width of the penultimate (feature) layer.
        num_classes: number of classes of the head.
        in_channels: image channels.
        image_size: side of the square input images (>= 8: three 2x poolings).
    """

    def __init__(
        self,
        *,
        channels: tuple[int, int, int] = (32, 64, 128),
        feature_dim: int = 128,
        num_classes: int = 10,
        in_channels: int = 1,
        image_size: int = 28,
    ) -> None:
        super().__init__()
        bad = len(channels) != 3 or min(channels) < 1 or feature_dim < 1 or num_classes < 2
        if bad or in_channels < 1 or image_size < 8:
            raise ValueError(
                f"need 3 positive channel counts, feature_dim >= 1, num_classes >= 2, "
                f"in_channels >= 1 and image_size >= 8; got channels={channels}, "
                f"feature_dim={feature_dim}, num_classes={num_classes}, "
                f"in_channels={in_channels}, image_size={image_size}"
            )
        self.channels = tuple(int(c) for c in channels)
        self.feature_dim = int(feature_dim)
        self.num_classes = int(num_classes)
        self.in_channels, self.image_size = int(in_channels), int(image_size)
        c1, c2, c3 = self.channels
        self.trunk = nn.Sequential(
            _conv_block(in_channels, c1), _conv_block(c1, c2), _conv_block(c2, c3)
        )
        side = image_size // 8  # three floor-halving max-pools: 28 -> 3, 64 -> 8
        self.embed = nn.Sequential(
            nn.Flatten(), nn.Linear(c3 * side * side, feature_dim), nn.ReLU(inplace=True)
        )
        self.head = nn.Linear(feature_dim, num_classes)

    def config(self) -> dict[str, object]:
        """Constructor arguments, as stored in ``config.json``."""
        return {
            "channels": list(self.channels),
            "feature_dim": self.feature_dim,
            "num_classes": self.num_classes,
            "in_channels": self.in_channels,
            "image_size": self.image_size,
        }

    @property
    def input_shape(self) -> tuple[int, int, int]:
        """(C, H, W) of the images it takes."""
        return (self.in_channels, self.image_size, self.image_size)

    def features(self, x: Tensor) -> Tensor:
        """Penultimate post-ReLU features (N, feature_dim) of images x (N, C, H, W) in [-1, 1]."""
        check_images(x, self.input_shape)
        return self.embed(self.trunk(x))  # (N, C3, size // 8, size // 8) -> (N, feature_dim)

    def forward(self, x: Tensor) -> Tensor:
        """Class logits (N, num_classes) of images x (N, C, H, W) in [-1, 1]."""
        return self.head(self.features(x))


def parameter_count(model: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in model.parameters())


# ----------------------------------------------------------------------------- inference


@torch.no_grad()
def classify(
    model: FashionClassifier, images: Tensor, batch_size: int = 512
) -> tuple[Tensor, Tensor]:
    """Predicted classes (N,) int64 and probabilities (N, num_classes) float32, in eval mode.

    Args:
        model: the classifier (its train/eval mode is restored afterwards).
        images: (N, C, H, W) float in [-1, 1], or uint8 in [0, 255] (converted here).
        batch_size: images per forward pass.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    try:
        probs = []
        for start in range(0, len(images), batch_size):
            x = images[start : start + batch_size].to(device)
            x = to_model_space(x) if x.dtype == torch.uint8 else x.float()
            probs.append(model(x).float().softmax(dim=1).cpu())
    finally:
        model.train(was_training)
    probs = torch.cat(probs) if probs else torch.empty(0, model.num_classes)
    return probs.argmax(dim=1), probs


def accuracy(model: FashionClassifier, data: ImageSet, *, batch_size: int = 1000) -> float:
    """Fraction of ``data`` (uint8 images with labels) that ``model`` classifies correctly."""
    if data.labels is None:
        raise ValueError(f"{data.name} has no labels to measure accuracy against")
    preds, _ = classify(model, data.images, batch_size=batch_size)
    return (preds == data.labels).float().mean().item()


# ----------------------------------------------------------------------------- save / load


def save_classifier(
    model: FashionClassifier, path_dir: str | Path, *, metadata: dict | None = None
) -> Path:
    """Save ``model`` as ``model.safetensors`` (float16) + ``config.json`` in ``path_dir``.

    Both files are written atomically (temp file, fsync, rename), so an interrupted save
    leaves the previous files intact.

    Args:
        model: the classifier; its float tensors are rounded to float16 on disk.
        path_dir: folder to write (created if missing).
        metadata: JSON-serialisable notes stored in ``config.json`` (e.g. test accuracy).

    Returns:
        The folder written.
    """
    folder = Path(path_dir)
    state = {
        name: t.to(torch.float16) if t.is_floating_point() else t
        for name, t in model.state_dict().items()
    }
    config = {
        "format": FORMAT,
        "model": model.config(),
        "weights_dtype": "float16",
        "metadata": metadata or {},
    }
    save_tensors(folder / WEIGHTS_NAME, state)
    write_json(folder / CONFIG_NAME, config)
    return folder


def _model_config(config: dict, path: Path) -> dict:
    """Strictly check a parsed ``config.json``; returns the model's constructor arguments."""
    if not isinstance(config, dict) or config.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a pixdiff Fashion-MNIST classifier ({FORMAT})")
    keys = {"channels", "feature_dim", "num_classes", "in_channels", "image_size"}
    model_config = config.get("model")
    unknown = set(config) - {"format", "model", "weights_dtype", "metadata"}
    if unknown or not isinstance(model_config, dict) or set(model_config) - keys:
        raise CheckpointError(
            f"{path}: unexpected keys; valid top-level keys are format, model, weights_dtype, "
            f"metadata, and valid model keys are {', '.join(sorted(keys))}"
        )
    if "channels" in model_config:
        model_config = {**model_config, "channels": tuple(model_config["channels"])}
    return model_config


def load_classifier(
    path_dir: str | Path | None = None, *, device: torch.device | str = "cpu"
) -> FashionClassifier:
    """Load a classifier saved by :func:`save_classifier`, in float32 and eval mode.

    Args:
        path_dir: folder holding ``model.safetensors`` and ``config.json``; default the shipped
            weights in ``pixdiff/assets/fashion_classifier/``.
        device: where to put the model.

    Raises:
        CheckpointError: (a ValueError) naming the file that is missing, corrupt, or does not
            fit the architecture in ``config.json``.
    """
    folder = Path(path_dir) if path_dir is not None else DEFAULT_DIR
    config_path, weights_path = folder / CONFIG_NAME, folder / WEIGHTS_NAME
    try:
        model_config = _model_config(read_json(config_path), config_path)
        try:
            model = FashionClassifier(**model_config)
        except (TypeError, ValueError) as err:
            raise CheckpointError(f"{config_path}: invalid model config ({err})") from None
        state, _ = read_tensors(weights_path)
        load_state_into(model, state, str(weights_path))  # casts float16 -> float32
    except CheckpointError as err:
        raise CheckpointError(f"{err}; {_RETRAIN_HINT}") from None
    return model.to(device).eval()
