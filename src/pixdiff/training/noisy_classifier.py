"""Training of the noise-conditional classifier (Dhariwal & Nichol 2021, Sec. 4.1): cross-entropy
on images noised along a schedule, optimised with AdamW."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor
from tqdm.auto import tqdm

from pixdiff.config import DiffusionConfig
from pixdiff.data import ImageSet, batches
from pixdiff.nets.noisy_classifier import NoisyClassifier, NoisyClassifierConfig, NoisyClassifierNet
from pixdiff.schedules import Schedule, q_sample
from pixdiff.training.loggers import StdoutLogger, StepMeter
from pixdiff.training.losses import sample_time


class ClassifierError(ValueError):
    """The noise-conditional classifier cannot be trained: its loss stopped being finite (a
    ValueError, so ``pixdiff train-classifier`` reports it in one line)."""


def classifier_loss(
    classifier: NoisyClassifier, x0: Tensor, labels: Tensor, generator: torch.Generator
) -> Tensor:
    """Cross-entropy on x_t ~ q(x_t | x0) at uniformly sampled t (Dhariwal & Nichol 2021,
    Sec. 4.1; t as in DDPM training, Ho et al. 2020, Alg. 1). x0: (N, C, H, W) in [-1, 1]."""
    t = sample_time(DiffusionConfig(), classifier.schedule, x0.shape[0], generator)
    noise = torch.randn(x0.shape, generator=generator).to(x0.device)
    x_t = q_sample(classifier.schedule, x0, t.to(x0.device), noise)
    return F.cross_entropy(classifier(x_t, t.to(x0.device)), labels)


def build_classifier(data: ImageSet, schedule: Schedule, *, seed: int = 0) -> NoisyClassifier:
    """A fresh classifier shaped for ``data`` (channels, size, classes), initialised from
    ``seed`` without touching the global RNG."""
    if data.labels is None:
        raise ValueError(f"{data.name} has no labels to train a classifier on")
    cfg = NoisyClassifierConfig(
        in_channels=data.images.shape[1], image_size=data.images.shape[-1],
        num_classes=data.num_classes,
    )  # fmt: skip
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return NoisyClassifier(NoisyClassifierNet(cfg), schedule, data.class_names)


def train_noisy_classifier(
    data: ImageSet,
    schedule: Schedule,
    *,
    steps: int,
    batch_size: int = 128,
    lr: float = 3e-4,
    seed: int = 0,
    device: str | torch.device = "cpu",
    progress: bool = False,
    log_every: int = 0,
) -> tuple[NoisyClassifier, float]:
    """Train a :class:`NoisyClassifier` on ``data`` noised along ``schedule`` with AdamW
    (Loshchilov & Hutter 2019). Returns it (eval mode, no grads) and the last loss. With
    ``log_every`` > 0, one line on stdout every ``log_every`` steps and at the last
    (:class:`~pixdiff.training.loggers.StdoutLogger`)."""
    if steps < 1 or batch_size < 1 or lr <= 0:
        raise ValueError(f"need steps, batch_size >= 1 and lr > 0; got {steps}, {batch_size}, {lr}")
    classifier = build_classifier(data, schedule, seed=seed).to(device).train()
    opt = torch.optim.AdamW(classifier.parameters(), lr=lr)
    generator = torch.Generator().manual_seed(seed)
    stream = batches(data, batch_size=batch_size, seed=seed, device=device)
    bar = tqdm(range(steps), desc="train-classifier", disable=not progress, dynamic_ncols=True)
    lines = StdoutLogger("train-classifier", steps, batch_size)
    meter = (
        StepMeter(lines, every=log_every, last=steps, batch_size=batch_size) if log_every else None
    )
    for step, batch in zip(bar, stream, strict=False):  # stream is endless
        loss = classifier_loss(classifier, batch.images, batch.labels, generator)
        if not torch.isfinite(loss):
            raise ClassifierError(f"classifier loss became {loss.item()} at step {step + 1}")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        bar.set_postfix(loss=f"{loss.item():.4f}")
        if meter is not None:
            meter.update(step + 1, loss=loss.item(), lr=lr)
    return classifier.eval().requires_grad_(False), loss.item()
