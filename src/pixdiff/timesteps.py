"""Sampling time grids, built apart from the samplers that walk them.

A grid is a float64 tensor of ``steps + 1`` times, strictly decreasing, ending at t = 0; a
sampler takes one step per consecutive pair, so it calls the network ``steps`` times (times the
method's NFE per step).
"""

from __future__ import annotations

from typing import Literal, get_args

import numpy as np
import torch
from torch import Tensor

from pixdiff.discrete_schedules import DiscreteSchedule
from pixdiff.schedules import Schedule

Spacing = Literal["linspace", "leading", "trailing", "uniform-t", "karras", "log-snr"]
SPACINGS: tuple[str, ...] = get_args(Spacing)


def discrete_timesteps(num_timesteps: int, steps: int, spacing: str) -> np.ndarray:
    """Descending int64 training-timestep indices for a respaced discrete sampler.

    The three spacings of Lin et al. 2023 (Table 2), as in the common T = 1000 samplers:
    linspace = round(linspace(0, T-1, N)); leading = arange(N) * (T // N);
    trailing = round(T - k T/N) - 1 for k = 0..N-1 (includes the last timestep T-1; written
    so, not as arange(T, 0, -T/N), which yields N + 1 entries when T/N is inexact).
    """
    T, N = num_timesteps, steps
    if not 1 <= N <= T:
        raise ValueError(f"steps must be in [1, {T}] for a {T}-step schedule, got {N}")
    if spacing == "linspace":
        idx = np.linspace(0, T - 1, N).round()
    elif spacing == "leading":
        idx = np.arange(N) * (T // N)
    elif spacing == "trailing":
        idx = np.round(T - np.arange(N) * T / N) - 1
    else:
        raise ValueError(
            f"unknown discrete spacing {spacing!r}; valid: linspace, leading, trailing"
        )
    return np.unique(idx.astype(np.int64))[::-1].copy()


def karras_sigmas(sigma_min: float, sigma_max: float, steps: int, rho: float = 7.0) -> Tensor:
    """The rho-spaced noise levels of Karras et al. 2022, Eq. 5.

    sigma_i = (s_max^(1/rho) + i/(N-1) (s_min^(1/rho) - s_max^(1/rho)))^rho.
    """
    ramp = torch.linspace(0, 1, steps, dtype=torch.float64)
    lo, hi = sigma_min ** (1 / rho), sigma_max ** (1 / rho)
    return (hi + ramp * (lo - hi)) ** rho


def time_grid(
    schedule: Schedule, steps: int, *, spacing: Spacing = "linspace", rho: float = 7.0
) -> Tensor:
    """A decreasing grid of ``steps + 1`` times in [0, 1], the last one 0.

    Args:
        steps: number of sampler steps (>= 1).
        spacing: linspace | leading | trailing (index spacings; exact training timesteps for a
            discrete schedule) | uniform-t | karras (rho-spaced in sigma = exp(-log_snr/2)) |
            log-snr (uniform in log-SNR, Lu et al. 2022).
        rho: Karras' rho (7 in EDM).
    """
    if spacing not in SPACINGS:
        raise ValueError(f"unknown time grid {spacing!r}; valid: {list(SPACINGS)}")
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    if isinstance(schedule, DiscreteSchedule) and spacing in ("linspace", "leading", "trailing"):
        idx = discrete_timesteps(schedule.num_timesteps, steps, spacing)
        ts = torch.from_numpy(idx + 1).double() / schedule.num_timesteps
    elif spacing in ("karras", "log-snr"):
        ts = _snr_spaced(schedule, steps, spacing, rho)
    else:
        ts = _uniform(schedule, steps, spacing)
    return torch.cat([ts, ts.new_zeros(1)])


def _uniform(schedule: Schedule, steps: int, spacing: str) -> Tensor:
    """Evenly spaced times in [t_min, t_max]; the index spacings' continuous analogues."""
    lo, hi, n = schedule.t_min, schedule.t_max, steps
    k = torch.arange(n, 0, -1, dtype=torch.float64)
    if spacing == "trailing" or (lo == 0 and spacing != "leading"):
        # t = 0 is the grid's own end point, so with t_min = 0 the uniform grid is k / n
        return lo + (hi - lo) * k / n
    if spacing in ("linspace", "uniform-t"):
        return torch.linspace(hi, lo, n, dtype=torch.float64)
    if lo == 0:
        raise ValueError(
            "the leading grid would step to t = 0 twice on a schedule with "
            "t_min = 0; use trailing or uniform-t"
        )
    return lo + (hi - lo) * (k - 1) / n  # leading


# SNR-spaced grids stop at EDM's sigma_min = 0.002 (Karras et al. 2022) where a schedule's own
# t_min has a higher (or infinite) log-SNR.
LOG_SNR_CEILING = -2 * float(np.log(0.002))


def _snr_spaced(schedule: Schedule, steps: int, spacing: str, rho: float) -> Tensor:
    lam_end = schedule.log_snr(schedule.t_min).item()
    lam_max = min(lam_end, LOG_SNR_CEILING)
    # when the grid would reach t = 0 itself (the appended end point), space one more and drop it
    extra = int(schedule.t_min == 0 and lam_end <= LOG_SNR_CEILING)
    lam_min = schedule.log_snr(schedule.t_max).item()
    if not np.isfinite(lam_min):
        raise ValueError(
            f"the {spacing} grid needs a finite log-SNR at t_max, but this schedule "
            "reaches zero SNR there; use a uniform grid ('trailing' or 'uniform-t')"
        )
    if spacing == "karras":
        sig = karras_sigmas(np.exp(-lam_max / 2), np.exp(-lam_min / 2), steps + extra, rho)
        lam = -2 * torch.log(sig)
    else:
        lam = torch.linspace(lam_min, lam_max, steps + extra, dtype=torch.float64)
    lam = lam[: len(lam) - extra]
    return schedule.t_from_log_snr(lam).clamp(schedule.t_min, schedule.t_max)
