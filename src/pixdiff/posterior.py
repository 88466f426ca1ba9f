"""The forward-process posterior q(x_s | x_t, x0), s < t, on any Gaussian path.

The one place it is written: DDPM's and DDIM's steps (samplers/), the DDPM variational bound
(``vlb.py``) and the edits that jump back up the path (pipelines/edit.py) all use it. On a
discrete schedule at t = (i + 1) / T, s = i / T it gives the usual T-step tables of Ho et al.
2020, Eq. 6-7 (``posterior_mean_coef1/2``, ``posterior_variance``), tested against them.
"""

from __future__ import annotations

from typing import Literal, NamedTuple

from torch import Tensor

from pixdiff.schedules import Schedule

# The reverse-process variance: small = beta~ (the posterior's), large = beta (Ho et al. 2020,
# Sec. 3.2), learned = the model's interpolation of the two (Nichol & Dhariwal 2021, Eq. 15).
Variance = Literal["small", "large", "learned"]


class Posterior(NamedTuple):
    """q(x_s | x_t, x0) = N(coef_xt x_t + coef_x0 x0, var_small I), float64.

    var_small is DDPM's beta~ ("fixed small"); var_large = sigma_ts^2 of the forward step
    s -> t is DDPM's beta ("fixed large").
    """

    coef_xt: Tensor
    coef_x0: Tensor
    var_small: Tensor
    var_large: Tensor


def transition(schedule: Schedule, s: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
    """q(x_t | x_s) = N(alpha_ts x_s, sigma_ts^2 I) for s < t on any Gaussian path (Kingma et
    al. 2021, Sec. 2, q(z_t | z_s)): alpha_ts = alpha_t / alpha_s and
    sigma_ts^2 = sigma_t^2 - alpha_ts^2 sigma_s^2.

    Returns:
        (alpha_ts, sigma_ts^2), float64.
    """
    a_ts = schedule.alpha(t) / schedule.alpha(s)
    return a_ts, schedule.sigma(t) ** 2 - a_ts**2 * schedule.sigma(s) ** 2


def posterior(schedule: Schedule, t: Tensor, s: Tensor) -> Posterior:
    """q(x_s | x_t, x0) for s < t on any Gaussian path (Kingma et al. 2021, Eq. 32-34; Ho et
    al. 2020, Eq. 6-7 on the discrete grid).

    With alpha_ts = alpha_t / alpha_s and sigma_ts^2 = sigma_t^2 - alpha_ts^2 sigma_s^2:
    mean = alpha_ts sigma_s^2 / sigma_t^2 x_t + alpha_s sigma_ts^2 / sigma_t^2 x0,
    var = sigma_ts^2 sigma_s^2 / sigma_t^2.

    Args:
        t, s: times (scalars or matching (N,) tensors) with s < t.
    """
    s_t, a_s, s_s = schedule.sigma(t), schedule.alpha(s), schedule.sigma(s)
    a_ts, var_ts = transition(schedule, s, t)
    return Posterior(
        a_ts * s_s**2 / s_t**2, a_s * var_ts / s_t**2, var_ts * s_s**2 / s_t**2, var_ts
    )


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
