"""Consistency training and distillation from a trained denoiser: Easy Consistency Tuning (ECT,
Geng et al. 2024) with the loss of improved consistency training (iCT, Song & Dhariwal 2023).

The consistency function is the student denoiser's x0 estimate, f(x_t, t) = x0_theta(x_t, t).
Its boundary condition f(x, 0) = x holds for every parameterisation: sigma(0) = 0 and
alpha(0) = 1 on every path the core knows, so x0 = (x - sigma eps) / alpha is x for eps, and
v (x0 = alpha x - sigma v), flow and EDM (c_skip(0) = 1, c_out(0) = 0) give x likewise. The
loss pulls f at (x_t, t) towards the stopped-gradient f at (x_r, r), r < t, two points of one
trajectory:

- consistency training (ECT): x_r = alpha_r x0 + sigma_r eps with the same eps as x_t;
- consistency distillation (Song et al. 2023; guided, as LCM, Luo et al. 2023): x_r is the
  teacher's (guided) DDIM step from x_t, which is how a CFG teacher's guidance is distilled.

Noise levels are EDM's sigma~ = sigma / alpha, log-normal as in iCT (P_mean = -1.1, P_std = 2),
mapped to time by the schedule. ECT's gap shrinks over training: r~ = t~ (1 - n(t~) / q^a),
n(t~) = 1 + k sigmoid(-b t~), q = 2 and stage a; at a = 0 every r is 0 and the loss is plain
denoising, so tuning starts from the diffusion model itself (Geng et al. 2024, Sec. 3).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from pixdiff.conditioning import Cond
from pixdiff.config import DiffusionConfig
from pixdiff.schedules import Schedule, q_sample
from pixdiff.training.losses import sample_time
from pixdiff.training.progressive import ddim_to

ICT_HUBER_SCALE = 0.00054  # iCT's c = 0.00054 sqrt(d) for d-dimensional data (Sec. 3.3)


def gap_stage(step: int, iters: int, stages: int) -> int:
    """ECT's stage a after ``step`` of ``iters`` optimizer steps: the gap halves ``stages``
    times over the run (q = 2; Geng et al. 2024, Sec. 3.3)."""
    return min(stages, step * stages // max(iters, 1))


def earlier_time(
    schedule: Schedule, t: Tensor, stage: int, *, k: float, b: float
) -> tuple[Tensor, Tensor]:
    """(r, sigma~_r): ECT's earlier point r < t, (N,) float64, from
    sigma~_r = sigma~_t (1 - n(sigma~_t) / 2^stage), n(s) = 1 + k sigmoid(-b s), floored at 0
    (where r = 0: the data itself)."""
    sigma_t = schedule.edm_sigma(t)
    n = 1 + k * torch.sigmoid(-b * sigma_t)
    sigma_r = (sigma_t * (1 - n / 2**stage)).clamp_min(0)
    r = schedule.t_from_log_snr(-2 * torch.log(sigma_r.clamp_min(1e-30))).clamp(0, 1)
    r = torch.where(sigma_r > 0, torch.minimum(r, t), torch.zeros_like(r))
    return r, sigma_r


def pseudo_huber(a: Tensor, b: Tensor, c: float) -> Tensor:
    """iCT's pseudo-Huber distance sqrt(||a - b||^2 + c^2) - c per sample, (N,) (Song &
    Dhariwal 2023, Sec. 3.3): the L2 norm of the whole difference, unlike the per-pixel
    ``losses.distance(kind="huber")``."""
    return torch.sqrt((a - b).flatten(1).pow(2).sum(1) + c**2) - c


def consistency_loss(
    student,
    x0: Tensor,
    conds: tuple[Cond | None, Cond | None],
    *,
    teacher,
    stage: int,
    p_mean: float,
    p_std: float,
    k: float,
    b: float,
    huber_c: float,
    generator: torch.Generator,
) -> Tensor:
    """One batch's loss (scalar): lambda(t, r) d(f(x_t, t), sg f(x_r, r)) with iCT's
    pseudo-Huber d and ECT's weight lambda = 1 / (sigma~_t - sigma~_r).

    Args:
        student: the denoiser being tuned (its x0 estimate is f).
        x0: (N, C, H, W) clean images; conds: (the student's Cond, the teacher's Cond).
        teacher: None for consistency training, else the (guided) denoiser whose DDIM step
            gives x_r (consistency distillation).
        stage: ECT's a (:func:`gap_stage`); huber_c: 0 for iCT's 0.00054 sqrt(d).
    """
    schedule = student.schedule
    levels = DiffusionConfig(time_sampling="log-normal", p_mean=p_mean, p_std=p_std)
    t = sample_time(levels, schedule, x0.shape[0], generator).to(x0.device)
    r, sigma_r = earlier_time(schedule, t, stage, k=k, b=b)
    eps = torch.randn(x0.shape, generator=generator).to(x0.device, x0.dtype)
    x_t = q_sample(schedule, x0, t, eps)
    with torch.no_grad():
        if teacher is None:
            x_r = q_sample(schedule, x0, r, eps)
        else:
            x_r = ddim_to(teacher, x_t, t, r, conds[1])
        target = student(x_r, r, conds[0]).x0
        at_data = (r == 0).reshape(-1, *(1,) * (x0.dim() - 1))
        target = torch.where(at_data, x_r, target)  # the boundary condition, exactly
    c = huber_c or ICT_HUBER_SCALE * math.sqrt(x0[0].numel())
    weight = 1 / (schedule.edm_sigma(t) - sigma_r).float().clamp_min(1e-8)
    return (weight * pseudo_huber(student(x_t, t, conds[0]).x0, target, c)).mean()
