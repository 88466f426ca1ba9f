"""The terms of the DDPM variational bound (Ho et al. 2020, Eq. 5) on a discrete schedule.

L = L_T + sum_{t>1} L_{t-1} + L_0: :func:`prior_kl` is L_T, :func:`vlb_term` the KL terms and
the decoder L_0, under the reverse variance of :func:`reverse_log_variance`. Training's hybrid
loss (Nichol & Dhariwal 2021, Eq. 16) and the bits/dim of ``eval.likelihood`` both use them.

Images are float tensors in [-1, 1] on pixdiff's 256-level grid x = k / 127.5 - 1,
k in {0, ..., 255}. DDPM's step t = i + 1 at timestep index i sits at pixdiff time
t = (i + 1) / T and goes to s = i / T; all terms are in nats, float64.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from pixdiff.discrete_schedules import DiscreteSchedule
from pixdiff.posterior import Variance, learned_log_variance, posterior
from pixdiff.schedules import PathCoefs, Schedule

# Bucket half-width of the 256-level grid on [-1, 1] (Ho et al. 2020, Eq. 13: delta = 1/255).
HALF_BUCKET = 1 / 255
# improved-diffusion floors bucket probabilities at 1e-12, so one absurd pixel cannot dominate
# the loss and its gradient stays finite; we keep the floor (27.6 nats per value).
LOG_PROB_FLOOR = math.log(1e-12)


def normal_kl(mean1: Tensor, logvar1: Tensor, mean2: Tensor, logvar2: Tensor) -> Tensor:
    """KL(N(mean1, e^logvar1) || N(mean2, e^logvar2)) per element in nats, broadcasting.

    The closed form every term of the DDPM bound uses (Ho et al. 2020, Sec. 3, below Eq. 5):
    (logvar2 - logvar1 - 1 + e^(logvar1 - logvar2) + (mean1 - mean2)^2 e^-logvar2) / 2.
    """
    return 0.5 * (
        logvar2
        - logvar1
        - 1.0
        + torch.exp(logvar1 - logvar2)
        + (mean1 - mean2) ** 2 * torch.exp(-logvar2)
    )


def pixel_levels(x: Tensor) -> Tensor:
    """The level k = round((x + 1) 127.5), clamped to 0..255, as float64."""
    return ((x.double() + 1) * 127.5).round().clamp(0, 255)


def _log_normal_interval(a: Tensor, b: Tensor) -> Tensor:
    """log(Phi(b) - Phi(a)) for finite a < b, accurate in both tails: the interval is moved to
    the side where Phi is small (Phi(b) - Phi(a) = Phi(-a) - Phi(-b)) and the difference taken
    in the log domain, log Phi(hi) + log(1 - Phi(lo) / Phi(hi))."""
    flip = a > 0
    lo, hi = torch.where(flip, -b, a), torch.where(flip, -a, b)
    log_hi = torch.special.log_ndtr(hi)
    return log_hi + torch.log(-torch.expm1(torch.special.log_ndtr(lo) - log_hi))


def discretized_gaussian_log_likelihood(x: Tensor, mean: Tensor, log_scale: Tensor) -> Tensor:
    """log p(x) of the discretized Gaussian decoder, per element, in nats (float64).

    Ho et al. 2020, Eq. 13: each value's bucket is [x - 1/255, x + 1/255], the edge buckets
    open to -inf (x = -1) and +inf (x = 1), so the 256 probabilities sum to 1. The Gaussian
    N(mean, e^(2 log_scale)) mass of the bucket is computed exactly with log-CDFs, floored at
    1e-12 as in improved-diffusion.

    Args:
        x: values in [-1, 1] (snapped to the grid to choose the bucket); mean, log_scale:
            broadcastable to x (log_scale is the log standard deviation).
    """
    k = pixel_levels(x)
    inv_scale = torch.exp(-log_scale.double())
    centred = k / 127.5 - 1 - mean.double()
    lower = (centred - HALF_BUCKET) * inv_scale
    upper = (centred + HALF_BUCKET) * inv_scale
    # all three branches are evaluated at finite arguments, so where() passes finite gradients
    log_p = torch.where(
        k == 0,
        torch.special.log_ndtr(upper),
        torch.where(k == 255, torch.special.log_ndtr(-lower), _log_normal_interval(lower, upper)),
    )
    return log_p.clamp(min=LOG_PROB_FLOOR)


def step_times(schedule: DiscreteSchedule, index: Tensor) -> tuple[Tensor, Tensor]:
    """(t, s) = ((i + 1) / T, i / T), float64: DDPM's step x_{i+1} -> x_i at timestep indices i."""
    i = index.double()
    return (i + 1) / schedule.num_timesteps, i / schedule.num_timesteps


