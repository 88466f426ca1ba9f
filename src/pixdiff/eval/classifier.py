"""The Fashion-MNIST evaluation classifier: a small CNN whose 128-d penultimate features feed the
Frechet distance, KID and precision/recall, and whose class probabilities feed accuracy-style
metrics of class-conditional samples.

It plays for Fashion-MNIST the role Inception-v3 plays for ImageNet-like data (Heusel et al.
2017, "GANs Trained by a Two Time-Scale Update Rule Converge to a Local Nash Equilibrium"):
FD numbers are only comparable between runs that use the same shipped weights.

The weights ship in ``pixdiff/assets/fashion_classifier/`` as ``model.safetensors`` (float16,
loaded back to float32) plus ``config.json``, read and written with the atomic, pickle-free
helpers of :mod:`pixdiff.checkpoint`.
``bench/train_classifier.py`` rebuilds them.
"""

from __future__ import annotations

import math
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pixdiff.checkpoint import (
    CheckpointError,
    load_state_into,
    read_json,
    read_tensors,
    save_tensors,
    write_json,
)
from pixdiff.data import (
    Batch,
    BatchPlan,
    ImageSet,
    gather_batch,
    load_fashion_mnist,
    to_model_space,
)

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


# ----------------------------------------------------------------------------- training


def random_shift(
    x: Tensor, *, max_shift: int, generator: torch.Generator, fill: float = -1.0
) -> Tensor:
    """Translate each image by its own integer (dy, dx) in [-max_shift, max_shift]^2.

    Args:
        x: (N, C, H, W) float in [-1, 1].
        max_shift: largest shift in pixels along each axis.
        generator: source of the shifts.
        fill: value of the uncovered pixels, the background: -1 is black (Fashion-MNIST),
            1 white (emoji).
    """
    if max_shift == 0:
        return x
    n, c, h, w = x.shape
    padded = F.pad(x, (max_shift,) * 4, value=fill)  # (N, C, H + 2s, W + 2s)
    dy, dx = torch.randint(0, 2 * max_shift + 1, (2, n, 1), generator=generator)
    rows = (dy + torch.arange(h))[:, None, :, None]  # (N, 1, H, 1)
    cols = (dx + torch.arange(w))[:, None, None, :]  # (N, 1, 1, W)
    batch = torch.arange(n)[:, None, None, None]
    chans = torch.arange(c)[None, :, None, None]
    return padded[batch, chans, rows, cols]


