"""Self-conditioning in training (Chen, Zhang & Hinton 2023, "Analog Bits", Sec. 3, Alg. 1).

Half of the batches give the network, beside x_t, its own first estimate of x0, made with no
previous estimate (zeros) and without gradients (the paper's stop-gradient); the other half
give it zeros. The network so learns both to refine an estimate, as every sampling step after
the first asks of it (:mod:`pixdiff.self_conditioning`), and to start from none.
"""

from __future__ import annotations

import torch
from torch import Tensor

from pixdiff.conditioning import Cond
from pixdiff.denoiser import Denoiser
from pixdiff.self_conditioning import with_estimate

ESTIMATE_PROBABILITY = 0.5  # Chen et al. 2023, Sec. 3 and Alg. 1


def training_cond(
    denoiser: Denoiser, x_t: Tensor, t: Tensor, cond: Cond | None, generator: torch.Generator
) -> Cond | None:
    """The Cond of a training batch at (x_t, t): for a self-conditioned denoiser, with
    probability 1/2 the batch's own x0 estimate as ``self_cond`` (Alg. 1: one coin per batch,
    from ``generator``); else ``cond`` unchanged (zeros), as for every other denoiser, which
    draws nothing."""
    if not denoiser.self_condition:
        return cond
    if torch.rand((), generator=generator).item() >= ESTIMATE_PROBABILITY:
        return cond
    with torch.no_grad():
        x0 = denoiser(x_t, t, cond).x0
    return with_estimate(cond, x0.detach())
