"""Predictor-corrector sampling of the reverse SDE (Song et al. 2021, Sec. 4.2, Alg. 2-5).

The path x_t = alpha x0 + sigma eps is the marginal of the forward SDE dx = f x dt + g dw with
f = alpha'/alpha and g^2 = 2 sigma sigma' - 2 f sigma^2 = -sigma^2 dlog_snr/dt (Kingma et al.
2021, App. A; Song et al. 2021, Eq. 5 and App. B). Its reverse is
dx = (f x - g^2 score) dt + g dw_bar with score = -eps / sigma (Song et al. 2021, Eq. 6).
"""

from __future__ import annotations

import math
from typing import Literal

from torch import Tensor

from pixdiff.conditioning import Cond
from pixdiff.samplers.common import Generators, randn_like
from pixdiff.schedules import Schedule

Predictor = Literal["euler-maruyama", "reverse-diffusion"]


def predictor_step(
    predictor: Predictor, schedule: Schedule, x: Tensor, score: Tensor, t: Tensor, s: Tensor
) -> tuple[Tensor, float]:
    """Mean and std of one reverse-SDE predictor step t -> s (Song et al. 2021, Sec. 4.2, App. E).

    euler-maruyama: mean = x - (f x - g^2 score)(t - s), std = g sqrt(t - s), f and g at t.
    reverse-diffusion (App. E, ancestral sampling of the discretized forward SDE, generalized):
    with a = alpha_t / alpha_s and G^2 = sigma_t^2 - a^2 sigma_s^2 (the forward step s -> t is
    x_t = a x_s + G z; VP: a = sqrt(1 - beta), G^2 = beta; VE: a = 1, G^2 = sigma_t^2 - sigma_s^2),
    mean = x - (a - 1) x + G^2 score, std = G.
    """
    a_t, s_t, da_t, ds_t = (v.item() for v in schedule.coefs(t, 1))
    if predictor == "euler-maruyama":
        dt = (t - s).item()
        f = da_t / a_t
        g2 = 2 * s_t * ds_t - 2 * f * s_t**2
        return x - (f * x - g2 * score) * dt, math.sqrt(g2 * dt)
    a = a_t / schedule.alpha(s).item()
    G2 = s_t**2 - a**2 * schedule.sigma(s).item() ** 2
    return x - (a - 1) * x + G2 * score, math.sqrt(max(G2, 0.0))


def langevin_step(x: Tensor, score: Tensor, z: Tensor, snr: float, alpha_i: float) -> Tensor:
    """One Langevin corrector step, step size eps = 2 alpha_i (snr |z| / |score|)^2 (Song et al.
    2021, Alg. 4/5), with the per-sample norms averaged over the batch as in the paper's code: a
    per-sample ratio explodes for samples whose score is near zero (low-dimensional data), but
    the averaging lets the step size (not the noise) depend on the batch."""
    norm = lambda v: v.flatten(1).norm(dim=1).mean()  # noqa: E731
    step = 2 * alpha_i * (snr * norm(z) / norm(score)) ** 2
    return x + step * score + (2 * step).sqrt() * z


def sde_pc_step(
    denoiser,
    x: Tensor,
    t: Tensor,
    s: Tensor,
    *,
    predictor: Predictor = "reverse-diffusion",
    corrector_steps: int = 1,
    snr: float = 0.16,
    cond: Cond | None = None,
    generator: Generators = None,
) -> Tensor:
    """One predictor-corrector step t -> s (Song et al. 2021, Alg. 2 for VE, Alg. 3 for VP, any
    path): ``corrector_steps`` Langevin steps at t, then one predictor step to s; 1 +
    corrector_steps NFE (the order of the paper's code).

    Langevin uses alpha_i = (alpha_t / alpha_s)^2, which is 1 - beta_i for VP (Alg. 5) and 1 for
    VE (Alg. 4). The step to sigma = 0 returns the denoised mean alpha_s x0 (Song et al.'s
    "denoise" option) and adds no noise.

    Args:
        x: (N, C, H, W) the state at t; t > s: consecutive grid times (the grid ends at 0).
        predictor: euler-maruyama or reverse-diffusion (Song et al. 2021, Sec. 4.2, App. E).
        corrector_steps: Langevin steps per grid time (0 gives the predictor alone).
        snr: the corrector's signal-to-noise ratio r (0.16 in the paper's CIFAR-10 settings).
    """
    sched = denoiser.schedule
    if predictor == "euler-maruyama" and sched.alpha(t) == 0:
        raise ValueError(
            "euler-maruyama needs alpha > 0 at the first grid time (the SDE drift alpha'/alpha "
            "is infinite at zero SNR); use predictor='reverse-diffusion' or start below t = 1"
        )
    alpha_i = (sched.alpha(t) / sched.alpha(s)).item() ** 2
    for _ in range(corrector_steps):
        score = -denoiser(x, t, cond).eps / sched.sigma(t)
        x = langevin_step(x, score, randn_like(x, generator), snr, alpha_i)
    d = denoiser(x, t, cond)
    if sched.sigma(s) == 0:
        return sched.alpha(s) * d.x0
    mean, std = predictor_step(predictor, sched, x, -d.eps / sched.sigma(t), t, s)
    return mean + std * randn_like(x, generator)
