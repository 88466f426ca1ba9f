"""DDIM (Song, Meng & Ermon 2021): the non-Markovian sampler with stochasticity eta."""

from __future__ import annotations

import torch
from torch import Tensor
from tqdm.auto import tqdm

from pixdiff.conditioning import Cond
from pixdiff.posterior import posterior
from pixdiff.samplers.common import Generators, check_grid, randn_like


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
    """One DDIM step x_s = alpha_s x0 + sqrt(sigma_s^2 - c^2) eps + c z, c = eta sqrt(beta~)
    (Song et al. 2021, Eq. 12 and 16), 1 NFE. eta = 0 is the deterministic DDIM (Sec. 4.2);
    eta = 1 is DDPM with fixed-small variance.

    Args:
        x: (N, C, H, W) the state at t; t > s: consecutive grid times (the grid ends at 0).
        eta: 0 (deterministic) to 1 (ancestral).
    """
    d = denoiser(x, t, cond)
    sched = denoiser.schedule
    a_s, s_s = sched.alpha(s), sched.sigma(s)
    if eta == 0:
        return a_s * d.x0 + s_s * d.eps
    c = eta * posterior(sched, t, s).var_small.sqrt()
    x_s = a_s * d.x0 + (s_s**2 - c**2).clamp_min(0).sqrt() * d.eps
    return x_s + c * randn_like(x, generator) if s > 0 else x_s


def invert_ddim(
    denoiser, x0: Tensor, ts: Tensor, *, cond: Cond | None = None, progress: bool = False
) -> Tensor:
    """DDIM inversion: run the deterministic DDIM map backwards, x0 -> x_T (Song et al. 2021,
    Sec. 4.3; Dhariwal & Nichol 2021, App. F).

    Each step s -> t (s < t) re-noises the denoiser's estimate made at the known point:
    x_t = alpha_t x0_hat + sigma_t eps_hat with (x0_hat, eps_hat) from (x_s, s). At s = 0 the
    model is undefined (sigma = 0), so the first step evaluates it at (x0, t). Inverting and
    then sampling on the same grid returns x0 up to the O(h) error of both directions.

    Args:
        x0: (N, ...) clean data; ts: the sampling grid (decreasing, ending at 0), walked upwards.
    """
    check_grid(ts)
    up = ts.flip(0)
    sched = denoiser.schedule
    x = x0
    with torch.no_grad():
        for s, t in tqdm(
            list(zip(up[:-1], up[1:], strict=True)),
            disable=not progress,
            desc="ddim-inversion",
            leave=False,
        ):
            d = denoiser(x, t if s == 0 else s, cond)
            x = sched.alpha(t) * d.x0 + sched.sigma(t) * d.eps
    return x
