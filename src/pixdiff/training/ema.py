"""Exponential moving average of weights (Polyak averaging; as used by Ho et al. 2020)."""

from __future__ import annotations

import copy

import torch
from torch import nn


class EMA:
    """A frozen copy of ``net`` whose weights track net's: w_ema <- d w_ema + (1 - d) w.

    With warm-up the decay is min(decay, (1 + n) / (10 + n)) after n updates, so early averages
    are not dominated by the random initialisation (TensorFlow's ExponentialMovingAverage
    num_updates rule).
    """

    def __init__(self, net: nn.Module, *, decay: float, warmup: bool = True):
        if not 0 <= decay < 1:
            raise ValueError(f"EMA decay must be in [0, 1), got {decay}")
        self.decay, self.warmup = decay, warmup
        self.module = copy.deepcopy(net).eval().requires_grad_(False)

    def current_decay(self, updates: int) -> float:
        return min(self.decay, (1 + updates) / (10 + updates)) if self.warmup else self.decay

    @torch.no_grad()
    def update(self, net: nn.Module, updates: int) -> None:
        """Blend ``net`` in; ``updates`` is the number of updates made before this one."""
        d = self.current_decay(updates)
        ema_params = list(self.module.parameters())
        params = [p.detach().to(q.dtype) for p, q in zip(net.parameters(), ema_params, strict=True)]
        torch._foreach_lerp_(ema_params, params, 1 - d)
        for b_ema, b in zip(self.module.buffers(), net.buffers(), strict=True):
            b_ema.copy_(b)
