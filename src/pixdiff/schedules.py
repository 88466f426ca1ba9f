"""Noise schedules: every formulation as one Gaussian path x_t = alpha(t) x0 + sigma(t) eps.

Time t runs over [0, 1]; t = 0 is data. A schedule gives alpha(t), sigma(t), their time
derivatives, log_snr(t) = log(alpha^2 / sigma^2) and its inverse, computed in float64.

This module holds the :class:`Schedule` protocol, :func:`q_sample` and the closed-form
continuous schedules:

- VP schedules defined by their log-SNR (Song et al. 2021; Kingma et al. 2021).
- :class:`VESchedule` (Song et al. 2021), :class:`EDMSchedule` (Karras et al. 2022): alpha = 1.
- :class:`FlowSchedule`: the rectified-flow / flow-matching path alpha = 1 - t, sigma = t
  (Liu et al. 2022; Lipman et al. 2022).

The discrete DDPM tables are in ``discrete_schedules.py``, schedules by name in
``schedule_registry.py`` and the posterior q(x_s | x_t, x0) in ``posterior.py``.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass
from typing import ClassVar, NamedTuple

import torch
from torch import Tensor


class PathCoefs(NamedTuple):
    """alpha, sigma and their time derivatives at t, broadcastable against x_t."""

    alpha: Tensor
    sigma: Tensor
    alpha_dt: Tensor
    sigma_dt: Tensor


def as_time(t: Tensor | float) -> Tensor:
    """Validate t in [0, 1] and return it as float64."""
    t = torch.as_tensor(t, dtype=torch.float64)
    if t.numel() and (bool((t < 0).any()) or bool((t > 1).any())):
        bad = t[(t < 0) | (t > 1)].flatten()[0].item()
        raise ValueError(f"time t must lie in [0, 1], got {bad}")
    return t


class Schedule(ABC):
    """A Gaussian path x_t = alpha(t) x0 + sigma(t) eps on t in [0, 1]."""

    kind: ClassVar[str]
    # The interval a sampler integrates over; t_min > 0 where log-SNR is infinite at 0.
    t_min: float = 0.0
    t_max: float = 1.0

    @abstractmethod
    def alpha(self, t: Tensor | float) -> Tensor: ...

    @abstractmethod
    def sigma(self, t: Tensor | float) -> Tensor: ...

    @abstractmethod
    def alpha_dt(self, t: Tensor | float) -> Tensor: ...

    @abstractmethod
    def sigma_dt(self, t: Tensor | float) -> Tensor: ...

    @abstractmethod
    def t_from_log_snr(self, log_snr: Tensor | float) -> Tensor: ...

    def log_snr(self, t: Tensor | float) -> Tensor:
        """lambda(t) = log(alpha^2 / sigma^2) (Kingma et al. 2021)."""
        return 2 * (torch.log(self.alpha(t)) - torch.log(self.sigma(t)))

    def edm_sigma(self, t: Tensor | float) -> Tensor:
        """sigma~ = sigma / alpha = exp(-log_snr / 2), the noise level of x~ = x / alpha: EDM's
        sigma on any path (Karras et al. 2022, Sec. 4, Eq. 4 with s(t) = alpha); +inf where
        alpha = 0."""
        return self.sigma(t) / self.alpha(t)

    def timestep(self, t: Tensor | float) -> Tensor:
        """The time value a network is fed (c_noise): 1000 t for continuous schedules."""
        return 1000 * as_time(t)

    def t_from_timestep(self, timestep: Tensor) -> Tensor:
        """Inverse of :meth:`timestep`."""
        return torch.as_tensor(timestep, dtype=torch.float64) / 1000

    def coefs(self, t: Tensor | float, ndim: int = 4) -> PathCoefs:
        """alpha, sigma and derivatives at t, shaped (N, 1, ..., 1) to broadcast with x_t."""
        t = as_time(t)
        shape = t.shape + (1,) * (ndim - t.dim())
        return PathCoefs(
            *(f(t).reshape(shape) for f in (self.alpha, self.sigma, self.alpha_dt, self.sigma_dt))
        )

    def prior_std(self) -> float:
        """Std of the noise a sampler starts from at t_max, for unit-variance data."""
        a, s = self.alpha(self.t_max).item(), self.sigma(self.t_max).item()
        return math.sqrt(a * a + s * s)

    def to_dict(self) -> dict:
        return {"kind": self.kind, **asdict(self)}  # type: ignore[call-overload]


def q_sample(schedule: Schedule, x0: Tensor, t: Tensor | float, noise: Tensor) -> Tensor:
    """Sample q(x_t | x0) = N(alpha(t) x0, sigma(t)^2 I) (Ho et al. 2020, Eq. 4).

    Args:
        x0: (N, ...) clean data.
        t: scalar or (N,) times in [0, 1].
        noise: standard normal, shaped like x0.
    """
    if noise.shape != x0.shape:
        raise ValueError(f"noise shape {tuple(noise.shape)} does not match x0 {tuple(x0.shape)}")
    t = as_time(t).to(x0.device)
    if t.dim() == 1 and t.shape[0] != x0.shape[0]:
        raise ValueError(f"t has {t.shape[0]} entries for a batch of {x0.shape[0]}")
    c = schedule.coefs(t, x0.dim())
    return (c.alpha * x0 + c.sigma * noise).to(x0.dtype)


# ----------------------------------------------------------------------------- VP base


class VPSchedule(Schedule):
    """Variance preserving: alpha^2 + sigma^2 = 1, all defined by alpha_bar(t) = alpha(t)^2."""

    @abstractmethod
    def alpha_bar(self, t: Tensor | float) -> Tensor: ...

    @abstractmethod
    def alpha_bar_dt(self, t: Tensor | float) -> Tensor: ...

    def alpha(self, t):
        return self.alpha_bar(t).sqrt()

    def sigma(self, t):
        return (1 - self.alpha_bar(t)).clamp_min(0).sqrt()

    def alpha_dt(self, t):
        return self.alpha_bar_dt(t) / (2 * self.alpha(t))

    def sigma_dt(self, t):
        return -self.alpha_bar_dt(t) / (2 * self.sigma(t))


class LogSNRSchedule(VPSchedule):
    """A VP schedule given by a closed-form log-SNR lambda(t): alpha_bar = sigmoid(lambda)."""

    @abstractmethod
    def log_snr(self, t): ...

    @abstractmethod
    def log_snr_dt(self, t: Tensor | float) -> Tensor: ...

    def alpha_bar(self, t):
        return torch.sigmoid(self.log_snr(t))

    def alpha_bar_dt(self, t):
        lam = self.log_snr(t)
        return torch.sigmoid(lam) * torch.sigmoid(-lam) * self.log_snr_dt(t)

    def sigma(self, t):
        return torch.sigmoid(-self.log_snr(t)).sqrt()


# ----------------------------------------------------------------------------- continuous VP


@dataclass(frozen=True)
class VPLinearSchedule(LogSNRSchedule):
    """VP SDE with beta(t) = beta_min + t (beta_max - beta_min) (Song et al. 2021, Eq. 11, 33).

    log alpha_bar(t) = -(beta_max - beta_min) t^2 / 2 - beta_min t.
    """

    kind: ClassVar[str] = "vp-linear"
    beta_min: float = 0.1
    beta_max: float = 20.0
    t_min: float = 1e-3

    def _log_alpha_bar(self, t):
        t = as_time(t)
        return -0.5 * (self.beta_max - self.beta_min) * t**2 - self.beta_min * t

    def log_snr(self, t):
        lab = self._log_alpha_bar(t)
        return lab - torch.log(-torch.expm1(lab))

    def log_snr_dt(self, t):
        t = as_time(t)
        d_lab = -(self.beta_max - self.beta_min) * t - self.beta_min
        return d_lab / -torch.expm1(self._log_alpha_bar(t))

    def t_from_log_snr(self, log_snr):
        # solve (b1 - b0)/2 t^2 + b0 t = softplus(-lambda) for t >= 0
        rhs = torch.nn.functional.softplus(-torch.as_tensor(log_snr, dtype=torch.float64))
        db = self.beta_max - self.beta_min
        return 2 * rhs / (self.beta_min + torch.sqrt(self.beta_min**2 + 2 * db * rhs))


@dataclass(frozen=True)
class VPCosineSchedule(LogSNRSchedule):
    """Cosine log-SNR lambda(t) = -2 log tan(a t + b), clipped to [log_snr_min, log_snr_max].

    The continuous form of the cosine schedule (Nichol & Dhariwal 2021) as written by
    Hoogeboom et al. 2023 (simple diffusion, Sec. 3) and Kingma & Gao 2023.
    """

    kind: ClassVar[str] = "vp-cosine"
    log_snr_min: float = -15.0
    log_snr_max: float = 15.0

    def _ab(self):
        b = math.atan(math.exp(-self.log_snr_max / 2))
        return math.atan(math.exp(-self.log_snr_min / 2)) - b, b

    def log_snr(self, t):
        a, b = self._ab()
        return -2 * torch.log(torch.tan(a * as_time(t) + b))

    def log_snr_dt(self, t):
        a, b = self._ab()
        u = a * as_time(t) + b
        return -2 * a / (torch.sin(u) * torch.cos(u))

    def t_from_log_snr(self, log_snr):
        a, b = self._ab()
        lam = torch.as_tensor(log_snr, dtype=torch.float64)
        return ((torch.atan(torch.exp(-lam / 2)) - b) / a).clamp(0, 1)


@dataclass(frozen=True)
class VPLinearLogSNRSchedule(LogSNRSchedule):
    """log-SNR linear in t from log_snr_max to log_snr_min (Kingma et al. 2021, VDM baseline)."""

    kind: ClassVar[str] = "vp-linear-logsnr"
    log_snr_min: float = -10.0
    log_snr_max: float = 10.0

    def log_snr(self, t):
        return self.log_snr_max + as_time(t) * (self.log_snr_min - self.log_snr_max)

    def log_snr_dt(self, t):
        return torch.full_like(as_time(t), self.log_snr_min - self.log_snr_max)

    def t_from_log_snr(self, log_snr):
        lam = torch.as_tensor(log_snr, dtype=torch.float64)
        return ((lam - self.log_snr_max) / (self.log_snr_min - self.log_snr_max)).clamp(0, 1)


# ----------------------------------------------------------------------------- alpha = 1


class SigmaSchedule(Schedule):
    """Variance exploding: alpha = 1, defined by sigma(t) and its inverse."""

    @abstractmethod
    def t_from_sigma(self, sigma: Tensor) -> Tensor: ...

    def alpha(self, t):
        return torch.ones_like(as_time(t))

    def alpha_dt(self, t):
        return torch.zeros_like(as_time(t))

    def t_from_log_snr(self, log_snr):
        return self.t_from_sigma(torch.exp(-torch.as_tensor(log_snr, dtype=torch.float64) / 2))


@dataclass(frozen=True)
class VESchedule(SigmaSchedule):
    """VE SDE, sigma(t) = sigma_min (sigma_max / sigma_min)^t (Song et al. 2021, Eq. 30)."""

    kind: ClassVar[str] = "ve"
    sigma_min: float = 0.01
    sigma_max: float = 50.0

    def sigma(self, t):
        return self.sigma_min * (self.sigma_max / self.sigma_min) ** as_time(t)

    def sigma_dt(self, t):
        return self.sigma(t) * math.log(self.sigma_max / self.sigma_min)

    def t_from_sigma(self, sigma):
        ratio = math.log(self.sigma_max / self.sigma_min)
        return (torch.log(sigma / self.sigma_min) / ratio).clamp(0, 1)


@dataclass(frozen=True)
class EDMSchedule(SigmaSchedule):
    """EDM's path x = x0 + sigma n with t = sigma / sigma_max (Karras et al. 2022, Table 1).

    Sampling runs over sigma in [sigma_min, sigma_max]; pair with the ``edm`` prediction type
    (preconditioning) and the Karras time grid.
    """

    kind: ClassVar[str] = "edm"
    sigma_min: float = 0.002
    sigma_max: float = 80.0

    def sigma(self, t):
        return self.sigma_max * as_time(t)

    def sigma_dt(self, t):
        return torch.full_like(as_time(t), self.sigma_max)

    def t_from_sigma(self, sigma):
        return (sigma / self.sigma_max).clamp(0, 1)

    @property
    def t_min(self) -> float:  # type: ignore[override]
        return self.sigma_min / self.sigma_max


@dataclass(frozen=True)
class FlowSchedule(Schedule):
    """Straight path alpha = 1 - t, sigma = t (Liu et al. 2022; Lipman et al. 2022)."""

    kind: ClassVar[str] = "flow"

    def alpha(self, t):
        return 1 - as_time(t)

    def sigma(self, t):
        return as_time(t)

    def alpha_dt(self, t):
        return torch.full_like(as_time(t), -1.0)

    def sigma_dt(self, t):
        return torch.ones_like(as_time(t))

    def t_from_log_snr(self, log_snr):
        return torch.sigmoid(-torch.as_tensor(log_snr, dtype=torch.float64) / 2)


# The closed-form schedules, for the registry (schedule_registry.py).
CONTINUOUS_SCHEDULES: tuple[type[Schedule], ...] = (
    VPLinearSchedule,
    VPCosineSchedule,
    VPLinearLogSNRSchedule,
    VESchedule,
    EDMSchedule,
    FlowSchedule,
)
