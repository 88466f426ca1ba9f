"""PNDM and PLMS (Liu et al. 2022): pseudo numerical methods on eps with DDIM's transfer.

The transfer part phi(x_t, eps, t, s) = alpha_s (x_t - sigma_t eps) / alpha_t + sigma_s eps (Liu
et al. 2022, Sec. 4.1: DDIM's deterministic step) is fed a combined eps' (the gradient part).
PLMS combines the current and past estimates with the fourth-order Adams-Bashforth weights
(Sec. 4.2); its first three steps here use the Adams-Bashforth formulas of order 1, 2 and 3
(1 NFE per step throughout). PNDM instead warms up with three pseudo Runge-Kutta steps
(Eq. 13; 4 NFE each), then continues as PLMS.
"""

from __future__ import annotations

import torch
from torch import Tensor

from pixdiff.conditioning import Cond
from pixdiff.samplers.common import Generators, large_stage_ratio, run_steps

# Adams-Bashforth weights, newest first (order 4 is Liu et al. 2022's PLMS).
ADAMS_BASHFORTH = {
    1: (1.0,),
    2: (3 / 2, -1 / 2),
    3: (23 / 12, -16 / 12, 5 / 12),
    4: (55 / 24, -59 / 24, 37 / 24, -9 / 24),
}


def transfer(
    x0: Tensor,
    eps0: Tensor,
    eps_prime: Tensor,
    alpha_s: Tensor,
    sigma_s: Tensor,
    edm_sigma_t: Tensor,
) -> Tensor:
    """phi(x_t, eps', t, s) (Liu et al. 2022, Eq. 9), the DDIM step driven by eps'.

    Written as alpha_s x0' + sigma_s eps' with x0' = (x_t - sigma_t eps') / alpha_t
    = x0 + sigma~_t (eps0 - eps'), sigma~_t = sigma_t / alpha_t, where (x0, eps0) is the
    denoiser's estimate at x_t: so eps' = eps0 is DDIM exactly, and the step is finite where
    alpha_t = 0.
    """
    if eps_prime is eps0:
        return alpha_s * x0 + sigma_s * eps0
    return alpha_s * (x0 + edm_sigma_t * (eps0 - eps_prime)) + sigma_s * eps_prime


def plms_step(
    x0: Tensor, eps: list[Tensor], alpha_s: Tensor, sigma_s: Tensor, edm_sigma_t: Tensor
) -> Tensor:
    """phi(x_t, eps', t, s) with eps' = sum_j w_j eps_j (Liu et al. 2022, Sec. 4.2).

    Args:
        x0: current x0 estimate; eps: [eps_0 (now), eps_1, ...] newest first, at most 4.
    """
    if len(eps) == 1:
        return transfer(x0, eps[0], eps[0], alpha_s, sigma_s, edm_sigma_t)
    eps_prime = sum(w * e for w, e in zip(ADAMS_BASHFORTH[len(eps)], eps, strict=True))
    return transfer(x0, eps[0], eps_prime, alpha_s, sigma_s, edm_sigma_t)


def pseudo_rk_step(denoiser, d, x: Tensor, t: Tensor, s: Tensor, cond: Cond | None) -> Tensor:
    """One pseudo fourth-order Runge-Kutta step t -> s > 0 (Liu et al. 2022, Eq. 13; 4 NFE).

    With m the midpoint of t and s in sigma~ = sigma / alpha, the variable in which the DDIM
    transfer integrates the ODE exactly for constant eps, and every stage transferred from x_t:
    e1 = eps(x_t, t), x1 = phi(x_t, e1, t, m), e2 = eps(x1, m), x2 = phi(x_t, e2, t, m),
    e3 = eps(x2, m), x3 = phi(x_t, e3, t, s), e4 = eps(x3, s);
    x_s = phi(x_t, (e1 + 2 e2 + 2 e3 + e4) / 6, t, s).
    Liu et al. take m halfway in the timestep index; halfway in sigma~ keeps the step fourth
    order on any path (in t it is only where t is proportional to sigma~, as on EDM's path).

    Args:
        d: the denoiser's estimate at (x_t, t), already computed (it gives e1).
    """
    sched = denoiser.schedule
    edm_sigma_t, edm_sigma_s = sched.edm_sigma(t), sched.edm_sigma(s)
    m = sched.t_from_log_snr(-2 * torch.log((edm_sigma_t + edm_sigma_s) / 2))  # = -2 log sigma~

    def phi(e: Tensor, to: Tensor) -> Tensor:
        return transfer(d.x0, d.eps, e, sched.alpha(to), sched.sigma(to), edm_sigma_t)

    e2 = denoiser(phi(d.eps, m), m, cond).eps
    e3 = denoiser(phi(e2, m), m, cond).eps
    e4 = denoiser(phi(e3, s), s, cond).eps
    return phi((d.eps + 2 * e2 + 2 * e3 + e4) / 6, s)


def pndm_nfe(steps: int) -> int:
    """Network evaluations of PNDM, at most: 4 per pseudo-RK step (the first three, never the
    last step to t = 0, which is a PLMS step), 1 per PLMS step."""
    return steps + 3 * min(max(steps - 1, 0), 3)


def pseudo_numerical_steps(denoiser, ts: Tensor, cond: Cond | None, *, pseudo_rk: bool):
    """The step function of PLMS over the grid ``ts`` (for :func:`run_steps`), or of PNDM with
    ``pseudo_rk``: its first three steps are pseudo Runge-Kutta ones, except a step to t = 0
    and where :func:`large_stage_ratio` holds. Keeps the last four eps estimates."""
    sched = denoiser.schedule
    alpha, sigma, edm_sigma = sched.alpha(ts), sched.sigma(ts), sched.edm_sigma(ts)
    history: list[Tensor] = []  # eps estimates at the grid points, newest first

    def step(x, t, s, i):
        d = denoiser(x, t, cond)
        history.insert(0, d.eps)
        del history[4:]
        warm_up = pseudo_rk and i < 3 and s > 0
        if warm_up and not large_stage_ratio(edm_sigma[i], edm_sigma[i + 1]):
            return pseudo_rk_step(denoiser, d, x, t, s, cond)
        return plms_step(d.x0, history, alpha[i + 1], sigma[i + 1], edm_sigma[i])

    return step


def sample_pndm(
    denoiser,
    x: Tensor,
    ts: Tensor,
    *,
    pseudo_rk: bool = True,
    cond: Cond | None = None,
    generator: Generators = None,
    progress: bool = False,
) -> Tensor:
    """PNDM sampling (Liu et al. 2022, Alg. 2): three pseudo Runge-Kutta steps, then PLMS; with
    ``pseudo_rk`` False, PLMS throughout (Sec. 4.2, with an Adams-Bashforth warm-up), 1 NFE per
    step.

    The PLMS weights assume equal steps in the grid index, as in the paper and its code. On the
    final step to t = 0 the transfer needs no eps there: x_0 = alpha_0 x0' with x0' built from
    eps'. PNDM's NFE is at most ``pndm_nfe`` (steps + 9 from four steps on). The step to t = 0
    is always a PLMS step, since the Runge-Kutta stages would need eps at t = 0, where it is
    undefined; so is a warm-up step where :func:`large_stage_ratio` holds.

    Args:
        x: (N, C, H, W) noise at ts[0]; ts: decreasing grid ending at 0.
    """
    step = pseudo_numerical_steps(denoiser, ts, cond, pseudo_rk=pseudo_rk)
    with torch.no_grad():
        return run_steps(step, x, ts, progress=progress, desc="pndm" if pseudo_rk else "plms")
