"""Ancestral sampling of the DDPM reverse process (Ho et al. 2020, Alg. 2), on any grid."""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor

from pixdiff.conditioning import Cond
from pixdiff.samplers.common import Generators, randn_like, run_steps
from pixdiff.schedules import Schedule

Variance = Literal["small", "large"]


def posterior(schedule: Schedule, t: Tensor, s: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """q(x_s | x_t, x0) for s < t on any Gaussian path (Kingma et al. 2021, Eq. 32-34).

    With alpha_ts = alpha_t / alpha_s and sigma_ts^2 = sigma_t^2 - alpha_ts^2 sigma_s^2:
    mean = alpha_ts sigma_s^2 / sigma_t^2 x_t + alpha_s sigma_ts^2 / sigma_t^2 x0,
    var = sigma_ts^2 sigma_s^2 / sigma_t^2 (DDPM's beta~, "fixed small"); sigma_ts^2 is
    DDPM's beta ("fixed large"). On a discrete grid these are Ho et al.'s Eq. 7 tables.

    Returns:
        (coef_xt, coef_x0, var_small, var_large), float64 scalars.
    """
    a_t, s_t, a_s, s_s = schedule.alpha(t), schedule.sigma(t), schedule.alpha(s), schedule.sigma(s)
    a_ts = a_t / a_s
    var_ts = s_t**2 - a_ts**2 * s_s**2
    return a_ts * s_s**2 / s_t**2, a_s * var_ts / s_t**2, var_ts * s_s**2 / s_t**2, var_ts


def ddpm_step(
    denoiser,
    x: Tensor,
    t: Tensor,
    s: Tensor,
    *,
    variance: Variance = "small",
    cond: Cond | None = None,
    generator: Generators = None,
) -> Tensor:
    """One ancestral step x_t -> x_s ~ N(posterior mean at x0_hat, fixed variance)."""
    x0 = denoiser(x, t, cond).x0
    coef_xt, coef_x0, var_small, var_large = posterior(denoiser.schedule, t, s)
    mean = coef_xt * x + coef_x0 * x0
    if s == 0:  # the last step returns the mean (Ho et al. 2020, Alg. 2, z = 0 at t = 1)
        return mean
    var = var_small if variance == "small" else var_large
    return mean + var.sqrt() * randn_like(x, generator)


def sample_ddpm(
    denoiser,
    x: Tensor,
    ts: Tensor,
    *,
    variance: Variance = "small",
    cond: Cond | None = None,
    generator: Generators = None,
    progress: bool = False,
) -> Tensor:
    """DDPM ancestral sampling (Ho et al. 2020, Alg. 2); respaced grids as in Nichol & Dhariwal
    2021 (Sec. 4): the transition between grid points is the exact forward-process posterior.

    Args:
        x: (N, C, H, W) noise at ts[0]; ts: decreasing grid ending at 0.
        variance: small = beta~ (posterior), large = beta (Ho et al. 2020, Sec. 3.2).
    """
    if variance not in ("small", "large"):
        raise ValueError(f"unknown DDPM variance {variance!r}; valid: small, large")

    def step(x, t, s, i):
        return ddpm_step(denoiser, x, t, s, variance=variance, cond=cond, generator=generator)

    with torch.no_grad():
        return run_steps(step, x, ts, progress=progress, desc="ddpm")
