"""DDIM (Song, Meng & Ermon 2021): the non-Markovian sampler with stochasticity eta."""

from __future__ import annotations

import torch
from torch import Tensor

from pixdiff.conditioning import Cond
from pixdiff.samplers.common import Generators, randn_like, run_steps
from pixdiff.samplers.ddpm import posterior


def ddim_step(
    denoiser,
    x: Tensor,
    t: Tensor,
    s: Tensor,
    *,
    eta: float = 0.0,
    cond: Cond | None = None,
    generator: Generators = None,
) -> Tensor:
    """x_s = alpha_s x0 + sqrt(sigma_s^2 - c^2) eps + c z, c = eta sqrt(beta~) (Song et al. 2021,
    Eq. 12 and 16). eta = 0 is the deterministic DDIM; eta = 1 is DDPM with fixed-small variance."""
    d = denoiser(x, t, cond)
    sched = denoiser.schedule
    a_s, s_s = sched.alpha(s), sched.sigma(s)
    if eta == 0:
        return a_s * d.x0 + s_s * d.eps
    c = eta * posterior(sched, t, s)[2].sqrt()
    x_s = a_s * d.x0 + (s_s**2 - c**2).clamp_min(0).sqrt() * d.eps
    return x_s + c * randn_like(x, generator) if s > 0 else x_s


def sample_ddim(
    denoiser,
    x: Tensor,
    ts: Tensor,
    *,
    eta: float = 0.0,
    cond: Cond | None = None,
    generator: Generators = None,
    progress: bool = False,
) -> Tensor:
    """DDIM sampling over the grid ``ts`` (Song et al. 2021, Sec. 4.2).

    Args:
        x: (N, C, H, W) noise at ts[0]; ts: decreasing grid ending at 0.
        eta: 0 (deterministic) to 1 (ancestral).
    """
    if not 0 <= eta <= 1:
        raise ValueError(f"DDIM eta must be in [0, 1], got {eta}")

    def step(x, t, s, i):
        return ddim_step(denoiser, x, t, s, eta=eta, cond=cond, generator=generator)

    with torch.no_grad():
        return run_steps(step, x, ts, progress=progress, desc="ddim")