def clipped_log_variance(schedule: DiscreteSchedule, index: Tensor) -> Tensor:
    """log beta~ of the steps at timestep indices ``index`` (N,), float64, with the first step's
    (beta~ = 0: it lands on the clean image) replaced by the second's: improved-diffusion's
    ``posterior_log_variance_clipped`` (Nichol & Dhariwal 2021)."""
    return posterior(schedule, *step_times(schedule, index.clamp(min=1))).var_small.log()


def reverse_log_variance(
    schedule: DiscreteSchedule,
    index: Tensor,
    variance: Variance,
    var_output: Tensor | None,
    ndim: int,
) -> Tensor:
    """log Sigma of p(x_{t-1} | x_t) at timestep indices ``index`` (N,), float64.

    small: beta~_t (Ho et al. 2020, Eq. 7), at the first step (beta~_1 = 0) the clipped
    beta~_2; large: beta_t, also beta~_2 at the first step (as Ho et al.'s and
    improved-diffusion's code do for the decoder); learned: the model's interpolation
    (Nichol & Dhariwal 2021, Eq. 15) between the clipped log beta~ and log beta.

    Returns:
        (N, 1, ..., 1) for the fixed variances, shaped like ``var_output`` for learned.
    """
    shape = (-1, *(1,) * (ndim - 1))
    small = clipped_log_variance(schedule, index).reshape(shape)
    if variance == "small":
        return small
    large = posterior(schedule, *step_times(schedule, index)).var_large.log().reshape(shape)
    if variance == "large":
        return torch.where(index.reshape(shape) == 0, small, large)
    if variance == "learned":
        if var_output is None:
            raise ValueError(
                "variance='learned' needs a model that predicts its variance (learn_sigma)"
            )
        return learned_log_variance(var_output.double(), small, large)
    raise ValueError(f"unknown reverse variance {variance!r}; valid: small, large, learned")


def vlb_term(
    schedule: DiscreteSchedule,
    x0: Tensor,
    x_t: Tensor,
    index: Tensor,
    x0_hat: Tensor,
    log_var: Tensor,
) -> Tensor:
    """One term of the DDPM bound per sample, in nats summed over each image: (N,) float64.

    The reverse step p(x_{t-1} | x_t) = N(mu~(x_t, x0_hat), e^log_var) takes the posterior mean
    at the model's x0 estimate (Ho et al. 2020, Eq. 7 and 11). For index >= 1 the term is
    L_{t-1} = KL(q(x_{t-1} | x_t, x0) || p(x_{t-1} | x_t)); at index 0 it is the decoder
    L_0 = -log p(x0 | x1), the discretized Gaussian (Eq. 13) (Ho et al. 2020, Eq. 5).

    Args:
        x0: (N, ...) clean images on the grid; x_t: q_sample of x0 at (index + 1) / T;
        index: (N,) int64 timestep indices; x0_hat: the model's x0 estimate, shaped like x0;
        log_var: the reverse log-variance, broadcastable to x0 (:func:`reverse_log_variance`).
    """
    shape = (-1, *(1,) * (x0.dim() - 1))
    q = posterior(schedule, *step_times(schedule, index))
    coef_xt, coef_x0 = q.coef_xt.reshape(shape), q.coef_x0.reshape(shape)
    x0, x_t, x0_hat = x0.double(), x_t.double(), x0_hat.double()
    mean_model = coef_xt * x_t + coef_x0 * x0_hat
    log_var_q = clipped_log_variance(schedule, index).reshape(shape)
    kl = normal_kl(coef_xt * x_t + coef_x0 * x0, log_var_q, mean_model, log_var)
    nll = -discretized_gaussian_log_likelihood(x0, mean_model, 0.5 * log_var)
    return torch.where(index == 0, nll.flatten(1).sum(1), kl.flatten(1).sum(1))


def prior_kl(schedule: Schedule, x0: Tensor) -> Tensor:
    """L_T = KL(q(x_T | x0) || N(0, I)) per sample in nats, (N,) (Ho et al. 2020, Eq. 5)."""
    c = schedule.coefs(torch.full((x0.shape[0],), schedule.t_max), x0.dim())
    c = PathCoefs(*(v.to(x0.device) for v in c))
    zero = torch.zeros((), dtype=torch.float64, device=x0.device)
    kl = normal_kl(c.alpha * x0.double(), 2 * torch.log(c.sigma), zero, zero)
    return kl.flatten(1).sum(1)
