"""Loss weightings, written on the eps-MSE and carried over to whatever the network predicts.

A weighting is a weight w on ||eps^ - eps||^2 at the sample's log-SNR lambda (Kingma & Gao 2023
write every diffusion loss so). A network predicting another type is trained on
||out - out*||^2 = k^2 ||eps^ - eps||^2 at the same x_t (``prediction.eps_error_gain``), so its
per-sample weight is w / k^2 and the weighted loss is the same whatever the network predicts.
With SNR = exp(lambda):

- ``min-snr`` (Hang et al. 2023, Eq. 9): w = min(SNR, gamma) / SNR, i.e. min(SNR, gamma) on the
  x0-MSE.
- ``soft-min-snr`` (Crowson et al. 2024, HDiT): w = gamma / (SNR + gamma), i.e. on the x0-MSE
  the soft minimum (1/SNR + 1/gamma)^-1 in place of min-SNR's hard one. HDiT weights EDM's
  F-loss by (sigma sigma_data)^2 / (sigma^2 + sigma_data^2)^2. With
  ||F^ - F|| = ||x0^ - x0|| / c_out, c_out^2 = sigma^2 sigma_data^2 / (sigma^2 + sigma_data^2),
  ||x0^ - x0|| = sigma ||eps^ - eps|| and SNR = 1/sigma^2 (alpha = 1), that is
  w = sigma^2 / (sigma^2 + sigma_data^2) = gamma / (SNR + gamma), gamma = 1 / sigma_data^2
  (4 for sigma_data = 0.5).
- ``sigmoid`` (Kingma & Gao 2023, VDM++; Hoogeboom et al. 2024, SiD2): the objective
  int sigmoid(b - lambda) E||eps^ - eps||^2 dlambda (up to the ELBO's constant 1/2). Drawn at
  times whose log-SNR has density p(lambda), its per-sample weight is sigmoid(b - lambda) /
  p(lambda) (Kingma & Gao's importance sampling); under uniform t that is their
  -dlambda/dt sigmoid(b - lambda). The objective, not only the per-sample weight, is then the
  same whatever the schedule and the time sampling.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from pixdiff.config import DiffusionConfig
from pixdiff.discrete_schedules import DiscreteSchedule
from pixdiff.prediction import PredictionType, eps_error_gain
from pixdiff.schedules import PathCoefs, Schedule


def eps_weight(cfg: DiffusionConfig, log_snr: Tensor, density: Tensor | None = None) -> Tensor:
    """w(lambda) on the eps-MSE of the weighting ``cfg.weighting`` (see the module docstring).

    Args:
        log_snr: (N,) lambda of each sample.
        density: (N,) p(lambda) of the time sampling at those lambda (``log_snr_density``);
            needed by ``sigmoid`` only.
    """
    gamma = cfg.min_snr_gamma
    if cfg.weighting == "none":
        return torch.ones_like(log_snr)
    if cfg.weighting == "min-snr":  # min(SNR, gamma) / SNR, written to stay finite
        return torch.exp(-torch.relu(log_snr - math.log(gamma)))
    if cfg.weighting == "soft-min-snr":  # gamma / (SNR + gamma)
        return torch.sigmoid(math.log(gamma) - log_snr)
    if cfg.weighting == "sigmoid":
        if density is None:
            raise ValueError("the sigmoid weighting needs the density of the sampled log-SNRs")
        w = torch.sigmoid(cfg.sigmoid_bias - log_snr) / density
        # an infinite log-SNR (a zero-terminal-SNR end) has no mass per unit lambda: weight 0
        return torch.where(torch.isfinite(log_snr), w, torch.zeros_like(w))
    raise ValueError(f"unknown weighting {cfg.weighting!r}")


def log_snr_dt(c: PathCoefs) -> Tensor:
    """d lambda / dt = 2 (alpha'/alpha - sigma'/sigma), from the path coefficients."""
    return 2 * (c.alpha_dt / c.alpha - c.sigma_dt / c.sigma)


def log_snr_density(cfg: DiffusionConfig, schedule: Schedule, t: Tensor) -> Tensor:
    """p(lambda) at lambda(t) of the times ``losses.sample_time`` draws, (N,) float64.

    uniform: p(t) = 1 / (t_max - t_min) (1 for the uniform index of a discrete schedule);
    logit-normal: p(t) = N(logit t; m, s^2) / (t (1 - t)) (Esser et al. 2024); both divided by
    |d lambda / dt|. log-normal: -lambda / 2 = ln sigma~ ~ N(m, s^2), so
    p(lambda) = N(-lambda / 2; m, s^2) / 2 (Karras et al. 2022). The clamp of t into the
    schedule's range is ignored (it moves a tail's mass onto the ends).
    """
    t = torch.as_tensor(t, dtype=torch.float64).cpu()
    if cfg.time_sampling == "log-normal":
        return _normal_pdf(-schedule.log_snr(t) / 2, cfg.p_mean, cfg.p_std) / 2
    if cfg.time_sampling == "logit-normal":
        p_t = _normal_pdf(torch.logit(t), cfg.p_mean, cfg.p_std) / (t * (1 - t))
    elif isinstance(schedule, DiscreteSchedule):
        p_t = torch.ones_like(t)
    else:
        p_t = torch.full_like(t, 1 / (schedule.t_max - schedule.t_min))
    return p_t / log_snr_dt(schedule.coefs(t, 1)).abs()


def _normal_pdf(x: Tensor, mean: float, std: float) -> Tensor:
    return torch.exp(-0.5 * ((x - mean) / std) ** 2) / (std * math.sqrt(2 * math.pi))


def loss_weight(
    cfg: DiffusionConfig, schedule: Schedule, prediction: PredictionType, t: Tensor
) -> Tensor | None:
    """Per-sample weight (N,) float64 on the CPU of the MSE of the network's own output at
    times t: ``eps_weight`` / k^2 with k = ``prediction.eps_error_gain``; None for ``none``."""
    if cfg.weighting == "none":
        return None
    t = torch.as_tensor(t, dtype=torch.float64).cpu()
    c = schedule.coefs(t, 1)
    lam = schedule.log_snr(t)
    density = log_snr_density(cfg, schedule, t) if cfg.weighting == "sigmoid" else None
    w = eps_weight(cfg, lam, density)
    return w / eps_error_gain(prediction, c, sigma_data=cfg.sigma_data) ** 2
