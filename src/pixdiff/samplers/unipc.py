"""UniPC (Zhao et al. 2023): unified predictor (UniP) and corrector (UniC), data (x0) form.

Multistep in lambda = log(alpha / sigma); a step t -> s has h = lambda_s - lambda_t > 0. The
data-prediction ODE has the exact solution (Lu et al. 2022, DPM-Solver++, Eq. 9)

    x_s = sigma_s / sigma_t x_t + alpha_s int_0^h e^{-(h - u)} x0(lambda_t + u) du,

and a Taylor expansion of x0 in u turns the integral into sum_n J_n(h) x0^(n)(lambda_t) with
J_n(h) = int_0^h e^{-(h-u)} u^n / n! du = h^{n+1} phi_{n+1}(-h). UniPC keeps the n = 0 term
exactly and matches the next K terms with divided differences D_k of earlier x0 estimates
(Zhao et al. 2023, Eq. 6-9 and Alg. 2/3, "B(h)" variants of Sec. 3.3 and App. C).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

from pixdiff.conditioning import Cond
from pixdiff.samplers.common import Generators, half_log_snr, multistep_order, run_steps

Variant = Literal["bh1", "bh2"]


@dataclass(frozen=True)
class _Point:
    """An x0 estimate at a grid time with log(alpha / sigma) = lam."""

    lam: float
    x0: Tensor


def phi_moments(h: float, n: int) -> list[float]:
    """[J_0(h), ..., J_n(h)], J_k(h) = int_0^h e^{-(h - u)} u^k / k! du = h^{k+1} phi_{k+1}(-h).

    A series for h < 1 (the recursion J_k = h^k / k! - J_{k-1} cancels there); J_0(inf) = 1.
    """
    if h >= 1:
        J = [-math.expm1(-h)]
        for k in range(1, n + 1):
            J.append(h**k / math.factorial(k) - J[-1])
        return J
    return [
        h ** (k + 1) * sum((-h) ** m / float(math.factorial(k + 1 + m)) for m in range(20))
        for k in range(n + 1)
    ]


def uni_update(
    x_t: Tensor,
    here: _Point,
    lam_s: float,
    alpha_s: float,
    sigma_ratio: float,
    past: list[_Point],
    variant: Variant,
    x0_s: Tensor | None = None,
) -> Tensor:
    """UniP-p (``x0_s`` None; p = len(past) + 1) or UniC-p (with the fresh estimate ``x0_s``
    at s; p = len(past) + 1, accuracy order p + 1) from t to s (Zhao et al. 2023, Alg. 2/3).

    x_s = sigma_s/sigma_t x_t + alpha_s J_0 x0_t + alpha_s B(h) sum_k rho_k D_k, with
    D_k = (x0_k - x0_t) / r_k, r_k = (lambda_k - lambda_t) / h, and rho solving
    sum_k rho_k r_k^(n-1) = n! J_n / (h^n B(h)), n = 1..K (Thm. 3.1). B(h) = h (bh1) or
    1 - e^{-h} (bh2; e^{h'} - 1 with the paper's data-prediction h' = -h). For K = 1, rho = 1/2
    as in the paper's code (equal to the solution up to O(h), which keeps the order).
    """
    h = lam_s - here.lam
    r = [(p.lam - here.lam) / h for p in past]
    D = [(p.x0 - here.x0) / r_k for p, r_k in zip(past, r, strict=True)]
    if x0_s is not None:
        r.append(1.0)
        D.append(x0_s - here.x0)
    J = phi_moments(h, len(D))
    x_s = sigma_ratio * x_t + alpha_s * J[0] * here.x0
    if not D:
        return x_s
    B = h if variant == "bh1" else J[0]
    if len(D) == 1:
        rho = [0.5]
    else:
        R = torch.tensor([[r_k**n for r_k in r] for n in range(len(D))], dtype=torch.float64)
        b = torch.tensor([math.factorial(n) * J[n] / (h**n * B) for n in range(1, len(D) + 1)])
        rho = torch.linalg.solve(R, b.double()).tolist()
    return x_s + alpha_s * B * sum(c * d for c, d in zip(rho, D, strict=True))


def sample_unipc(
    denoiser,
    x: Tensor,
    ts: Tensor,
    *,
    order: int = 2,
    variant: Variant = "bh1",
    lower_order_final: bool = True,
    corrector: bool = True,
    cond: Cond | None = None,
    generator: Generators = None,
    progress: bool = False,
) -> Tensor:
    """UniPC multistep sampling, data prediction (Zhao et al. 2023, Alg. 3); 1 NFE per step.

    Each step evaluates x0 at the predicted x_t, corrects x_t with UniC using that estimate (no
    extra evaluation: the estimate is reused by the next predictor) and predicts x_s with UniP.

    Args:
        x: (N, C, H, W) noise at ts[0]; ts: decreasing grid ending at 0.
        order: the predictor order p in 1..3 (UniC lifts the accuracy to p + 1); earlier steps
            use lower orders while the history fills up.
        variant: bh1 (B(h) = h) or bh2 (B(h) = 1 - e^{-h}).
        lower_order_final: with fewer than 10 steps the last steps drop to order 1, 2, ...
            (as DPM-Solver's code; more stable with few steps).
        corrector: apply UniC (False gives UniP alone; with order 1 that is DDIM).

    The step to t = 0 is first order (``multistep_order``): where sigma(0) = 0 it is x_0 =
    alpha_0 x0, since the higher-order terms extrapolate x0 to lambda = inf and have no limit
    there. No corrector follows it, nor a step from zero SNR (lambda_t = -inf: flow and
    zero-terminal-SNR paths at t = 1), whose h is infinite.
    """
    if order not in (1, 2, 3):
        raise ValueError(f"UniPC order must be 1, 2 or 3, got {order}")
    if variant not in ("bh1", "bh2"):
        raise ValueError(f"unknown UniPC variant {variant!r}; valid: bh1, bh2")
    sched = denoiser.schedule
    lam = half_log_snr(sched, ts).tolist()
    alpha, sigma = sched.alpha(ts).tolist(), sched.sigma(ts).tolist()
    past: list[_Point] = []  # earlier estimates with finite lambda, newest first
    last: dict = {}  # the previous predictor's input, for the corrector

    def step(x, t, s, i):
        here = _Point(lam[i], denoiser(x, t, cond).x0)
        if corrector and last and math.isfinite(last["here"].lam):  # not after an infinite step
            x = uni_update(**last, alpha_s=alpha[i], x0_s=here.x0, variant=variant)
        p = multistep_order(order, len(past) + 1, i, len(ts) - 1, s, lower_order_final)
        used = past[: p - 1]
        ratio = sigma[i + 1] / sigma[i]
        x_s = uni_update(x, here, lam[i + 1], alpha[i + 1], ratio, used, variant)
        last.update(x_t=x, here=here, lam_s=lam[i + 1], sigma_ratio=ratio, past=used)
        if math.isfinite(here.lam):
            past.insert(0, here)
            del past[order - 1 :]
        return x_s

    with torch.no_grad():
        return run_steps(step, x, ts, progress=progress, desc="unipc")
