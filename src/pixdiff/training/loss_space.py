"""The space a diffusion loss is measured in, apart from what the network predicts.

JiT (Li & He 2025, "Back to Basics: Let Denoising Generative Models Denoise") separates the
prediction space (what the network outputs: x, eps or v) from the loss space (where the
regression is measured) and trains x-prediction with a velocity loss: on the straight path
x_t = (1 - t) x0 + t eps (their time runs the other way), the network's x0^ becomes the
velocity u^ = (x_t - x0^) / t, the target u = (x_t - x0) / t = eps - x0, and

    L = || u^ - u ||^2 = || x0^ - x0 ||^2 / t^2,

with t clamped below at t_eps = 0.05 in both velocities (their ``t_eps``). For any path and
types, ``diffusion.loss_space`` = x0 | eps | v | flow converts the output and its target with
:func:`pixdiff.prediction.convert_output`; both are affine in the output at fixed x_t, so the
loss is the output's own MSE times the squared gain of the conversion. The clamp is written
for every schedule as a bound on the log-SNR of the conversion's coefficients:
|lambda| <= 2 ln(0.95 / 0.05), i.e. sigma >= 0.05 and alpha >= 0.05 on the straight path
(the second bound keeps eps-prediction's velocity 1 / alpha finite at pure noise).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from pixdiff.config import DiffusionConfig
from pixdiff.denoiser import Denoiser
from pixdiff.prediction import PredictionType, convert_output
from pixdiff.schedules import Schedule

# JiT's t_eps = 0.05 as a log-SNR bound: on the straight path sigma = 0.05 at lambda = 2 ln 19.
MAX_ABS_LOG_SNR = 2 * math.log(0.95 / 0.05)


def clamped_times(schedule: Schedule, t: Tensor) -> Tensor:
    """t, or where |lambda(t)| > MAX_ABS_LOG_SNR the time of the bound: the times at which
    the loss space's conversion is taken (JiT's clamp of t at t_eps)."""
    t = torch.as_tensor(t, dtype=torch.float64)
    log_snr = schedule.log_snr(t)
    bounded = log_snr.clamp(-MAX_ABS_LOG_SNR, MAX_ABS_LOG_SNR)
    return torch.where(bounded == log_snr, t, schedule.t_from_log_snr(bounded).to(t))


def in_loss_space(
    cfg: DiffusionConfig, denoiser: Denoiser, out: Tensor, target: Tensor, x_t: Tensor, t: Tensor
) -> tuple[Tensor, Tensor, PredictionType]:
    """The network's raw output and its target, re-expressed in ``cfg.loss_space``, and the
    type they are then in (the network's own for ``loss_space="prediction"``: unchanged).

    Args:
        out, target: (N, C, H, W) in the denoiser's prediction type; x_t: the noisy input;
            t: (N,) training times.
    """
    if cfg.loss_space == "prediction":
        return out, target, denoiser.prediction
    c = denoiser.coefs(clamped_times(denoiser.schedule, t), x_t)
    space, x_t = cfg.loss_space, x_t.to(out.dtype)
    pred, goal = (
        convert_output(denoiser.prediction, y, x_t, c, space, sigma_data=cfg.sigma_data)
        for y in (out, target.to(out.dtype))
    )
    return pred, goal, space
