"""The probability-flow ODE solved with an adaptive Dormand-Prince RK45 (dopri5).

dx/dt = alpha' x0 + sigma' eps (the velocity of the path; Song et al. 2021, Sec. 4.3 and Eq. 13,
as written for a Gaussian path by Lipman et al. 2022). Dormand & Prince 1980 tableau, with the
step-size control of Hairer, Norsett & Wanner, Solving ODEs I, Sec. II.4 (Eq. 4.11-4.13).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor

from pixdiff.conditioning import Cond
from pixdiff.prediction import velocity
from pixdiff.samplers.common import Generators, SamplingError, run_steps
from pixdiff.schedules import PathCoefs
from pixdiff.timesteps import LOG_SNR_CEILING

# Dormand & Prince 1980 (Hairer et al., Table 4.6): nodes, stages, 5th-order weights (= the
# last stage row, so the last stage is the next step's first: FSAL) and 5th - 4th error weights.
_C = (0.0, 1 / 5, 3 / 10, 4 / 5, 8 / 9, 1.0, 1.0)
_A = (
    (),
    (1 / 5,),
    (3 / 40, 9 / 40),
    (44 / 45, -56 / 15, 32 / 9),
    (19372 / 6561, -25360 / 2187, 64448 / 6561, -212 / 729),
    (9017 / 3168, -355 / 33, 46732 / 5247, 49 / 176, -5103 / 18656),
    (35 / 384, 0.0, 500 / 1113, 125 / 192, -2187 / 6784, 11 / 84),
)
_E = (71 / 57600, 0.0, -71 / 16695, 71 / 1920, -17253 / 339200, 22 / 525, -1 / 40)

Velocity = Callable[[Tensor, float], Tensor]


def _error_norm(err: Tensor, x: Tensor, x_new: Tensor, rtol: float, atol: float) -> float:
    """Largest per-sample RMS of err / (atol + rtol max(|x|, |x_new|)) (Hairer et al., Eq. 4.11);
    per sample so that every sample of the batch meets the tolerance."""
    scale = atol + rtol * torch.maximum(x.abs(), x_new.abs())
    return (err / scale).flatten(1).pow(2).mean(1).sqrt().max().item()


def dopri5_step(
    f: Velocity, x: Tensor, t: float, h: float, k1: Tensor
) -> tuple[Tensor, Tensor, Tensor]:
    """One Dormand-Prince step of signed size h from (x, t) with k1 = f(x, t).

    Returns (x_new (5th order), error estimate (5th - 4th), k7 = f(x_new, t + h) for FSAL).
    """
    k = [k1]
    for c, row in zip(_C[1:], _A[1:], strict=True):
        k.append(f(x + h * sum(a * k_j for a, k_j in zip(row, k, strict=False) if a), t + c * h))
    x_new = x + h * sum(a * k_j for a, k_j in zip(_A[-1], k, strict=False) if a)
    err = h * sum(e * k_j for e, k_j in zip(_E, k, strict=True) if e)
    return x_new, err, k[-1]


def dopri5(f: Velocity, x: Tensor, t0: float, t1: float, *, rtol: float, atol: float) -> Tensor:
    """Integrate dx/dt = f(x, t) from t0 to t1 with error control (Hairer et al., Sec. II.4)."""
    k1 = f(x, t0)
    # initial step from Hairer et al. Sec. II.4 "starting step size" (a), without the extra NFE
    d0 = _error_norm(x, x, x, rtol, atol)
    d1 = _error_norm(k1, x, x, rtol, atol)
    h = math.copysign(min(abs(t1 - t0), 0.01 * d0 / d1 if min(d0, d1) > 1e-5 else 1e-6), t1 - t0)
    t = t0
    while (t1 - t) * h > 0:
        last = abs(h) >= abs(t1 - t)
        h = t1 - t if last else h
        x_new, err, k7 = dopri5_step(f, x, t, h, k1)
        e = _error_norm(err, x, x_new, rtol, atol)
        if e <= 1:  # accept
            t, x, k1 = t1 if last else t + h, x_new, k7
        h *= min(10.0, max(0.2, 0.9 * e ** (-1 / 5) if e > 0 else 10.0))
    return x


def sample_ode_rk45(
    denoiser,
    x: Tensor,
    ts: Tensor,
    *,
    rtol: float = 1e-5,
    atol: float = 1e-5,
    max_nfe: int = 2000,
    stats: dict | None = None,
    cond: Cond | None = None,
    generator: Generators = None,
    progress: bool = False,
) -> Tensor:
    """Solve the probability-flow ODE from ts[0] with adaptive dopri5 (Dormand & Prince 1980).

    Only the grid's ends matter. If sigma(ts[-1]) > 0 it integrates adaptively from ts[0] to
    ts[-1]. If the grid ends at sigma = 0, where eps and the velocity are undefined, it
    integrates down to t_stop = the lower of ts[-2] and the schedule's floor max(t_min, t at
    sigma/alpha = 0.002, EDM's sigma_min), then takes the x0 step x = alpha(0) x0 there (an
    O((sigma/alpha)^2) departure from the ODE endpoint, 1e-5 relative for unit-scale data).

    Args:
        x: (N, C, H, W) noise at ts[0]; ts: decreasing grid ending at 0.
        rtol, atol: per-sample RMS error tolerances of each step.
        max_nfe: raise SamplingError once the solve would need more network evaluations.
        stats: if a dict is given, it receives "nfe", the network evaluations used (the final
            x0 step included), also when SamplingError is raised.
    """
    if rtol <= 0 or atol <= 0 or max_nfe < 1:
        raise ValueError(f"need rtol, atol > 0 and max_nfe >= 1, got {rtol}, {atol}, {max_nfe}")
    sched = denoiser.schedule
    stats = stats if stats is not None else {}
    stats.update(nfe=0)

    def f(x: Tensor, t: float) -> Tensor:
        if stats["nfe"] >= max_nfe:
            raise SamplingError(
                f"ode-rk45 reached max_nfe={max_nfe} network evaluations at t={t:.4g}; raise "
                f"max_nfe or loosen rtol={rtol:g} / atol={atol:g}"
            )
        stats["nfe"] += 1
        t = min(max(t, 0.0), 1.0)  # stage times t + c h may round past the interval's end
        d = denoiser(x, torch.tensor(t, dtype=torch.float64), cond)
        c = PathCoefs(*(v.item() for v in sched.coefs(t, 1)))  # scalars: any device, dtype
        v = velocity(d.x0, d.eps, c)
        if not torch.isfinite(v).all():
            raise SamplingError(
                f"ode-rk45: the velocity dx/dt is not finite at t={t:.4g} (alpha' is infinite "
                "at t = 1 on zero-terminal-SNR discrete schedules); start the grid below it"
            )
        return v

    def step(x, t, s, i):
        if sched.sigma(s) > 0:
            return dopri5(f, x, t.item(), s.item(), rtol=rtol, atol=atol)
        stats["nfe"] += 1
        return sched.alpha(s) * denoiser(x, t, cond).x0

    ends = [ts[0], ts[-1]]
    if sched.sigma(ts[-1]) == 0:
        floor = max(sched.t_min, sched.t_from_log_snr(LOG_SNR_CEILING).item())
        t_stop = min(ts[-2].item(), floor) if len(ts) > 2 else floor
        if 0 < t_stop < ts[0]:
            ends.insert(1, ts.new_tensor(t_stop))
    with torch.no_grad():
        return run_steps(step, x, torch.stack(ends), progress=progress, desc="ode-rk45")
