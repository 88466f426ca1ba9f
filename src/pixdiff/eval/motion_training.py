"""Training of the motion classifier (:class:`~pixdiff.nets.video_classifier.VideoClassifier`)
on the synthetic clips' 16 motions: AdamW, warm-up and cosine learning rate, a seeded batch
order, and half the batches at every second frame (from frame 0 or 1), so that 8-frame clips
(a temporal-SR cascade's first stage) have meaningful features too.
``bench/train_motion_classifier.py`` rebuilds the shipped weights with it.
"""

from __future__ import annotations

import sys
import time

import torch
import torch.nn.functional as F
from torch import Tensor

from pixdiff.data import ClipSet, to_model_space
from pixdiff.eval.classifier_training import _lr_factor
from pixdiff.eval.motion_classifier import ClipExtractor
from pixdiff.nets.video_classifier import VideoClassifier, VideoClassifierConfig


def motion_accuracy_of(extractor: ClipExtractor, data: ClipSet) -> float:
    """Share of ``data``'s clips whose predicted motion is their motion."""
    if data.motions is None:
        raise ValueError(f"{data.name} has no motion labels")
    _, logits = extractor.embed(data.clips)
    return (logits.argmax(1) == data.motions).double().mean().item()


def _batch(data: ClipSet, rows: Tensor, g: torch.Generator, fit) -> tuple[Tensor, Tensor]:
    """Clips at ``rows`` in model space, fitted to the network; with probability 1/2 every
    second frame from a random offset (0 or 1)."""
    x = to_model_space(data.clips[rows])  # (B, F, C, H, W)
    if torch.rand((), generator=g) < 0.5:
        x = x[:, int(torch.randint(0, 2, (), generator=g)) :: 2]
    return fit(x), data.motions[rows]


def train_motion_classifier(
    train: ClipSet,
    test: ClipSet,
    *,
    config: VideoClassifierConfig | None = None,
    epochs: int = 8,
    batch_size: int = 32,
    lr: float = 3e-3,
    weight_decay: float = 0.05,
    seed: int = 0,
    progress: bool = False,
) -> tuple[VideoClassifier, float]:
    """Train a :class:`VideoClassifier` with cross-entropy on ``train``'s motions (AdamW,
    Loshchilov & Hutter 2019; cosine lr, Loshchilov & Hutter 2017). Deterministic given
    ``seed`` and the thread count.

    Args:
        train, test: clip sets with motions; frames of any size are resized to the network's.
        config: the network (default :class:`VideoClassifierConfig`, 16 frames of 32x32).
        epochs: passes over ``train``.
        batch_size: clips per step.
        lr: peak learning rate (warm-up of a tenth of the steps, at most 100, then cosine to 0).
        weight_decay: AdamW's decoupled weight decay.
        seed: the initialisation, batch order and frame subsampling.
        progress: one line per epoch on stderr.

    Returns:
        The model (eval mode) and its motion accuracy on ``test``.
    """
    if train.motions is None or test.motions is None:
        raise ValueError("the motion classifier trains and tests on clips with motion labels")
    if epochs < 1 or lr <= 0 or batch_size < 1:
        raise ValueError(
            f"need epochs >= 1, lr > 0, batch_size >= 1; got {epochs}, {lr}, {batch_size}"
        )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = VideoClassifier(config or VideoClassifierConfig())
    extractor = ClipExtractor(model, name="training")
    g = torch.Generator().manual_seed(seed)
    steps = len(train) // batch_size
    if steps < 1:
        raise ValueError(f"{len(train)} training clips are fewer than one batch of {batch_size}")
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    total, warmup = epochs * steps, min(100, epochs * steps // 10 + 1)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: _lr_factor(step, total=total, warmup=warmup)
    )
    start = time.perf_counter()
    for epoch in range(epochs):
        model.train()
        order, loss_sum = torch.randperm(len(train), generator=g), 0.0
        for k in range(steps):
            x, y = _batch(train, order[k * batch_size : (k + 1) * batch_size], g, extractor.prepare)
            loss = F.cross_entropy(model(x), y)
            if not torch.isfinite(loss):
                raise FloatingPointError(f"the motion classifier's loss became {loss.item()}")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            loss_sum += loss.item()
        model.eval()
        if progress:
            print(
                f"epoch {epoch + 1}/{epochs}: loss {loss_sum / steps:.4f}, held-out motion acc "
                f"{motion_accuracy_of(extractor, test):.4f}, {time.perf_counter() - start:.0f} s",
                file=sys.stderr, flush=True,
            )  # fmt: skip
    return model.eval(), motion_accuracy_of(extractor, test)
