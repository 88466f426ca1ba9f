"""Refine a tuned grid by gradient descent on its times (after LD3, Tong et al. 2025,
"Learning to Discretize Denoising Diffusion ODEs", Sec. 3).

The K - 1 interior times of a K-step grid are parametrised monotonically: in log-SNR, between
the first and the last candidate level (lam_lo, lam_hi),

    lambda_k = lam_lo + (lam_hi - lam_lo) * sum_(m < k) softmax(theta)_m,   k = 1 .. K - 1,

with theta_(K-1) = 0 fixed, so every theta is a valid, strictly decreasing grid. The loss is
the real sampler's final-image error on the warm-up noises, the mean per-sample RMSE to the
teacher's endpoint (LD3's loss without its slack ball). The samplers run without autograd (and
read their coefficients as numbers), so the gradient is a central difference through the
sampler itself, 2 (K - 1) runs per iteration; this also tunes a multistep method for what it
is, not for the one-step cost of the dynamic programme. The same differences give each logit's
curvature, and the step is the gradient scaled by it (diagonal Newton): the loss lies in a
narrow curved valley of theta where a plain gradient step of any useful size climbs. A step is
kept only if it lowers the loss (halved otherwise), so refinement never ends worse than it
began.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor
from tqdm.auto import tqdm

from pixdiff.eval.grid_search import Trajectory, endpoint_rmse, log_snr_range

FD_STEP = 0.05  # finite-difference step in theta
MAX_STEP = 0.5  # the largest change of one theta in one descent step
MIN_WEIGHT = 1e-3  # the smallest share of the log-SNR range an initial increment gets


def grid_from_logits(theta: Tensor, schedule) -> tuple[float, ...]:
    """The grid (t_max, K - 1 interior times, 0) of the free logits theta (K - 1,)."""
    lam_lo, lam_hi = log_snr_range(schedule)
    weights = torch.softmax(torch.cat([theta, theta.new_zeros(1)]), 0)
    lam = lam_lo + (lam_hi - lam_lo) * weights.cumsum(0)[:-1]
    inner = schedule.t_from_log_snr(lam).clamp(schedule.t_min, schedule.t_max)
    return (schedule.t_max, *inner.tolist(), 0.0)


def logits_from_grid(times: tuple[float, ...], schedule) -> Tensor:
    """theta (K - 1,) whose grid is ``times`` (interior times inside the candidate range)."""
    lam_lo, lam_hi = log_snr_range(schedule)
    inner = schedule.log_snr(torch.tensor(times[1:-1], dtype=torch.float64))
    lam = torch.cat([torch.tensor([lam_lo]), inner.clamp(lam_lo, lam_hi), torch.tensor([lam_hi])])
    weights = (lam.diff() / (lam_hi - lam_lo)).clamp_min(MIN_WEIGHT)
    return (weights.log() - weights[-1].log())[:-1]


def refine_grid(
    denoiser,
    trajectory: Trajectory,
    sampler: str,
    times: tuple[float, ...],
    *,
    iterations: int = 6,
    progress: bool = False,
) -> tuple[tuple[float, ...], float]:
    """(grid, loss) after ``iterations`` descent steps from ``times`` on the loss of the module
    docstring; the starting grid comes back when no step lowers the loss."""
    schedule = denoiser.schedule
    best_times, best = times, endpoint_rmse(denoiser, trajectory, sampler, times)
    if len(times) < 3:
        return best_times, best  # one step: no interior time to move

    def loss(theta: Tensor) -> float:
        grid = grid_from_logits(theta, schedule)
        return endpoint_rmse(denoiser, trajectory, sampler, grid)

    theta, value = logits_from_grid(times, schedule), best
    for _ in tqdm(range(iterations), desc=f"refine {sampler}", disable=not progress, leave=False):
        step = _newton_step(loss, theta, value)
        while step.abs().max() > FD_STEP / 4:
            trial = loss(theta - step)
            if trial < value:
                theta, value = theta - step, trial
                break
            step = step / 2
        else:
            break  # no step along this direction lowers the loss
        if value < best:
            best_times, best = grid_from_logits(theta, schedule), value
    return best_times, best


def _newton_step(loss: Callable[[Tensor], float], theta: Tensor, value: float) -> Tensor:
    """The diagonally preconditioned gradient step g_k / h_kk from central differences of step
    FD_STEP (2 (K - 1) runs), each component at most MAX_STEP; where the curvature h_kk is
    not positive, a plain step of MAX_STEP against the gradient."""
    step = torch.zeros_like(theta)
    for k in range(len(theta)):
        e = torch.zeros_like(theta)
        e[k] = FD_STEP
        up, down = loss(theta + e), loss(theta - e)
        grad, curv = (up - down) / (2 * FD_STEP), (up - 2 * value + down) / FD_STEP**2
        step[k] = grad / curv if curv > 0 else MAX_STEP * math.copysign(1.0, grad)
    return step.clamp(-MAX_STEP, MAX_STEP)
