"""DEIS (Zhang & Chen 2023): exponential-integrator multistep sampling on eps, tAB-DEIS.

With sigma~ = sigma / alpha = e^{-lambda} (lambda = log(alpha / sigma); the paper's rho), the
probability-flow ODE is d(x / alpha) = eps d(sigma~) (Zhang & Chen 2023, Eq. 13 with the
exponential integrator; Song et al. 2021a, Eq. 14), so exactly

    x_s / alpha_s = x_t / alpha_t + int_{sigma~_t}^{sigma~_s} eps dsigma~.

tAB-DEIS (Sec. 4, Eq. 14-15) replaces eps by its Lagrange polynomial through the current and
the last q - 1 estimates. pixdiff interpolates in lambda = -log sigma~ (the "log-rho" variant
of diffusers' DEISMultistepScheduler), which makes the weights closed forms: with u = lambda -
lambda_t and h = lambda_s - lambda_t,

    C_j = int_{sigma~_t}^{sigma~_s} L_j dsigma~ = -sigma~_t int_0^h L_j(u) e^{-u} du,
    int_0^h u^m e^{-u} du = m! P(m + 1, h)       (P: regularized lower incomplete gamma).
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor

from pixdiff.conditioning import Cond
from pixdiff.samplers.common import Generators, half_log_snr, multistep_order, run_steps


def deis_coefficients(lam_t: float, lam_s: float, lam_past: list[float]) -> list[float]:
    """C_j / sigma~_t for the past nodes j = 1..q-1 of the Lagrange basis on (lambda_t,
    *lam_past), integrated against dsigma~ from t to s (Zhang & Chen 2023, Eq. 15)."""
    h = torch.tensor(lam_s - lam_t, dtype=torch.float64)
    u = [0.0] + [lam - lam_t for lam in lam_past]  # nodes, u_0 = 0 (now)
    moments = [
        math.factorial(m) * torch.special.gammainc(torch.tensor(m + 1.0).double(), h).item()
        for m in range(len(u))
    ]
    coefs = []
    for j in range(1, len(u)):
        others = [u_k for k, u_k in enumerate(u) if k != j]
        poly = np.poly(others)[::-1] / np.prod([u[j] - u_k for u_k in others])  # ascending
        coefs.append(-sum(float(c) * moments[m] for m, c in enumerate(poly)))
    return coefs


def deis_step(
    x0: Tensor,
    eps: list[Tensor],
    alpha_s: float,
    sigma_s: float,
    edm_sigma_t: float,
    weights: list[float],
) -> Tensor:
    """One tAB-DEIS step (Zhang & Chen 2023, Eq. 15) written around DDIM.

    Using x_t / alpha_t = x0 + sigma~_t eps_0 and sum_j L_j = 1: x_s = alpha_s x0
    + sigma_s eps_0 + alpha_s sigma~_t sum_{j>=1} (C_j / sigma~_t) (eps_j - eps_0),
    so order 1 is DDIM exactly, and a first step from alpha_t = 0 (zero terminal SNR) is finite.

    Args:
        x0: the current x0 estimate; eps: [eps_0 (now), eps_1, ...] newest first.
        weights: C_j / sigma~_t for j >= 1 (see deis_coefficients).
    """
    x_s = alpha_s * x0 + sigma_s * eps[0]
    for w, e in zip(weights, eps[1:], strict=True):
        x_s = x_s + alpha_s * edm_sigma_t * w * (e - eps[0])
    return x_s


def sample_deis(
    denoiser,
    x: Tensor,
    ts: Tensor,
    *,
    order: int = 2,
    lower_order_final: bool = True,
    cond: Cond | None = None,
    generator: Generators = None,
    progress: bool = False,
) -> Tensor:
    """tAB-DEIS multistep sampling (Zhang & Chen 2023, Alg. 1 with Eq. 15); 1 NFE per step.

    Args:
        x: (N, C, H, W) noise at ts[0]; ts: decreasing grid ending at 0.
        order: 1 (= DDIM), 2 or 3; the first steps use lower orders while the history fills.
        lower_order_final: with fewer than 10 steps the last steps drop to order 1, 2, ...

    The step to t = 0 is first order (``multistep_order``): where sigma(0) = 0 it is x_0 =
    alpha_0 x0, since the weight e^{-u} then spans an unbounded lambda interval, far beyond the
    interpolation nodes.
    """
    if order not in (1, 2, 3):
        raise ValueError(f"DEIS order must be 1, 2 or 3, got {order}")
    sched = denoiser.schedule
    lam = half_log_snr(sched, ts).tolist()
    alpha, sigma = sched.alpha(ts).tolist(), sched.sigma(ts).tolist()
    edm_sigma = sched.edm_sigma(ts).tolist()
    past: list[tuple[float, Tensor]] = []  # (lambda, eps) with finite lambda, newest first

    def step(x, t, s, i):
        d = denoiser(x, t, cond)
        q = multistep_order(order, len(past) + 1, i, len(ts) - 1, s, lower_order_final)
        used = past[: q - 1]
        weights = deis_coefficients(lam[i], lam[i + 1], [lam_j for lam_j, _ in used])
        edm_sigma_t = edm_sigma[i] if used else 0.0  # inf (alpha = 0) only on an order-1 step
        x_s = deis_step(
            d.x0, [d.eps, *(e for _, e in used)], alpha[i + 1], sigma[i + 1], edm_sigma_t, weights
        )
        if math.isfinite(lam[i]):
            past.insert(0, (lam[i], d.eps))
            del past[order - 1 :]
        return x_s

    with torch.no_grad():
        return run_steps(step, x, ts, progress=progress, desc="deis")
