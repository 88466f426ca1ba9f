"""The noise-conditional classifier p(y | x_t) of classifier guidance (Dhariwal & Nichol 2021,
Sec. 4): a small ADM-style residual encoder with a timestep embedding, and its wrapper on a
schedule.

The classifier is called as ``classifier(x_t, t) -> logits`` with pixdiff times t in [0, 1];
:class:`pixdiff.guidance.ClassifierGuidance` moves a denoiser's (x_t, t) onto the classifier's
schedule at equal log-SNR, so it guides a model trained on another schedule too. Training is in
:mod:`pixdiff.training.noisy_classifier`, saving and loading in :mod:`pixdiff.classifier_store`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pixdiff.nets.checks import broadcast_c_noise, check_config_ints, check_image
from pixdiff.nets.layers import TimestepEmbedder, group_norm
from pixdiff.nets.unet_blocks import ResBlock
from pixdiff.schedules import Schedule


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
