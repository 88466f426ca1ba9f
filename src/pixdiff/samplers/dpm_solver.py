"""DPM-Solver (Lu et al. 2022) and DPM-Solver++ (Lu et al. 2022b): exponential integrators.

Both integrate the probability-flow ODE in lambda = log(alpha / sigma) (half the log-SNR) with
the linear part solved exactly; h = lambda_s - lambda_t > 0 is a step, and e^h - 1, 1 - e^-h are
taken with expm1. DPM-Solver Taylor-expands the noise prediction eps, DPM-Solver++ the data
prediction x0. Steps with infinite h need care:

- to sigma = 0 (lambda_s = inf, t = 0 on VP, flow and EDM paths): the first-order step, whose
  limit is x_s = alpha_s x0 ("denoise to x0"); higher-order terms would divide by h = inf.
- from alpha = 0 (lambda_t = -inf, t = 1 on the flow path or with zero terminal SNR): the
  first-order step (DDIM's alpha_s x0 + sigma_s eps), and that node anchors no later difference.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor

from pixdiff.conditioning import Cond
from pixdiff.samplers.common import (
    Generators,
    half_log_snr,
    large_stage_ratio,
    multistep_order,
    randn_like,
    run_steps,
)

# The orders of singlestep DPM-Solver: DPM-Solver-1, -2, -3 (Lu et al. 2022, Eq. 3.7, Alg. 1-2).
Order = Literal[1, 2, 3]


def _t_at(schedule, lam: Tensor) -> Tensor:
    """The time whose half-log-SNR is lam."""
    return schedule.t_from_log_snr(2 * lam)


# ----------------------------------------------------------------------------- DPM-Solver


def dpm_solver_1(schedule, x: Tensor, t: Tensor, s: Tensor, eps: Tensor) -> Tensor:
    """DPM-Solver-1 from t to s (Lu et al. 2022, Eq. 3.7): alpha_s/alpha_t x - sigma_s (e^h - 1)
    eps, for finite h."""
    h = half_log_snr(schedule, s) - half_log_snr(schedule, t)
    return schedule.alpha(s) / schedule.alpha(t) * x - schedule.sigma(s) * torch.expm1(h) * eps


def dpm_solver_step(
    denoiser, x: Tensor, t: Tensor, s: Tensor, *, order: Order = 2, cond: Cond | None = None
) -> Tensor:
    """One singlestep DPM-Solver-k step in noise prediction (Lu et al. 2022): k = 1 is Eq. 3.7,
    k = 2 is Alg. 1 (DPM-Solver-2, r1 = 1/2), k = 3 is Alg. 2 (DPM-Solver-3, r1 = 1/3,
    r2 = 2/3); k NFE, the intermediate times at lambda_t + r h. DPM-Solver-1 equals DDIM
    (eta = 0), and a step with infinite h is its limit. Where :func:`large_stage_ratio` holds
    the step is first order, 1 NFE."""
    sched = denoiser.schedule
    lam_t = half_log_snr(sched, t)
    h = half_log_snr(sched, s) - lam_t
    den = denoiser(x, t, cond)
    if not torch.isfinite(h):
        return sched.alpha(s) * den.x0 + sched.sigma(s) * den.eps
    eps_t, sigma_s = den.eps, sched.sigma(s)
    x_s = dpm_solver_1(sched, x, t, s, eps_t)
    if order == 1 or large_stage_ratio(sched.edm_sigma(t), sched.edm_sigma(s)):
        return x_s
    r1 = 0.5 if order == 2 else 1 / 3
    u1 = _t_at(sched, lam_t + r1 * h)
    d1 = denoiser(dpm_solver_1(sched, x, t, u1, eps_t), u1, cond).eps - eps_t
    if order == 2:
        return x_s - sigma_s / (2 * r1) * torch.expm1(h) * d1
    r2 = 2 / 3
    u2 = _t_at(sched, lam_t + r2 * h)
    phi_u2 = torch.expm1(r2 * h) / (r2 * h) - 1
    x_u2 = dpm_solver_1(sched, x, t, u2, eps_t) - sched.sigma(u2) * r2 / r1 * phi_u2 * d1
    d2 = denoiser(x_u2, u2, cond).eps - eps_t
    return x_s - sigma_s / r2 * (torch.expm1(h) / h - 1) * d2


# ----------------------------------------------------------------------------- DPM-Solver++


def dpmpp_update(
    x: Tensor,
    x0s: list[Tensor],
    lams: list[Tensor],
    *,
    sigma_t: Tensor,
    alpha_s: Tensor,
    sigma_s: Tensor,
    eta: float = 0.0,
) -> Tensor:
    """The DPM-Solver++ mean update from t to s, of order len(x0s) (Lu et al. 2022b).

    Order 1 is DPM-Solver++(1); order 2 is Alg. 2 (2M) in its midpoint form
    D = x0_t + (x0_t - x0_prev) / (2r); order 3 is 3M, x0(lambda) extrapolated by the quadratic
    through three nodes: alpha_s (phi_2 D1 - 2 phi_3 D2) with D2 = h^2 x0''/2. The official
    code, k-diffusion and diffusers write -phi_3 D2, half the second-derivative term, which is
    not exact for quadratic x0 and converges at second order only (see the tests).
    eta > 0 gives the SDE variant's mean (e^-h -> e^-(1 + eta) h; k-diffusion's dpmpp_2m_sde /
    dpmpp_3m_sde; diffusers' sde-dpmsolver++ at eta = 1); its noise is added by the caller.

    Args:
        x0s: data predictions at t, t_prev, t_prev2 (newest first).
        lams: half-log-SNRs [lambda_s, lambda_t, lambda_prev, ...], one more than x0s.
    """
    h = lams[0] - lams[1]
    h_eta = (1 + eta) * h
    phi_1 = -torch.expm1(-h_eta)  # 1 - e^-h_eta
    decay = torch.exp(-eta * h) if eta > 0 else 1.0  # eta = 0: avoids 0 * inf at h = inf
    x_s = sigma_s / sigma_t * decay * x + alpha_s * phi_1 * x0s[0]
    if len(x0s) == 2:
        r = (lams[1] - lams[2]) / h
        x_s = x_s + alpha_s * phi_1 / (2 * r) * (x0s[0] - x0s[1])
    elif len(x0s) == 3:
        r0, r1 = (lams[1] - lams[2]) / h, (lams[2] - lams[3]) / h
        d1_0, d1_1 = (x0s[0] - x0s[1]) / r0, (x0s[1] - x0s[2]) / r1
        d1 = d1_0 + r0 / (r0 + r1) * (d1_0 - d1_1)
        d2 = (d1_0 - d1_1) / (r0 + r1)
        phi_2 = 1 - phi_1 / h_eta
        phi_3 = phi_2 / h_eta - 0.5
        x_s = x_s + alpha_s * (phi_2 * d1 - 2 * phi_3 * d2)
    return x_s


def sample_dpmpp_multistep(
    denoiser,
    x: Tensor,
    ts: Tensor,
    *,
    order: int = 2,
    eta: float = 0.0,
    lower_order_final: bool = True,
    cond: Cond | None = None,
    generator: Generators = None,
    progress: bool = False,
) -> Tensor:
    """Multistep DPM-Solver++(1/2M/3M) (Lu et al. 2022b, Alg. 2), and with eta > 0 its SDE
    variant (noise sigma_s sqrt(1 - e^(-2 eta h))); 1 NFE per step.

    Warm-up: step i uses order min(order, i + 1); the step to t = 0 is first order (x_s =
    alpha_s x0 where sigma(0) = 0); see :func:`multistep_order` for ``lower_order_final``.
    min_steps is 1: the warm-up forms every order from one node.

    Args:
        order: 1, 2 or 3.
        eta: 0 = the ODE solver; 1 = SDE-DPM-Solver++ (the reverse SDE's data-prediction
            exponential integrator); in between scales the injected noise as in k-diffusion.
        lower_order_final: with fewer than 10 steps, end with orders ..., 2, 1.
    """
    if order not in (1, 2, 3):
        raise ValueError(f"DPM-Solver++ multistep order must be 1, 2 or 3, got {order}")
    if eta < 0:
        raise ValueError(f"DPM-Solver++ eta must be >= 0, got {eta}")
    sched = denoiser.schedule
    lams = half_log_snr(sched, ts)
    history: list[tuple[Tensor, Tensor]] = []  # (lambda_j, x0_j) at past nodes, newest first

    def step(x, t, s, i):
        history.insert(0, (lams[i], denoiser(x, t, cond).x0))
        del history[order:]
        k = multistep_order(order, len(history), i, len(ts) - 1, s, lower_order_final)
        nodes = [lams[i + 1], *(lam for lam, _ in history[:k])]
        x0s = [x0 for _, x0 in history[:k]]
        sigma_s = sched.sigma(s)
        x_s = dpmpp_update(
            x, x0s, nodes, sigma_t=sched.sigma(t), alpha_s=sched.alpha(s), sigma_s=sigma_s, eta=eta
        )
        if not torch.isfinite(lams[i]):  # a zero-SNR node anchors no difference quotient
            history.clear()
        if eta > 0 and s > 0:  # no noise on the last step, as DDPM (Ho et al. 2020, Alg. 2)
            noise_std = sigma_s * (-torch.expm1(-2 * eta * (lams[i + 1] - lams[i]))).sqrt()
            x_s = x_s + noise_std * randn_like(x, generator)
        return x_s

    with torch.no_grad():
        return run_steps(step, x, ts, progress=progress, desc="dpm-solver++")


def dpmpp_2s_step(denoiser, x: Tensor, t: Tensor, s: Tensor, *, cond: Cond | None = None) -> Tensor:
    """One DPM-Solver++(2S) step (Lu et al. 2022b, Alg. 1, r = 1/2): DPM-Solver++(1) to the
    lambda midpoint u, then x_s with D = (1 - 1/(2r)) x0_t + x0_u / (2r) = x0_u; 2 NFE
    (1 on a step with infinite h, which is DPM-Solver++(1))."""
    sched = denoiser.schedule
    lam_t, lam_s = half_log_snr(sched, t), half_log_snr(sched, s)
    sigma_t = sched.sigma(t)
    x0_t = denoiser(x, t, cond).x0
    if not torch.isfinite(lam_s - lam_t):
        return dpmpp_update(
            x,
            [x0_t],
            [lam_s, lam_t],
            sigma_t=sigma_t,
            alpha_s=sched.alpha(s),
            sigma_s=sched.sigma(s),
        )
    lam_u = (lam_t + lam_s) / 2
    u = _t_at(sched, lam_u)
    x_u = dpmpp_update(
        x, [x0_t], [lam_u, lam_t], sigma_t=sigma_t, alpha_s=sched.alpha(u), sigma_s=sched.sigma(u)
    )
    x0_u = denoiser(x_u, u, cond).x0
    return dpmpp_update(
        x, [x0_u], [lam_s, lam_t], sigma_t=sigma_t, alpha_s=sched.alpha(s), sigma_s=sched.sigma(s)
    )
