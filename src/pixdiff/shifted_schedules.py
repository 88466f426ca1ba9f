"""Resolution-shifted schedules: a continuous schedule with its log-SNR moved by a constant,
or by an amount interpolated in t (Hoogeboom et al. 2023, simple diffusion, Sec. 3.1).

Doubling the side of an image halves the noise a pixel's neighbourhood sees at the same
log-SNR: the average of d x d pixels has its noise std divided by d. A schedule designed for
``base`` x ``base`` images keeps its per-patch noise on ``resolution`` x ``resolution`` images
when its log-SNR is shifted by

    s = 2 log(base / resolution)                      (simple diffusion, Sec. 3.1)

(``resolution_shift``). ``ShiftedSchedule`` applies any shift s to any continuous schedule:

    constant:      lambda(t) = lambda_base(t) + s
    interpolated:  lambda(t) = lambda_base(t) + (1 - t) s

The interpolated form is simple diffusion's schedule interpolated in log-SNR between a shifted
and an unshifted one, t lambda_unshifted(t) + (1 - t) lambda_shifted(t) (the paper's example
starts at the shift for 32 px and moves to the shift for 256 px; k-diffusion's
``rand_cosine_interpolated`` writes the same lerp): shifted at t = 0, unshifted at t = 1.

The shifted schedule keeps the base's path family, so what a sampler or loss expects of it
still holds: VP stays VP (alpha^2 + sigma^2 = 1), the straight path of flow stays straight
(alpha + sigma = 1) and the alpha = 1 paths (VE, EDM) keep alpha = 1. Writing
k(t) = exp(s(t) / 2), the base's (alpha, sigma) at t becomes (k alpha, sigma) / n with n the
family's norm of that pair: sqrt((k alpha)^2 + sigma^2) for VP, k alpha + sigma for flow and
k alpha (= k) for alpha = 1, so that alpha / sigma = k alpha_base / sigma_base, i.e. the
log-SNR moves by exactly s(t). Everything stays finite where the base's log-SNR is infinite.

The discrete DDPM tables take no shift: their log-SNRs are fixed at T nodes, which their
samplers, learned variances and bound rely on.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

from pixdiff.discrete_schedules import DiscreteSchedule
from pixdiff.schedules import (
    FlowSchedule,
    PathCoefs,
    Schedule,
    SigmaSchedule,
    VPSchedule,
    as_time,
)

PathFamily = Literal["vp", "alpha=1", "flow"]

# bisection steps of the interpolated inverse: 2^-64 is below float64's resolution of [0, 1]
_BISECTION_STEPS = 64


def resolution_shift(resolution: float, base: float = 64) -> float:
    """s = 2 log(base / resolution), the log-SNR shift that keeps the noise of a schedule
    designed for ``base`` px images on ``resolution`` px images (Hoogeboom et al. 2023,
    Sec. 3.1, where the cosine schedule's base is 64): negative (more noise) for larger images.
    """
    if not (resolution > 0 and base > 0):
        raise ValueError(f"resolution and base must be > 0, got {resolution} and {base}")
    return 2 * math.log(base / resolution)


def path_family(schedule: Schedule) -> PathFamily:
    """The family of paths a shift keeps the schedule in; ValueError for one that takes none."""
    if isinstance(schedule, DiscreteSchedule):
        raise ValueError(
            f"the discrete {schedule.beta_kind!r} schedule cannot take a shift: its log-SNRs are "
            "fixed at its T training nodes; shift a continuous schedule instead (vp-cosine, "
            "vp-linear, vp-linear-logsnr, ve, edm, flow)"
        )
    if isinstance(schedule, ShiftedSchedule):
        raise ValueError("the schedule is already shifted; give one shift (the sum)")
    if isinstance(schedule, VPSchedule):
        return "vp"
    if isinstance(schedule, SigmaSchedule):
        return "alpha=1"
    if isinstance(schedule, FlowSchedule):
        return "flow"
    raise ValueError(
        f"schedule {type(schedule).__name__} cannot take a shift: a shift keeps a VP, "
        "alpha = 1 or straight (flow) path, and this is none of them"
    )


@dataclass(frozen=True)
class ShiftedSchedule(Schedule):
    """``base`` with its log-SNR shifted by ``shift`` (constant), or by (1 - t) ``shift``
    (``interpolate``): simple diffusion's shifted and interpolated schedules (Hoogeboom et al.
    2023, Sec. 3.1), for any continuous schedule. See the module docstring for the formulas.

    Args:
        base: a continuous schedule (not a discrete table).
        shift: s, added to the log-SNR; ``resolution_shift(resolution, base)`` gives
            2 log(base / resolution).
        interpolate: shift by s at t = 0 fading linearly to 0 at t = 1.
    """

    base: Schedule
    shift: float
    interpolate: bool = False

    def __post_init__(self) -> None:
        if isinstance(self.shift, bool) or not isinstance(self.shift, (int, float)):
            raise ValueError(f"a schedule shift must be a number, got {self.shift!r}")
        if not math.isfinite(self.shift):
            raise ValueError(f"a schedule shift must be finite, got {self.shift}")
        path_family(self.base)
        if self.interpolate:
            self._check_decreasing()

    @property
    def kind(self) -> str:  # type: ignore[override]
        return self.base.kind

    @property
    def t_min(self) -> float:  # type: ignore[override]
        return self.base.t_min

    @property
    def t_max(self) -> float:  # type: ignore[override]
        return self.base.t_max

    def to_dict(self) -> dict:
        return {**self.base.to_dict(), "shift": self.shift, "interpolate": self.interpolate}

    def timestep(self, t):
        return self.base.timestep(t)

    def t_from_timestep(self, timestep):
        return self.base.t_from_timestep(timestep)

    def _s(self, t: Tensor) -> tuple[Tensor, Tensor]:
        """s(t) and ds/dt."""
        if self.interpolate:
            return self.shift * (1 - t), torch.full_like(t, -self.shift)
        return torch.full_like(t, self.shift), torch.zeros_like(t)

    def _coefs(self, t) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """alpha, sigma and their t-derivatives: (A, S) = (k alpha_b, sigma_b) over its norm n."""
        t = as_time(t)
        b = self.base
        s, ds = self._s(t)
        k = torch.exp(s / 2)
        alpha_b, alpha_b_dt = b.alpha(t), b.alpha_dt(t)
        A, S = k * alpha_b, b.sigma(t)
        dA, dS = k * (ds / 2 * alpha_b + alpha_b_dt), b.sigma_dt(t)
        family = path_family(b)
        if family == "vp":
            # S S' = -alpha_b alpha_b' on a VP path: finite where sigma_b' is not (t = 0)
            n = torch.sqrt(A * A + S * S)
            dn = (A * dA - alpha_b * alpha_b_dt) / n
        elif family == "flow":
            n, dn = A + S, dA + dS
        else:  # alpha = 1: A = k
            n, dn = A, dA
        return A / n, S / n, (dA * n - A * dn) / n**2, (dS * n - S * dn) / n**2

    def coefs(self, t: Tensor | float, ndim: int = 4) -> PathCoefs:
        """As :meth:`Schedule.coefs`, computing the four coefficients together."""
        t = as_time(t)
        shape = t.shape + (1,) * (ndim - t.dim())
        return PathCoefs(*(v.reshape(shape) for v in self._coefs(t)))

    def alpha(self, t):
        return self._coefs(t)[0]

    def sigma(self, t):
        return self._coefs(t)[1]

    def alpha_dt(self, t):
        return self._coefs(t)[2]

    def sigma_dt(self, t):
        return self._coefs(t)[3]

    def log_snr(self, t):
        t = as_time(t)
        return self.base.log_snr(t) + self._s(t)[0]

    def t_from_log_snr(self, log_snr):
        lam = torch.as_tensor(log_snr, dtype=torch.float64)
        if not self.interpolate:
            return self.base.t_from_log_snr(lam - self.shift)
        # lambda(t) strictly decreases (checked on construction): bisect on [0, 1]
        lo, hi = torch.zeros_like(lam), torch.ones_like(lam)
        for _ in range(_BISECTION_STEPS):
            mid = (lo + hi) / 2
            above = self.log_snr(mid) > lam
            lo, hi = torch.where(above, mid, lo), torch.where(above, hi, mid)
        return (lo + hi) / 2

    def _check_decreasing(self) -> None:
        """ValueError where lambda_base(t) + (1 - t) s fails to decrease: a negative s steeper
        than the base's least steep slope (s < -2 on EDM's schedule, near t = 1)."""
        t = torch.linspace(self.t_min, self.t_max, 4097, dtype=torch.float64)[1:-1]
        lam = self.log_snr(t)
        rising = torch.nonzero(lam[1:] >= lam[:-1]).flatten()
        if rising.numel():
            at = t[rising[0]].item()
            raise ValueError(
                f"the interpolated shift {self.shift} makes the {self.base.kind} schedule's "
                f"log-SNR rise near t = {at:.3f}; use a shift closer to 0 or a constant shift"
            )


def shifted(base: Schedule, shift: float, *, interpolate: bool = False) -> Schedule:
    """``base`` shifted by ``shift`` (a ShiftedSchedule), or ``base`` itself for shift 0."""
    if isinstance(shift, (int, float)) and not isinstance(shift, bool) and shift == 0:
        path_family(base)  # a shift of 0 on a discrete table is still refused
        return base
    return ShiftedSchedule(base, shift, interpolate)
