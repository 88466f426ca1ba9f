"""Karras et al. 2022 samplers (Euler, Heun with churn, Euler ancestral, LMS) on any path.

Every path x_t = alpha x0 + sigma eps is EDM's x~ = x0 + sigma~ n in the scaled variables
x~ = x / alpha, sigma~ = sigma / alpha = exp(-log_snr / 2) (Karras et al. 2022, Sec. 4, Eq. 4 with
s(t) = alpha). There the probability-flow ODE is dx~/dsigma~ = d = (x~ - x0) / sigma~, and d is
exactly the denoiser's eps on every path, so these samplers integrate in sigma~ and map back
with x = alpha x~. Two ends need care:

- sigma~_s = 0 (t = 0 on VP, flow and EDM paths): an Euler step lands on x~ = x0; Heun's last
  step is that Euler step (Karras Alg. 1 line 6); LMS keeps its polynomial (d stays smooth).
- sigma~_t = inf (alpha = 0: t = 1 on the flow path or with zero terminal SNR): x~ is infinite;
  the Euler step's limit x~_s = x0 + sigma~_s d is taken, and that node is not used as a
  higher-order node (Heun corrects nothing, LMS keeps no history of it).
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor

from pixdiff.conditioning import Cond
from pixdiff.denoiser import Denoised
from pixdiff.samplers.common import Generators, large_stage_ratio, randn_like, run_steps


def euler_scaled(x: Tensor, den: Denoised, alpha_t: Tensor, sigma_t: Tensor, sigma_to) -> Tensor:
    """x~ at noise level sigma_to after one Euler step of dx~/dsigma~ = d from x at sigma~_t
    (Karras et al. 2022, Alg. 1 lines 4-5): x~ + (sigma_to - sigma~_t) d with d = eps.

    At sigma~_t = inf (zero SNR) x~ is infinite and the step is its limit x0 + sigma_to d.
    """
    if torch.isinf(sigma_t):
        return den.x0 + sigma_to * den.eps
    return x / alpha_t + (sigma_to - sigma_t) * den.eps


def euler_step(denoiser, x: Tensor, t: Tensor, s: Tensor, *, cond: Cond | None = None) -> Tensor:
    """One Euler step of the probability-flow ODE in x~, sigma~ (Karras et al. 2022, Alg. 1
    without the second-order correction); on every path this equals DDIM (eta = 0)."""
    sched = denoiser.schedule
    den = denoiser(x, t, cond)
    x_s = euler_scaled(x, den, sched.alpha(t), sched.edm_sigma(t), sched.edm_sigma(s))
    return sched.alpha(s) * x_s


def churn(
    schedule, x: Tensor, t: Tensor, gamma: float, s_noise: float, generator: Generators
) -> tuple[Tensor, Tensor]:
    """Raise x's noise from sigma~_t to sigma~_hat = (1 + gamma) sigma~_t (Karras et al. 2022,
    Alg. 2 lines 4-6); returns (x_hat, t_hat) on the path. t_hat is clipped at t_max = 1, where
    sigma~_hat is then the schedule's largest noise level."""
    sigma_t = schedule.edm_sigma(t)
    t_hat = schedule.t_from_log_snr(-2 * torch.log((1 + gamma) * sigma_t)).clamp(max=1.0)
    sigma_hat = schedule.edm_sigma(t_hat)
    z = randn_like(x, generator)
    x_hat = x / schedule.alpha(t) + (sigma_hat**2 - sigma_t**2).clamp_min(0).sqrt() * s_noise * z
    return schedule.alpha(t_hat) * x_hat, t_hat


def heun_step(
    denoiser,
    x: Tensor,
    t: Tensor,
    s: Tensor,
    *,
    gamma: float = 0.0,
    s_noise: float = 1.0,
    cond: Cond | None = None,
    generator: Generators = None,
) -> Tensor:
    """One step of Karras et al. 2022, Alg. 2 (Alg. 1 when gamma = 0) in x~ = x / alpha:
    churn to sigma~_hat, Euler to sigma~_s, then the trapezoidal (Heun) correction.

    The correction is skipped (an Euler step, 1 NFE) where :func:`large_stage_ratio` holds: on
    a step to sigma~ = 0 (Alg. 1 line 6), from sigma~ = inf, or across a huge drop of sigma~."""
    sched = denoiser.schedule
    if gamma > 0:
        x, t = churn(sched, x, t, gamma, s_noise, generator)
    a_t, a_s = sched.alpha(t), sched.alpha(s)
    sigma_hat, sigma_s = sched.edm_sigma(t), sched.edm_sigma(s)
    den = denoiser(x, t, cond)
    x_s = euler_scaled(x, den, a_t, sigma_hat, sigma_s)
    if large_stage_ratio(sigma_hat, sigma_s):
        return a_s * x_s
    d_s = denoiser(a_s * x_s, s, cond).eps  # d' at (x~_s, sigma~_s), Alg. 2 line 8
    return a_s * (x / a_t + (sigma_s - sigma_hat) * (den.eps + d_s) / 2)