def _lr_factor(step: int, *, total: int, warmup: int) -> float:
    """Linear warm-up, then cosine decay to zero (Loshchilov & Hutter 2017, SGDR)."""
    if step < warmup:
        return (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return 0.5 * (1 + math.cos(math.pi * progress))


def _train_step(
    model: FashionClassifier,
    optimizer: torch.optim.Optimizer,
    batch: Batch,
    *,
    max_shift: int,
    fill: float,
    generator: torch.Generator,
) -> tuple[float, int]:
    """One cross-entropy step on a (shift-augmented) batch; returns (loss, correct count)."""
    x = random_shift(batch.images, max_shift=max_shift, generator=generator, fill=fill)
    logits = model(x.contiguous(memory_format=torch.channels_last))
    loss = F.cross_entropy(logits, batch.labels)
    if not torch.isfinite(loss):
        raise FloatingPointError(f"the classifier loss became {loss.item()}; lower the lr")
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return loss.item(), int((logits.argmax(1) == batch.labels).sum())


def _train_epoch(
    model: FashionClassifier,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    data: ImageSet,
    plan: BatchPlan,
    *,
    epoch: int,
    max_shift: int,
    fill: float,
    generator: torch.Generator,
) -> tuple[float, float]:
    """One pass over ``plan``'s batches of ``epoch``; returns (mean loss, train accuracy)."""
    model.train()
    order, flips = plan.epoch_order(epoch)
    loss_sum, correct = 0.0, 0
    for k in range(plan.steps_per_epoch):
        rows = slice(k * plan.batch_size, (k + 1) * plan.batch_size)
        batch = gather_batch(data, order[rows], flips[rows])
        loss, hits = _train_step(
            model, optimizer, batch, max_shift=max_shift, fill=fill, generator=generator
        )
        scheduler.step()
        loss_sum, correct = loss_sum + loss * len(batch.images), correct + hits
    seen = plan.steps_per_epoch * plan.batch_size
    return loss_sum / seen, correct / seen


def _init_model(seed: int, **config: int) -> FashionClassifier:
    """A fresh classifier initialised from ``seed`` without touching the global RNG."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return FashionClassifier(**config)


def train_classifier(
    *,
    epochs: int = 3,
    batch_size: int = 128,
    lr: float = 2e-3,
    seed: int = 0,
    augment: bool = False,
    progress: bool = False,
    weight_decay: float = 0.05,
    train_data: ImageSet | None = None,
    test_data: ImageSet | None = None,
    max_shift: int = 2,
    flip: bool = True,
    fill: float = -1.0,
    feature_dim: int = 128,
) -> tuple[FashionClassifier, float]:
    """Train a :class:`FashionClassifier` with AdamW (Loshchilov & Hutter 2019), cosine lr.

    Deterministic given ``seed`` (and the thread count): the seed fixes the initialisation,
    the batch order and flips (:class:`~pixdiff.data.BatchPlan`) and the shifts.

    Args:
        epochs: passes over the training split.
        batch_size: images per step.
        lr: peak learning rate, reached after 100 warm-up steps, then cosine-decayed to 0.
        seed: random seed (>= 0).
        augment: random horizontal flips and +-``max_shift`` px shifts of the training images.
            Off by default: at a few epochs it costs ~1 point of Fashion-MNIST test accuracy
            (it pays only in longer runs); see ``assets/fashion_classifier/README.md``.
        progress: print one line per epoch (loss, accuracies, time) to stderr.
        weight_decay: AdamW decoupled weight decay.
        train_data, test_data: labelled uint8 (N, C, H, W) sets of one shape; default
            Fashion-MNIST. The network is built for their shape and class count.
        max_shift: largest shift of ``augment``, in pixels.
        flip: whether ``augment`` flips (False for images whose mirror is another class).
        fill: the background the shifts uncover (-1 black, 1 white).
        feature_dim: width of the feature layer.

    Returns:
        The trained model (eval mode) and its accuracy on ``test_data``.
    """
    if epochs < 1 or lr <= 0:
        raise ValueError(f"need epochs >= 1 and lr > 0, got epochs={epochs}, lr={lr}")
    train = train_data if train_data is not None else load_fashion_mnist("train")
    test = test_data if test_data is not None else load_fashion_mnist("test")
    if train.labels is None:
        raise ValueError(f"{train.name} has no labels to train the classifier on")
    plan = BatchPlan(num_items=len(train), batch_size=batch_size, seed=seed, flip=augment and flip)
    c, h, w = train.images.shape[1:]
    if h != w:
        raise ValueError(f"{train.name}: the classifier takes square images, got {h}x{w}")
    shape = {"in_channels": c, "image_size": h, "feature_dim": feature_dim}
    shape["num_classes"] = max(train.num_classes or 0, 2)
    # channels-last lets oneDNN run the convolutions ~1.5x faster on CPU
    model = _init_model(seed, **shape).to(memory_format=torch.channels_last)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    total = epochs * plan.steps_per_epoch
    warmup = min(100, total // 10 + 1)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: _lr_factor(step, total=total, warmup=warmup)
    )
    generator = torch.Generator().manual_seed(seed)
    start = time.perf_counter()
    for epoch in range(epochs):
        loss, train_acc = _train_epoch(
            model, optimizer, scheduler, train, plan, epoch=epoch,
            max_shift=max_shift if augment else 0, fill=fill, generator=generator,
        )  # fmt: skip
        if progress:
            print(
                f"epoch {epoch + 1}/{epochs}: loss {loss:.4f}, train acc {train_acc:.4f}, "
                f"test acc {accuracy(model, test):.4f}, {time.perf_counter() - start:.0f} s",
                file=sys.stderr,
                flush=True,
            )
    model = model.to(memory_format=torch.contiguous_format).eval()
    return model, accuracy(model, test)


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
