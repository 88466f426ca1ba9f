"""Training losses for every formulation of the core: one function, driven by DiffusionConfig.

The network predicts its own parameterization (eps, x0, v, flow velocity, EDM's F); the target
is built from the true (x0, eps) by ``prediction.target_from_x0_eps``, so EDM's loss (Karras et
al. 2022, Eq. 8: lambda(sigma) c_out^2 = 1, i.e. unit weight on F) and flow matching's velocity
loss (Lipman et al. 2022, Eq. 23) are the same code path as DDPM's L_simple (Ho et al. 2020,
Eq. 14). With ``learn_sigma`` the hybrid loss of improved DDPM adds the variational bound's
term for the learned variance (Nichol & Dhariwal 2021, Eq. 16). With ``loss_space`` the output
and its target are first re-expressed as another type, e.g. x0-prediction measured as a flow
velocity (JiT, Li & He 2025; ``training/loss_space.py``).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from pixdiff.conditioning import Cond
from pixdiff.config import DiffusionConfig
from pixdiff.denoiser import Denoised, Denoiser
from pixdiff.discrete_schedules import DiscreteSchedule
from pixdiff.prediction import target_from_x0_eps
from pixdiff.schedules import Schedule, q_sample
from pixdiff.training.loss_space import in_loss_space
from pixdiff.training.self_condition import training_cond
from pixdiff.training.weighting import loss_weight
from pixdiff.vlb import reverse_log_variance, vlb_term


def sample_time(
    cfg: DiffusionConfig, schedule: Schedule, n: int, generator: torch.Generator
) -> Tensor:
    """Training times t, (n,) float64 on the CPU.

    uniform: a uniform timestep index for discrete schedules (Ho et al. 2020, Alg. 1), else
    U(t_min, t_max); log-normal: ln sigma ~ N(P_mean, P_std^2) with sigma = exp(-log_snr / 2)
    (Karras et al. 2022, Table 1); logit-normal: t = sigmoid(N(m, s^2)) (Esser et al. 2024).
    """
    if cfg.time_sampling == "uniform":
        if isinstance(schedule, DiscreteSchedule):
            i = torch.randint(0, schedule.num_timesteps, (n,), generator=generator)
            return (i + 1).double() / schedule.num_timesteps
        u = torch.rand(n, generator=generator, dtype=torch.float64)
        return schedule.t_min + (schedule.t_max - schedule.t_min) * u
    z = torch.randn(n, generator=generator, dtype=torch.float64) * cfg.p_std + cfg.p_mean
    if cfg.time_sampling == "log-normal":
        t = schedule.t_from_log_snr(-2 * z)
    else:
        t = torch.sigmoid(z)
    return t.clamp(max(schedule.t_min, 1e-5), schedule.t_max)


def distance(pred: Tensor, target: Tensor, kind: str, huber_c: float) -> Tensor:
    """Per-sample mean distance: mse, l1 or pseudo-Huber sqrt(d^2 + c^2) - c (Song & Dhariwal
    2023, Sec. 3.3)."""
    d = (pred - target).flatten(1)
    if kind == "mse":
        return d.pow(2).mean(1)
    if kind == "l1":
        return d.abs().mean(1)
    if kind == "huber":
        return (torch.sqrt(d.pow(2) + huber_c**2) - huber_c).mean(1)
    raise ValueError(f"unknown loss {kind!r}; valid: mse, l1, huber")


def diffusion_loss(
    denoiser: Denoiser,
    x0: Tensor,
    cond: Cond | None,
    *,
    cfg: DiffusionConfig,
    generator: torch.Generator,
) -> Tensor:
    """The batch loss (scalar) of ``denoiser`` on clean images x0 (N, C, H, W) in [-1, 1]."""
    schedule = denoiser.schedule
    t = sample_time(cfg, schedule, x0.shape[0], generator).to(x0.device)
    noise = torch.randn(x0.shape, generator=generator).to(x0.device, x0.dtype)
    x_t = q_sample(schedule, x0, t, noise)
    out = denoiser(x_t, t, training_cond(denoiser, x_t, t, cond, generator))
    c = denoiser.coefs(t, x0)
    target = target_from_x0_eps(denoiser.prediction, x0, noise, c, sigma_data=cfg.sigma_data)
    pred, target, space = in_loss_space(cfg, denoiser, out.raw, target, x_t, t)  # JiT's v-loss
    per_sample = distance(pred, target, cfg.loss, cfg.huber_c)
    weight = loss_weight(cfg, schedule, space, t)  # training/weighting.py
    if weight is not None:
        per_sample = per_sample * weight.to(per_sample.device, per_sample.dtype)
    if cfg.learn_sigma:
        per_sample = per_sample + cfg.vlb_weight * vlb_loss(schedule, x0, x_t, t, out)
    return per_sample.mean()


def vlb_loss(schedule: Schedule, x0: Tensor, x_t: Tensor, t: Tensor, out: Denoised) -> Tensor:
    """T L_t in bits/dim per sample, (N,): the L_vlb term of improved DDPM's hybrid loss
    (Nichol & Dhariwal 2021, Sec. 3.1, Eq. 16).

    L_t is the bound's term at the sampled timestep (KL for t > 1, the discretized decoder NLL
    at t = 1; ``vlb.vlb_term``) under the learned variance (Eq. 15), with the
    gradient of the mean stopped so that L_vlb trains only the variance. With uniform t, T L_t
    is unbiased for L_vlb = sum_t L_t; at T = 1000 and weight 0.001 it is improved-diffusion's
    ``mse + vb``.

    Args:
        x0, x_t: (N, C, H, W); t: (N,) times on the schedule's nodes; out: the denoiser's
            output at (x_t, t), with ``var_output``.
    """
    if not isinstance(schedule, DiscreteSchedule) or out.var_output is None:
        raise ValueError(
            "the learned-variance loss needs a DiscreteSchedule and a denoiser with learn_sigma"
        )
    index = schedule.timestep(t).round().long().to(x0.device)
    log_var = reverse_log_variance(schedule, index, "learned", out.var_output, x0.dim())
    nats = vlb_term(schedule, x0, x_t, index, out.x0.detach(), log_var)
    bits_per_dim = nats / (x0[0].numel() * math.log(2))
    return (schedule.num_timesteps * bits_per_dim).to(out.x0.dtype)


def dropped(n: int, p: float, generator: torch.Generator) -> Tensor:
    """(n,) bool, each True with probability p: which conditions to drop for classifier-free
    guidance (Ho & Salimans 2022, Alg. 1)."""
    return torch.rand(n, generator=generator) < p


def drop_labels(label: Tensor, p: float, num_classes: int, generator: torch.Generator) -> Tensor:
    """Replace each label by the null id ``num_classes`` with probability p (Ho & Salimans 2022)."""
    drop = dropped(label.shape[0], p, generator)
    return torch.where(drop.to(label.device), torch.full_like(label, num_classes), label)


def drop_prompts(prompts: list[str], p: float, generator: torch.Generator) -> list[str]:
    """Replace each prompt by the empty prompt with probability p, the text model's
    unconditional input (Ho & Salimans 2022; the empty sequence of GLIDE, Nichol et al. 2021)."""
    drop = dropped(len(prompts), p, generator).tolist()
    return ["" if d else prompt for prompt, d in zip(prompts, drop, strict=True)]
