"""Training of the evaluation classifier (:class:`~pixdiff.eval.classifier.FashionClassifier`):
AdamW with a warm-up and a cosine learning rate, optional flip and shift augmentation, and a
deterministic batch order, so the shipped weights can be rebuilt (``bench/train_classifier.py``).
"""

from __future__ import annotations

import math
import sys
import time

import torch
import torch.nn.functional as F
from torch import Tensor

from pixdiff.data import Batch, BatchPlan, ImageSet, gather_batch, load_fashion_mnist
from pixdiff.eval.classifier import FashionClassifier, accuracy


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
