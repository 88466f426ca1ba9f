"""PLMS (Liu et al. 2022, PNDM): pseudo linear multistep on eps with DDIM's transfer function.

The transfer part phi(x_t, eps, t, s) = alpha_s (x_t - sigma_t eps) / alpha_t + sigma_s eps (Liu
et al. 2022, Sec. 4.1: DDIM's deterministic step) is fed a combined eps' from the current and
past estimates with the fourth-order Adams-Bashforth weights (the gradient part, Sec. 4.2).
pixdiff implements PLMS only: its first three steps use the Adams-Bashforth formulas of order
1, 2 and 3 (1 NFE per step throughout), not PNDM's pseudo Runge-Kutta warm-up (4 NFE per step).
"""

from __future__ import annotations

import torch
from torch import Tensor

from pixdiff.conditioning import Cond
from pixdiff.samplers.common import Generators, run_steps

# Adams-Bashforth weights, newest first (order 4 is Liu et al. 2022's PLMS).
ADAMS_BASHFORTH = {
    1: (1.0,),
    2: (3 / 2, -1 / 2),
    3: (23 / 12, -16 / 12, 5 / 12),
    4: (55 / 24, -59 / 24, 37 / 24, -9 / 24),
}


def plms_step(
    x0: Tensor, eps: list[Tensor], alpha_s: Tensor, sigma_s: Tensor, rho_t: Tensor
) -> Tensor:
    """phi(x_t, eps', t, s) with eps' = sum_j w_j eps_j (Liu et al. 2022, Sec. 4).

    Written as alpha_s x0' + sigma_s eps' with x0' = (x_t - sigma_t eps') / alpha_t
    = x0 + rho_t (eps_0 - eps'), rho_t = sigma_t / alpha_t, so the first (order 1) step is
    DDIM exactly and is finite where alpha_t = 0.

    Args:
        x0: current x0 estimate; eps: [eps_0 (now), eps_1, ...] newest first, at most 4.
    """
    if len(eps) == 1:
        return alpha_s * x0 + sigma_s * eps[0]
    eps_prime = sum(w * e for w, e in zip(ADAMS_BASHFORTH[len(eps)], eps, strict=True))
    return alpha_s * (x0 + rho_t * (eps[0] - eps_prime)) + sigma_s * eps_prime


def sample_plms(
    denoiser,
    x: Tensor,
    ts: Tensor,
    *,
    cond: Cond | None = None,
    generator: Generators = None,
    progress: bool = False,
) -> Tensor:
    """PLMS sampling (Liu et al. 2022, Sec. 4.2, with an Adams-Bashforth warm-up); 1 NFE per step.

    The weights assume equal steps in the grid index, as in the paper and its code. On the final
    step to t = 0 the transfer needs no eps there: x_0 = alpha_0 x0' with x0' built from eps'.

    Args:
        x: (N, C, H, W) noise at ts[0]; ts: decreasing grid ending at 0.
    """
    sched = denoiser.schedule
    alpha, sigma = sched.alpha(ts), sched.sigma(ts)
    history: list[Tensor] = []  # eps estimates, newest first

    def step(x, t, s, i):
        d = denoiser(x, t, cond)
        history.insert(0, d.eps)
        del history[4:]
        return plms_step(d.x0, history, alpha[i + 1], sigma[i + 1], sigma[i] / alpha[i])

    with torch.no_grad():
        return run_steps(step, x, ts, progress=progress, desc="plms")
