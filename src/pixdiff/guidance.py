"""Guidance: wrappers that take a denoiser and return a denoiser.

Classifier-free guidance (Ho & Salimans 2022): with conditional and unconditional estimates
from ONE batched pass, x0 = x0_u + w (x0_c - x0_u). w = 1 is the conditional model, w = 0 the
unconditional one; the paper's (1 + gamma) convention is w = 1 + gamma. Since x_t is shared,
mixing in x0 equals mixing in eps.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

from pixdiff.conditioning import Cond
from pixdiff.denoiser import Denoised
from pixdiff.prediction import eps_from_x0


def null_label_cond(num_classes: int) -> Callable[[Cond], Cond]:
    """Map a class condition to the unconditional one (the null label ``num_classes``)."""

    def uncond(cond: Cond) -> Cond:
        return Cond(label=torch.full_like(cond.label, num_classes))

    return uncond


class ClassifierFreeGuidance(nn.Module):
    """Classifier-free guidance of ``denoiser`` with scale w (Ho & Salimans 2022, Eq. 6).

    Args:
        denoiser: (x_t, t, cond) -> Denoised, with a ``.schedule``.
        scale: w; 1 returns the conditional estimate unchanged (no extra pass).
        uncond: builds the unconditional Cond from the conditional one.
    """

    def __init__(self, denoiser: nn.Module, *, scale: float, uncond: Callable[[Cond], Cond]):
        super().__init__()
        self.denoiser, self.scale, self.uncond = denoiser, scale, uncond

    @property
    def schedule(self):
        return self.denoiser.schedule

    def coefs(self, t, x):
        return self.denoiser.coefs(t, x)

    def forward(self, x_t: Tensor, t: Tensor | float, cond: Cond | None = None) -> Denoised:
        if cond is None:
            raise ValueError("classifier-free guidance needs a condition (a class or a prompt)")
        if self.scale == 1:
            return self.denoiser(x_t, t, cond)
        t = torch.as_tensor(t, dtype=torch.float64, device=x_t.device).expand(x_t.shape[0])
        both = self.denoiser(
            torch.cat([x_t, x_t]), torch.cat([t, t]), Cond.cat([cond, self.uncond(cond)])
        )
        x0_c, x0_u = both.x0.chunk(2)
        x0 = x0_u + self.scale * (x0_c - x0_u)
        eps = eps_from_x0(x_t.to(x0.dtype), x0, self.denoiser.coefs(t, x_t))
        return Denoised(x0, eps, None, both.raw.chunk(2)[0])