def sample_heun(
    denoiser,
    x: Tensor,
    ts: Tensor,
    *,
    s_churn: float = 0.0,
    s_tmin: float = 0.0,
    s_tmax: float = math.inf,
    s_noise: float = 1.0,
    cond: Cond | None = None,
    generator: Generators = None,
    progress: bool = False,
) -> Tensor:
    """Heun's second-order sampler with optional churn (Karras et al. 2022, Alg. 1 and 2);
    2 NFE per step, 1 on the step to sigma = 0 (Euler).

    Args:
        s_churn: total churn; each step with s_tmin <= sigma~_t <= s_tmax gets
            gamma = min(s_churn / steps, sqrt(2) - 1) (Alg. 2 line 3). 0 = deterministic Alg. 1.
        s_tmin, s_tmax: the sigma~ = sigma / alpha range where churn applies.
        s_noise: scale of the added noise (EDM's S_noise, slightly above 1 in their tuning).
    """
    if s_churn < 0 or s_noise < 0:
        raise ValueError(f"s_churn and s_noise must be >= 0, got {s_churn}, {s_noise}")
    sigmas = denoiser.schedule.edm_sigma(ts)
    gamma_max = min(s_churn / (len(ts) - 1), math.sqrt(2) - 1)

    def step(x, t, s, i):
        in_range = s_tmin <= sigmas[i] <= s_tmax and torch.isfinite(sigmas[i])
        gamma = gamma_max if in_range else 0.0
        return heun_step(
            denoiser, x, t, s, gamma=gamma, s_noise=s_noise, cond=cond, generator=generator
        )

    with torch.no_grad():
        return run_steps(step, x, ts, progress=progress, desc="heun")


def euler_ancestral_step(
    denoiser,
    x: Tensor,
    t: Tensor,
    s: Tensor,
    *,
    eta: float = 1.0,
    cond: Cond | None = None,
    generator: Generators = None,
) -> Tensor:
    """Euler ancestral step in x~ = x / alpha (k-diffusion's sample_euler_ancestral and
    get_ancestral_step, Crowson 2022): Euler down to sigma_down, then fresh noise sigma_up with
    sigma_down^2 + sigma_up^2 = sigma~_s^2; 1 NFE.

    Args:
        eta: 0 = Euler (deterministic) to 1 = full ancestral noise, the DDPM posterior variance
            in sigma~.
    """
    sched = denoiser.schedule
    sigma_t, sigma_s = sched.edm_sigma(t), sched.edm_sigma(s)
    # sigma_up^2 = eta^2 sigma_s^2 (sigma_t^2 - sigma_s^2) / sigma_t^2, finite at sigma_t = inf
    sigma_up = (eta * sigma_s * (1 - (sigma_s / sigma_t) ** 2).sqrt()).clamp(max=sigma_s)
    sigma_down = (sigma_s**2 - sigma_up**2).sqrt()
    den = denoiser(x, t, cond)
    x_s = euler_scaled(x, den, sched.alpha(t), sigma_t, sigma_down)
    if s > 0:  # no noise on the last step, as DDPM (Ho et al. 2020, Alg. 2)
        x_s = x_s + sigma_up * randn_like(x, generator)
    return sched.alpha(s) * x_s


def lms_coefficients(nodes: list[float], sigma_to: float) -> list[float]:
    """Variable-step Adams-Bashforth weights: the integral over [nodes[0], sigma_to] of each
    Lagrange basis polynomial on ``nodes`` (newest first), as k-diffusion's
    linear_multistep_coeff, here exact by Gauss-Legendre quadrature (degree < len(nodes))."""
    k = len(nodes)
    u, w = np.polynomial.legendre.leggauss(k)
    a, b = nodes[0], sigma_to
    tau = a + (b - a) * (u + 1) / 2
    coefs = []
    for j in range(k):
        basis = [(tau - nodes[m]) / (nodes[j] - nodes[m]) for m in range(k) if m != j]
        coefs.append(float((b - a) / 2 * np.sum(w * np.prod(basis, axis=0))))
    return coefs


def sample_lms(
    denoiser,
    x: Tensor,
    ts: Tensor,
    *,
    order: int = 4,
    cond: Cond | None = None,
    generator: Generators = None,
    progress: bool = False,
) -> Tensor:
    """Linear multistep (Adams-Bashforth) in sigma~ (k-diffusion's sample_lms, Crowson 2022);
    1 NFE per step. The first steps warm up with orders 1, 2, ...; the step to sigma~ = 0 uses
    the full polynomial too (d = eps stays smooth there); a zero-SNR start node is skipped.

    Args:
        order: 1 (Euler) to 4.
    """
    if order not in (1, 2, 3, 4):
        raise ValueError(f"LMS order must be 1, 2, 3 or 4, got {order}")
    sched = denoiser.schedule
    sigmas = sched.edm_sigma(ts).tolist()
    history: list[tuple[float, Tensor]] = []  # (sigma~_j, d_j), newest first

    def step(x, t, s, i):
        den = denoiser(x, t, cond)
        sigma_t = sched.edm_sigma(t)
        if torch.isinf(sigma_t):  # zero SNR: Euler's limit; no history node at infinity
            return sched.alpha(s) * euler_scaled(x, den, sched.alpha(t), sigma_t, sigmas[i + 1])
        history.insert(0, (sigmas[i], den.eps))
        del history[order:]
        coefs = lms_coefficients([sig for sig, _ in history], sigmas[i + 1])
        x_s = x / sched.alpha(t) + sum(c * d for c, (_, d) in zip(coefs, history, strict=True))
        return sched.alpha(s) * x_s

    with torch.no_grad():
        return run_steps(step, x, ts, progress=progress, desc="lms")
