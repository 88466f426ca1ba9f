"""Tuned time grids: the grid of K steps on which a sampler best follows a model's own ODE
solution (GITS, Chen et al. 2024, "On the Trajectory Regularity of ODE-based Diffusion
Sampling", Sec. 4; LD3, Tong et al. 2025, "Learning to Discretize Denoising Diffusion ODEs").

1. Candidates: M + 1 times, t_max, then uniform in log-SNR over the range the fixed grids
   use, and t = 0 (:func:`candidate_times`).
2. Teacher: on warm-up noises x_T, a high-accuracy solve (DPM-Solver++(2M), float64) over the
   candidates, each interval cut in ``substeps``; at every candidate t_i it keeps the state
   x_i and the denoiser's (x0_i, eps_i) there (:func:`teacher_trajectory`).
3. Costs: c_ij is the error at t_j of ONE DDIM step from the teacher's state at t_i,
   x^_j = alpha_j x0_i + sigma_j eps_i, against x_j, carried to t = 0 by the flow of Gaussian
   data of std sigma_data: c_ij = mean_n ||x^_j - x_j||_rms sigma_d / sqrt(alpha_j^2 sigma_d^2
   + sigma_j^2) (:func:`step_costs`).
4. Dynamic programming: the path 0 = p_0 < ... < p_K = M of exactly K steps with the least
   summed cost, V_k(j) = min_i V_(k-1)(i) + c_ij (:func:`cheapest_path`). A multistep method
   is tuned on this one-step cost, as GITS does, and then run as itself.

The optional refinement (LD3) is :mod:`pixdiff.eval.grid_refine`; :mod:`pixdiff.eval.grid_tuning`
runs both on a model.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from pixdiff.conditioning import Cond
from pixdiff.denoiser import Denoised
from pixdiff.guidance import DenoiserWrapper
from pixdiff.sampling import Sampling
from pixdiff.timesteps import LOG_SNR_CEILING, time_grid

TEACHER = "dpmpp-2m"
FIXED_GRIDS = ("trailing", "log-snr", "karras", "uniform-t")
# Below sigma/alpha = 500 (log-SNR -12.4, mirroring the ceiling at sigma/alpha = 0.002) the x0
# estimate is the data mean; no step is worth placing there, so candidates start at that level.
LOG_SNR_FLOOR = -LOG_SNR_CEILING


def candidate_times(schedule, count: int) -> Tensor:
    """(M + 1,) decreasing float64 times: t_max, then uniform in log-SNR from
    max(log-SNR(t_max), LOG_SNR_FLOOR) to min(log-SNR(t_min), LOG_SNR_CEILING), then 0;
    ``count`` candidates before the final 0."""
    if count < 2:
        raise ValueError(f"need at least 2 candidate times, got {count}")
    lam_lo, lam_hi = log_snr_range(schedule)
    # where t_max sits below the floor, it is prepended to the uniform part
    extra = int(schedule.log_snr(schedule.t_max).item() < lam_lo)
    lam = torch.linspace(lam_lo, lam_hi, count - extra, dtype=torch.float64)
    ts = schedule.t_from_log_snr(lam).clamp(schedule.t_min, schedule.t_max)
    top = torch.tensor([schedule.t_max], dtype=torch.float64)
    ts = torch.cat([top, ts] if extra else [top, ts[1:]]).unique().flip(0)  # t_max exactly
    return torch.cat([ts, ts.new_zeros(1)]) if ts[-1] > 0 else ts


def log_snr_range(schedule) -> tuple[float, float]:
    """(lam_lo, lam_hi): the log-SNR range the candidates after t_max span."""
    lam_lo = max(schedule.log_snr(schedule.t_max).item(), LOG_SNR_FLOOR)
    return lam_lo, min(schedule.log_snr(schedule.t_min).item(), LOG_SNR_CEILING)


def fine_grid(schedule, candidates: Tensor, substeps: int) -> Tensor:
    """The teacher's grid: each candidate interval cut into ``substeps`` steps uniform in
    log-SNR (uniform in t where log-SNR is infinite); the last step, to t = 0, is one step."""
    parts = []
    for t, s in zip(candidates[:-2], candidates[1:-1], strict=True):
        lam = schedule.log_snr(torch.stack([t, s]))
        if torch.isfinite(lam).all():
            inner = torch.linspace(lam[0].item(), lam[1].item(), substeps + 1, dtype=torch.float64)
            inner = schedule.t_from_log_snr(inner[1:-1]).clamp(s.item(), t.item())
        else:
            inner = torch.linspace(t.item(), s.item(), substeps + 1, dtype=torch.float64)[1:-1]
        parts += [t.reshape(1), inner]
    grid = torch.cat([*parts, candidates[-2:]])
    return grid[torch.cat([grid[:1] + 1, grid[:-1]]) > grid]  # strictly decreasing


@dataclass(frozen=True)
class Trajectory:
    """The teacher's solution on warm-up noises, at the candidate times.

    times: (M + 1,) float64, decreasing, the last 0; states: (M + 1, N, ...) the state at each
    (the last: the teacher's endpoint); x0, eps: (M, N, ...) the denoiser's estimates at each
    but the last. ``x_T`` is states[0] in float64; ``cond`` the warm-up conditioning.
    """

    times: Tensor
    states: Tensor
    x0: Tensor
    eps: Tensor
    x_T: Tensor
    cond: Cond | None

    @property
    def endpoint(self) -> Tensor:
        return self.states[-1]


class _Recorder(DenoiserWrapper):
    """Keeps (x_t, x0, eps) of the calls at the candidate times (float32 copies)."""

    def __init__(self, denoiser, candidates: Tensor):
        super().__init__(denoiser)
        self.candidates = candidates
        self.kept: dict[int, tuple[Tensor, Tensor, Tensor]] = {}

    def forward(self, x_t: Tensor, t, cond: Cond | None = None) -> Denoised:
        out = self.denoiser(x_t, t, cond)
        hit = (self.candidates == torch.as_tensor(t, dtype=torch.float64).cpu()).nonzero()
        if len(hit):
            keep = (x_t.float().cpu(), out.x0.float().cpu(), out.eps.float().cpu())
            self.kept[int(hit[0, 0])] = keep
        return out


def teacher_trajectory(
    denoiser,
    x_T: Tensor,
    *,
    candidates: int = 100,
    substeps: int = 2,
    cond: Cond | None = None,
    progress: bool = False,
) -> Trajectory:
    """The teacher's float64 DPM-Solver++(2M) solution from ``x_T`` (N, ...) (already scaled
    to the prior) over :func:`fine_grid`, recorded at :func:`candidate_times`."""
    schedule = denoiser.schedule
    times = candidate_times(schedule, candidates)
    grid = fine_grid(schedule, times, substeps)
    recorder = _Recorder(denoiser, times)
    x_T = x_T.double()
    end = Sampling(TEACHER)(recorder, x_T, grid, cond=cond, progress=progress)
    if sorted(recorder.kept) != list(range(len(times) - 1)):
        raise RuntimeError("the teacher skipped a candidate time")  # a grid bug, not user input
    kept = [recorder.kept[i] for i in range(len(times) - 1)]
    x, x0, eps = (torch.stack(parts) for parts in zip(*kept, strict=True))
    states = torch.cat([x, end.float().cpu()[None]])
    return Trajectory(times, states, x0, eps, x_T, cond)


def step_costs(trajectory: Trajectory, schedule, *, sigma_data: float = 0.5) -> Tensor:
    """(M + 1, M + 1) c_ij: the error of one DDIM step from the teacher's state at t_i to t_j,
    carried to t = 0 (module docstring, step 3); +inf where j <= i."""
    times = trajectory.times
    m = len(times) - 1
    alpha, sigma = schedule.alpha(times).float(), schedule.sigma(times).float()
    carry = sigma_data / (alpha**2 * sigma_data**2 + sigma**2).sqrt()
    costs = torch.full((m + 1, m + 1), math.inf, dtype=torch.float64)
    shape = (-1,) + (1,) * (trajectory.states.dim() - 1)
    for i in range(m):
        j = torch.arange(i + 1, m + 1)
        pred = alpha[j].view(shape) * trajectory.x0[i] + sigma[j].view(shape) * trajectory.eps[i]
        err = (pred - trajectory.states[j]).flatten(2).pow(2).mean(-1).sqrt().mean(-1)  # (J,)
        costs[i, j] = (err * carry[j]).double()
    return costs


def cheapest_path(costs: Tensor, steps: int) -> list[int]:
    """Nodes 0 = p_0 < p_1 < ... < p_K = M with the least sum of costs[p_k, p_(k+1)]: dynamic
    programming over exactly ``steps`` = K steps (GITS, Chen et al. 2024, Sec. 4.2)."""
    m = costs.shape[0] - 1
    if not 1 <= steps <= m:
        raise ValueError(f"a path of {steps} steps needs 1 to {m} steps over {m + 1} candidates")
    value = torch.full((m + 1,), math.inf, dtype=torch.float64)
    value[0] = 0.0
    parents = []
    for _ in range(steps):
        value, parent = (value[:, None] + costs).min(0)  # V_k(j) = min_i V_(k-1)(i) + c_ij
        parents.append(parent)
    path = [m]
    for parent in reversed(parents):
        path.append(int(parent[path[-1]]))
    return path[::-1]


def tuned_times(
    trajectory: Trajectory, costs: Tensor, steps: int, *, last_step: str = "free"
) -> tuple[float, ...]:
    """The candidate times on the cheapest path of ``steps`` steps. ``last_step="denoise"``
    makes the path pass through the last candidate before 0 (the log-SNR ceiling), so the
    final network evaluation is at nearly zero noise and the image is that denoised output,
    as the uniform-t, log-SNR and Karras grids end. The one-step cost of a long final step
    to t = 0 is low (the posterior mean is close to the teacher's endpoint in RMSE) but its
    image is the blurred mean at that noise level: the free path can trade detail for RMSE."""
    if last_step == "free":
        return tuple(trajectory.times[cheapest_path(costs, steps)].tolist())
    if last_step != "denoise":
        raise ValueError(f"last_step must be 'free' or 'denoise', got {last_step!r}")
    if steps < 2:
        raise ValueError("last_step='denoise' needs at least 2 steps")
    m = costs.shape[0] - 1
    path = cheapest_path(costs[:m, :m], steps - 1) + [m]
    return tuple(trajectory.times[path].tolist())


# the samplers tuned with a free last step by default: measured on the shipped Fashion model
# (BENCHMARKS.md, Tuned time grids), DDIM's free path beats its denoised one on FD while
# DPM-Solver++(2M)'s and UniPC-bh2's denoised paths beat their free ones and every fixed grid
FREE_LAST_STEP = ("ddim",)


def default_last_step(sampler: str) -> str:
    """ "free" for DDIM, "denoise" for every other sampler (see FREE_LAST_STEP)."""
    return "free" if sampler in FREE_LAST_STEP else "denoise"


def ends_denoised(times: Tensor | tuple[float, ...], trajectory: Trajectory) -> bool:
    """Whether a grid's last evaluation is at or below the last candidate before t = 0."""
    return float(times[-2]) <= float(trajectory.times[-2]) + 1e-12


def endpoint_rmse(
    denoiser, trajectory: Trajectory, sampler: str, times: tuple[float, ...]
) -> float:
    """Mean per-sample RMSE of ``sampler`` on the grid ``times`` (float32 state, from the
    warm-up noises) to the teacher's endpoint."""
    ts = torch.tensor(times, dtype=torch.float64)
    x = Sampling(sampler)(denoiser, trajectory.x_T.float(), ts, cond=trajectory.cond)
    d = x.double().cpu() - trajectory.endpoint.double()
    return d.flatten(1).pow(2).mean(1).sqrt().mean().item()


def fixed_rmse(
    denoiser, trajectory: Trajectory, sampler: str, steps: int, *, last_step: str = "free"
) -> dict[str, float]:
    """:func:`endpoint_rmse` of each fixed grid of FIXED_GRIDS the schedule has (with
    ``last_step="denoise"``, of those that end denoised, :func:`ends_denoised`)."""
    out = {}
    for spacing in FIXED_GRIDS:
        try:
            times = tuple(time_grid(denoiser.schedule, steps, spacing=spacing).tolist())
        except ValueError:  # e.g. no log-SNR grid on a zero-terminal-SNR schedule
            continue
        if last_step == "denoise" and not ends_denoised(times, trajectory):
            continue
        out[spacing] = endpoint_rmse(denoiser, trajectory, sampler, times)
    return out
