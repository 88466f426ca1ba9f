"""Progressive distillation (Salimans & Ho 2022, Alg. 2): in each phase a student learns to take
in one DDIM step what its teacher takes in two, so the sampling steps halve phase by phase.

Phase k of a distillation from M teacher steps has a teacher sampled on the M / 2^k-step grid
and a student on every other time of it; the student of phase k is the teacher of phase k + 1.
The grid is the one the student is sampled on (:func:`pixdiff.sampling.default_spacing`), which
is why it must nest: halving it must give the grid of half the steps.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from torch import Tensor

from pixdiff.conditioning import Cond
from pixdiff.sampling import default_spacing
from pixdiff.schedules import Schedule, q_sample
from pixdiff.timesteps import time_grid

Weighting = Literal["auto", "truncated-snr", "snr+1"]


def phase_count(teacher_steps: int, steps: int) -> int:
    """The phases from ``teacher_steps`` down to ``steps``: teacher_steps / steps must be a
    power of two above 1 (each phase halves the steps)."""
    ratio = teacher_steps / steps
    phases = round(math.log2(ratio)) if ratio > 1 else 0
    if phases < 1 or 2**phases * steps != teacher_steps:
        raise ValueError(
            f"progressive distillation halves the steps each phase: --teacher-steps "
            f"{teacher_steps} must be --steps {steps} times a power of two (2, 4, 8, ...)"
        )
    return phases


def phase_grids(schedule: Schedule, teacher_steps: int) -> tuple[Tensor, Tensor]:
    """(teacher grid of ``teacher_steps`` steps, student grid of half as many): the sampling
    grids of both, float64. ValueError when the student's grid is not every other time of the
    teacher's (a spacing that does not nest, such as Karras')."""
    spacing = default_spacing(schedule)
    teacher = time_grid(schedule, teacher_steps, spacing=spacing)
    student = time_grid(schedule, teacher_steps // 2, spacing=spacing)
    if not torch.allclose(teacher[::2], student, rtol=0, atol=1e-12):
        raise ValueError(
            f"the {spacing} grid of this schedule does not nest ({teacher_steps // 2} steps are "
            f"not every other time of {teacher_steps}); progressive distillation needs a "
            "schedule whose default grid nests (discrete, VP, flow)"
        )
    return teacher, student


def ddim_to(denoiser, x: Tensor, t: Tensor, s: Tensor, cond: Cond | None) -> Tensor:
    """The deterministic DDIM step x_s = alpha_s x0 + sigma_s eps (Song et al. 2021, Eq. 12)
    with per-sample times t, s: (N,)."""
    d = denoiser(x, t, cond)
    c = denoiser.coefs(s, x)
    return c.alpha * d.x0 + c.sigma * d.eps


def two_step_target(
    teacher, z_t: Tensor, t: Tensor, u: Tensor, s: Tensor, cond: Cond | None
) -> Tensor:
    """The student's x0 target (Salimans & Ho 2022, Alg. 2): the x~ for which one DDIM step
    from z_t at t lands where two teacher DDIM steps t -> u -> s land,
    x~ = (z_s - (sigma_s / sigma_t) z_t) / (alpha_s - (sigma_s / sigma_t) alpha_t)."""
    with torch.no_grad():
        z_u = ddim_to(teacher, z_t, t, u, cond)
        z_s = ddim_to(teacher, z_u, u, s, cond)
    c_t, c_s = teacher.coefs(t, z_t), teacher.coefs(s, z_t)
    ratio = c_s.sigma / c_t.sigma
    return (z_s - ratio * z_t) / (c_s.alpha - ratio * c_t.alpha)


def loss_weight(log_snr: Tensor, weighting: Weighting, prediction: str) -> Tensor:
    """Weight of the x0 error (Salimans & Ho 2022, Sec. 4): truncated SNR max(SNR, 1), or
    SNR + 1, which is the v-prediction loss; ``auto`` picks SNR + 1 for a v-prediction student
    and truncated SNR otherwise."""
    if weighting == "auto":
        weighting = "snr+1" if prediction == "v" else "truncated-snr"
    snr = log_snr.exp()
    return snr + 1 if weighting == "snr+1" else snr.clamp_min(1)


def progressive_loss(
    student,
    teacher,
    x0: Tensor,
    grids: tuple[Tensor, Tensor],
    conds: tuple[Cond | None, Cond | None],
    *,
    weighting: Weighting,
    generator: torch.Generator,
) -> Tensor:
    """One batch's loss (scalar): each sample at a random time t of the student's grid,
    z_t = alpha_t x0 + sigma_t eps, the student's x0 at (z_t, t) against
    :func:`two_step_target` (Salimans & Ho 2022, Alg. 2).

    Args:
        student, teacher: denoisers; x0: (N, C, H, W) clean images.
        grids: (teacher grid, student grid) of :func:`phase_grids`.
        conds: (the student's Cond, the teacher's Cond) of the batch.
    """
    teacher_grid, student_grid = (g.to(x0.device) for g in grids)
    i = torch.randint(0, len(student_grid) - 1, (x0.shape[0],), generator=generator)
    i = i.to(x0.device)
    t, u, s = student_grid[i], teacher_grid[2 * i + 1], student_grid[i + 1]
    eps = torch.randn(x0.shape, generator=generator).to(x0.device, x0.dtype)
    z_t = q_sample(student.schedule, x0, t, eps)
    target = two_step_target(teacher, z_t, t, u, s, conds[1])
    x0_hat = student(z_t, t, conds[0]).x0
    weight = loss_weight(student.schedule.log_snr(t).float(), weighting, student.prediction)
    return (weight * (x0_hat - target).flatten(1).pow(2).mean(1)).mean()
