"""Ancestral sampling of the DDPM reverse process (Ho et al. 2020, Alg. 2), on any grid."""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor

from pixdiff.conditioning import Cond
from pixdiff.samplers.common import Generators, randn_like, run_steps
from pixdiff.schedules import Schedule

Variance = Literal["small", "large", "learned"]


def transition(schedule: Schedule, s: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
    """q(x_t | x_s) = N(alpha_ts x_s, sigma_ts^2 I) for s < t on any Gaussian path (Kingma et
    al. 2021, Sec. 2, q(z_t | z_s)): alpha_ts = alpha_t / alpha_s and
    sigma_ts^2 = sigma_t^2 - alpha_ts^2 sigma_s^2.

    Returns:
        (alpha_ts, sigma_ts^2), float64.
    """
    a_ts = schedule.alpha(t) / schedule.alpha(s)
    return a_ts, schedule.sigma(t) ** 2 - a_ts**2 * schedule.sigma(s) ** 2


def posterior(schedule: Schedule, t: Tensor, s: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """q(x_s | x_t, x0) for s < t on any Gaussian path (Kingma et al. 2021, Eq. 32-34).

    With alpha_ts = alpha_t / alpha_s and sigma_ts^2 = sigma_t^2 - alpha_ts^2 sigma_s^2:
    mean = alpha_ts sigma_s^2 / sigma_t^2 x_t + alpha_s sigma_ts^2 / sigma_t^2 x0,
    var = sigma_ts^2 sigma_s^2 / sigma_t^2 (DDPM's beta~, "fixed small"); sigma_ts^2 is
    DDPM's beta ("fixed large"). On a discrete grid these are Ho et al.'s Eq. 7 tables.

    Returns:
        (coef_xt, coef_x0, var_small, var_large), float64 scalars.
    """
    s_t, a_s, s_s = schedule.sigma(t), schedule.alpha(s), schedule.sigma(s)
    a_ts, var_ts = transition(schedule, s, t)
    return a_ts * s_s**2 / s_t**2, a_s * var_ts / s_t**2, var_ts * s_s**2 / s_t**2, var_ts


def learned_log_variance(
    var_output: Tensor, log_var_small: Tensor, log_var_large: Tensor
) -> Tensor:
    """The learned reverse-process log-variance of improved DDPM (Nichol & Dhariwal 2021, Eq. 15).

    The network's variance channels v in [-1, 1] interpolate in the log domain between the
    posterior variance beta~ ("small") and beta ("large"):
    log Sigma = frac log beta + (1 - frac) log beta~, with frac = (v + 1) / 2.
    Callers pass log beta~ already clipped where beta~ = 0 (the step to t = 0).
    """
    frac = (var_output + 1) / 2
    return frac * log_var_large + (1 - frac) * log_var_small


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
    out = denoiser(x, t, cond)
    coef_xt, coef_x0, var_small, var_large = posterior(denoiser.schedule, t, s)
    mean = coef_xt * x + coef_x0 * out.x0
    if s == 0:  # the last step returns the mean (Ho et al. 2020, Alg. 2, z = 0 at t = 1)
        return mean
    if variance == "learned":
        if out.var_output is None:
            raise ValueError(
                "variance='learned' needs a model that predicts its variance (learn_sigma)"
            )
        log_var = learned_log_variance(
            out.var_output.to(mean.dtype),
            var_small.log().to(mean.dtype),
            var_large.log().to(mean.dtype),
        )
        return mean + (0.5 * log_var).exp() * randn_like(x, generator)
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
        variance: small = beta~ (posterior), large = beta (Ho et al. 2020, Sec. 3.2), learned =
            the model's interpolated variance (Nichol & Dhariwal 2021), for learn_sigma models.
    """
    if variance not in ("small", "large", "learned"):
        raise ValueError(f"unknown DDPM variance {variance!r}; valid: small, large, learned")

    def step(x, t, s, i):
        return ddpm_step(denoiser, x, t, s, variance=variance, cond=cond, generator=generator)

    with torch.no_grad():
        return run_steps(step, x, ts, progress=progress, desc="ddpm")
