"""A noise-conditional classifier p(y | x_t) for classifier guidance (Dhariwal & Nichol 2021,
Sec. 4): a small ADM-style residual encoder with a timestep embedding, trained with
cross-entropy on images noised along a schedule, saved as safetensors + config.json.

The classifier is called as ``classifier(x_t, t) -> logits`` with pixdiff times t in [0, 1];
:class:`pixdiff.guidance.ClassifierGuidance` moves a denoiser's (x_t, t) onto the classifier's
schedule at equal log-SNR, so it guides a model trained on another schedule too.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm.auto import tqdm

from pixdiff.checkpoint import (
    CONFIG,
    MODEL,
    CheckpointError,
    load_state_into,
    read_json,
    read_tensors,
    save_tensors,
    write_json,
)
from pixdiff.config import DiffusionConfig
from pixdiff.data import ImageSet, batches
from pixdiff.nets.layers import (
    TimestepEmbedder,
    broadcast_c_noise,
    check_config_ints,
    check_image,
    config_from_dict,
    config_to_dict,
    group_norm,
)
from pixdiff.nets.unet import ResBlock
from pixdiff.schedules import Schedule, q_sample, schedule_from_dict
from pixdiff.training.losses import sample_time
from pixdiff.training.trainer import TrainingError

FORMAT = "pixdiff.noisy_classifier/1"


@dataclass(frozen=True)
class NoisyClassifierConfig:
    """Shape of the classifier: one residual block per entry of ``channels``, each after the
    first halving H and W, then global average pooling and a linear head."""

    in_channels: int = 1
    image_size: int = 28
    num_classes: int = 10
    channels: tuple[int, ...] = (32, 64, 64)
    emb_dim: int = 128
    num_groups: int = 8

    def __post_init__(self):
        check_config_ints(
            self, positive=("in_channels", "image_size", "num_classes", "emb_dim", "num_groups")
        )
        if not self.channels or min(self.channels) < 1:
            raise ValueError(f"channels must be positive ints, got {self.channels}")


class NoisyClassifierNet(nn.Module):
    """``net(x_in, c_noise) -> logits (N, num_classes)``; the ADM classifier's encoder, shrunk
    (Dhariwal & Nichol 2021, Sec. 4.1), with mean pooling in place of attention pooling."""

    def __init__(self, config: NoisyClassifierConfig):
        super().__init__()
        self.config = c = config
        self.time_embed = TimestepEmbedder(c.emb_dim)
        self.stem = nn.Conv2d(c.in_channels, c.channels[0], 3, padding=1)
        ins = (c.channels[0], *c.channels[:-1])
        self.blocks = nn.ModuleList(
            ResBlock(
                i,
                o,
                c.emb_dim,
                dropout=0.0,
                scale_shift_norm=True,
                num_groups=c.num_groups,
                resample="down" if k else "none",
            )  # fmt: skip
            for k, (i, o) in enumerate(zip(ins, c.channels, strict=True))
        )
        self.out_norm = group_norm(c.channels[-1], max_groups=c.num_groups)
        self.head = nn.Linear(c.channels[-1], c.num_classes)

    def forward(self, x: Tensor, c_noise: Tensor | float) -> Tensor:
        """x (N, C, H, W), c_noise scalar or (N,) -> logits (N, num_classes)."""
        check_image(x, channels=self.config.in_channels, multiple=1, who="NoisyClassifierNet")
        emb = self.time_embed(broadcast_c_noise(c_noise, x.shape[0], x.device))
        h = self.stem(x)
        for block in self.blocks:
            h = block(h, emb)
        return self.head(F.silu(self.out_norm(h)).mean(dim=(2, 3)))  # (N, C) -> (N, K)


class NoisyClassifier(nn.Module):
    """A :class:`NoisyClassifierNet` on a schedule: ``(x_t, t) -> logits``.

    The net sees x_t / sqrt(alpha^2 + sigma^2) (unit variance for unit-variance data, EDM's c_in
    with sigma_data = 1, Karras et al. 2022, Table 1, so VE/EDM paths train too) and the
    schedule's timestep as its noise level.
    """

    def __init__(self, net: NoisyClassifierNet, schedule: Schedule, class_names=None):
        super().__init__()
        self.net, self.schedule, self.class_names = net, schedule, class_names

    @property
    def num_classes(self) -> int:
        return self.net.config.num_classes

    def forward(self, x_t: Tensor, t: Tensor | float) -> Tensor:
        t = torch.as_tensor(t, dtype=torch.float64, device=x_t.device).expand(x_t.shape[0])
        c = self.schedule.coefs(t, x_t.dim())
        x_in = x_t * torch.rsqrt(c.alpha**2 + c.sigma**2).to(x_t.dtype)
        param = next(self.net.parameters())
        return self.net(x_in.to(param.dtype), self.schedule.timestep(t).float())


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
) -> tuple[NoisyClassifier, float]:
    """Train a :class:`NoisyClassifier` on ``data`` noised along ``schedule`` with AdamW
    (Loshchilov & Hutter 2019). Returns it (eval mode, no grads) and the last loss."""
    if steps < 1 or batch_size < 1 or lr <= 0:
        raise ValueError(f"need steps, batch_size >= 1 and lr > 0; got {steps}, {batch_size}, {lr}")
    classifier = build_classifier(data, schedule, seed=seed).to(device).train()
    opt = torch.optim.AdamW(classifier.parameters(), lr=lr)
    generator = torch.Generator().manual_seed(seed)
    stream = batches(data, batch_size=batch_size, seed=seed, device=device)
    bar = tqdm(range(steps), desc="train-classifier", disable=not progress, dynamic_ncols=True)
    for step, batch in zip(bar, stream, strict=False):  # stream is endless
        loss = classifier_loss(classifier, batch.images, batch.labels, generator)
        if not torch.isfinite(loss):
            raise TrainingError(f"classifier loss became {loss.item()} at step {step + 1}")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        bar.set_postfix(loss=f"{loss.item():.4f}")
    return classifier.eval().requires_grad_(False), loss.item()


def check_out_dir(out: str | Path, *, overwrite: bool) -> Path:
    """Refuse to replace a saved classifier in ``out`` unless ``overwrite``."""
    out = Path(out)
    if (out / CONFIG).exists() and not overwrite:
        raise FileExistsError(f"{out} already holds {CONFIG}; pass --overwrite to replace it")
    return out


def save_noisy_classifier(
    classifier: NoisyClassifier, out: str | Path, *, metadata: dict | None = None
) -> Path:
    """Write ``model.safetensors`` then ``config.json`` (each atomically) into ``out``."""
    out = Path(out)
    save_tensors(out / MODEL, classifier.net.state_dict())
    write_json(
        out / CONFIG,
        {
            "format": FORMAT,
            "net": config_to_dict(classifier.net.config),
            "schedule": classifier.schedule.to_dict(),
            "class_names": classifier.class_names,
            "metadata": metadata or {},
        },
    )
    return out


def load_noisy_classifier(
    path: str | Path, *, device: str | torch.device = "cpu"
) -> NoisyClassifier:
    """Load a classifier saved by :func:`save_noisy_classifier` (eval mode, no grads; no code
    runs). Raises CheckpointError naming the file that is missing, corrupt or foreign."""
    path = Path(path)
    config = read_json(path / CONFIG)
    keys = {"format", "net", "schedule", "class_names", "metadata"}
    if not isinstance(config, dict) or config.get("format") != FORMAT or set(config) != keys:
        raise CheckpointError(
            f"{path / CONFIG} is not a noise-conditional classifier made by "
            "`pixdiff train-classifier`"
        )
    try:
        net = NoisyClassifierNet(config_from_dict(NoisyClassifierConfig, config["net"]))
        schedule = schedule_from_dict(config["schedule"])
    except (TypeError, ValueError) as e:
        raise CheckpointError(f"{path / CONFIG}: invalid classifier config ({e})") from None
    state, _ = read_tensors(path / MODEL)
    load_state_into(net, state, str(path / MODEL))
    classifier = NoisyClassifier(net, schedule, config["class_names"])
    return classifier.to(device).eval().requires_grad_(False)
