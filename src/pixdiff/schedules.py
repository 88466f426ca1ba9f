"""Noise schedules: every formulation as one Gaussian path x_t = alpha(t) x0 + sigma(t) eps.

Time t runs over [0, 1]; t = 0 is data. A schedule gives alpha(t), sigma(t), their time
derivatives, log_snr(t) = log(alpha^2 / sigma^2) and its inverse, computed in float64.

- :class:`DiscreteSchedule`: the T-step beta tables of DDPM (Ho et al. 2020) and its successors.
  Timestep index i (0..T-1) sits at t = (i + 1) / T and t = 0 is the clean image, so the tables
  are bit-compatible with the usual T = 1000 arrays; between nodes alpha_bar is interpolated
  linearly in t.
- Continuous VP schedules defined by their log-SNR (Song et al. 2021; Kingma et al. 2021).
- :class:`VESchedule` (Song et al. 2021), :class:`EDMSchedule` (Karras et al. 2022): alpha = 1.
- :class:`FlowSchedule`: the rectified-flow / flow-matching path alpha = 1 - t, sigma = t
  (Liu et al. 2022; Lipman et al. 2022).
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass, field, fields
from typing import ClassVar, Literal, NamedTuple

import torch
from torch import Tensor

BetaKind = Literal["linear", "scaled-linear", "quadratic", "sigmoid", "cosine"]

# Default beta endpoints per kind: DDPM (Ho et al. 2020) for linear/quadratic; Stable
# Diffusion's scaled-linear (Rombach et al. 2022); GeoDiff's sigmoid (Xu et al. 2022).
_BETA_RANGE = {
    "linear": (1e-4, 0.02),
    "quadratic": (1e-4, 0.02),
    "scaled-linear": (0.00085, 0.012),
    "sigmoid": (1e-4, 0.02),
    "cosine": (None, None),
}


class PathCoefs(NamedTuple):
    """alpha, sigma and their time derivatives at t, broadcastable against x_t."""

    alpha: Tensor
    sigma: Tensor
    alpha_dt: Tensor
    sigma_dt: Tensor


def _as_time(t: Tensor | float) -> Tensor:
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

    def timestep(self, t: Tensor | float) -> Tensor:
        """The time value a network is fed (c_noise): 1000 t for continuous schedules."""
        return 1000 * _as_time(t)

    def t_from_timestep(self, timestep: Tensor) -> Tensor:
        """Inverse of :meth:`timestep`."""
        return torch.as_tensor(timestep, dtype=torch.float64) / 1000

    def coefs(self, t: Tensor | float, ndim: int = 4) -> PathCoefs:
        """alpha, sigma and derivatives at t, shaped (N, 1, ..., 1) to broadcast with x_t."""
        t = _as_time(t)
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
    t = _as_time(t).to(x0.device)
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


# ----------------------------------------------------------------------------- discrete


def beta_table(
    kind: BetaKind, num_timesteps: int, beta_start: float | None, beta_end: float | None
) -> Tensor:
    """The float64 beta_1..beta_T table of a named discrete schedule."""
    T = num_timesteps
    lo, hi = beta_start, beta_end
    if kind == "linear":  # Ho et al. 2020, Sec. 4
        return torch.linspace(lo, hi, T, dtype=torch.float64)
    if kind in ("scaled-linear", "quadratic"):  # linear in sqrt(beta) (Ho et al. code "quad")
        return torch.linspace(lo**0.5, hi**0.5, T, dtype=torch.float64) ** 2
    if kind == "sigmoid":  # GeoDiff (Xu et al. 2022)
        return torch.sigmoid(torch.linspace(-6, 6, T, dtype=torch.float64)) * (hi - lo) + lo
    if kind == "cosine":  # Nichol & Dhariwal 2021, Eq. 17, s = 0.008, betas clipped at 0.999
        s = 0.008
        steps = torch.arange(T + 1, dtype=torch.float64) / T
        f = torch.cos((steps + s) / (1 + s) * math.pi / 2) ** 2
        return (1 - f[1:] / f[:-1]).clamp(max=0.999)
    raise ValueError(f"unknown beta schedule {kind!r}; valid: {sorted(_BETA_RANGE)}")


def rescale_zero_terminal_snr(betas: Tensor) -> Tensor:
    """Rescale sqrt(alpha_bar) so the last step has SNR exactly 0 (Lin et al. 2023, Alg. 1)."""
    sqrt_ab = torch.cumprod(1 - betas, 0).sqrt()
    first, last = sqrt_ab[0].clone(), sqrt_ab[-1].clone()
    sqrt_ab = (sqrt_ab - last) * first / (first - last)
    ab = sqrt_ab**2
    alphas = torch.cat([ab[:1], ab[1:] / ab[:-1]])
    return 1 - alphas


@dataclass(frozen=True)
class DiscreteSchedule(VPSchedule):
    """T-step discrete VP schedule with the standard DDPM tables (Ho et al. 2020).

    Args:
        beta_kind: linear | scaled-linear | quadratic | sigmoid | cosine.
        num_timesteps: T (default 1000).
        beta_start, beta_end: endpoints (defaults depend on the kind; unused for cosine).
        zero_terminal_snr: rescale so alpha_bar_T = 0 (Lin et al. 2023); pair it with
            v-prediction, since eps-prediction cannot recover x0 at zero SNR.
    """

    kind: ClassVar[str] = "discrete"
    beta_kind: BetaKind = "linear"
    num_timesteps: int = 1000
    beta_start: float | None = None
    beta_end: float | None = None
    zero_terminal_snr: bool = False
    betas: Tensor = field(init=False, repr=False, compare=False)
    alphas_cumprod: Tensor = field(init=False, repr=False, compare=False)

    def __post_init__(self):
        if self.beta_kind not in _BETA_RANGE:
            raise ValueError(
                f"unknown beta schedule {self.beta_kind!r}; valid: {sorted(_BETA_RANGE)}"
            )
        if self.num_timesteps < 2:
            raise ValueError(f"num_timesteps must be >= 2, got {self.num_timesteps}")
        lo, hi = _BETA_RANGE[self.beta_kind]
        object.__setattr__(
            self, "beta_start", self.beta_start if self.beta_start is not None else lo
        )
        object.__setattr__(self, "beta_end", self.beta_end if self.beta_end is not None else hi)
        betas = beta_table(self.beta_kind, self.num_timesteps, self.beta_start, self.beta_end)
        if self.zero_terminal_snr:
            betas = rescale_zero_terminal_snr(betas)
        object.__setattr__(self, "betas", betas)
        object.__setattr__(self, "alphas_cumprod", torch.cumprod(1 - betas, 0))

    def to_dict(self) -> dict:
        names = ("beta_kind", "num_timesteps", "beta_start", "beta_end", "zero_terminal_snr")
        return {"kind": self.kind, **{n: getattr(self, n) for n in names}}

    # --- the standard tables (Ho et al. 2020 Eq. 6-7; Nichol & Dhariwal 2021)
    @property
    def alphas_cumprod_prev(self) -> Tensor:
        return torch.cat([torch.ones(1, dtype=torch.float64), self.alphas_cumprod[:-1]])

    @property
    def posterior_variance(self) -> Tensor:
        """beta_tilde_t = (1 - abar_{t-1}) / (1 - abar_t) * beta_t."""
        return self.betas * (1 - self.alphas_cumprod_prev) / (1 - self.alphas_cumprod)

    @property
    def posterior_log_variance_clipped(self) -> Tensor:
        """log beta_tilde with the t = 0 entry (which is 0) replaced by the t = 1 entry."""
        v = self.posterior_variance
        return torch.log(torch.cat([v[1:2], v[1:]]))

    @property
    def posterior_mean_coef1(self) -> Tensor:
        """Coefficient of x0 in the posterior mean."""
        return self.betas * self.alphas_cumprod_prev.sqrt() / (1 - self.alphas_cumprod)

    @property
    def posterior_mean_coef2(self) -> Tensor:
        """Coefficient of x_t in the posterior mean."""
        return (1 - self.alphas_cumprod_prev) * (1 - self.betas).sqrt() / (1 - self.alphas_cumprod)

    # --- continuous view: nodes t_k = k / T with alpha_bar(0) = 1
    def _nodes(self, device) -> Tensor:
        ones = torch.ones(1, dtype=torch.float64)
        return torch.cat([ones, self.alphas_cumprod]).to(device)

    def alpha_bar(self, t):
        t = _as_time(t)
        nodes = self._nodes(t.device)
        pos = t * self.num_timesteps
        k = pos.floor().clamp(max=self.num_timesteps - 1).long()
        frac = pos - k
        return nodes[k] + frac * (nodes[k + 1] - nodes[k])

    def alpha_bar_dt(self, t):
        t = _as_time(t)
        nodes = self._nodes(t.device)
        k = (t * self.num_timesteps).floor().clamp(max=self.num_timesteps - 1).long()
        return (nodes[k + 1] - nodes[k]) * self.num_timesteps

    def log_snr(self, t):
        ab = self.alpha_bar(t)
        return torch.log(ab) - torch.log1p(-ab)

    def t_from_log_snr(self, log_snr):
        ab = torch.sigmoid(torch.as_tensor(log_snr, dtype=torch.float64))
        nodes = self._nodes(ab.device)
        # nodes decrease; search on the negated (increasing) sequence
        k = torch.searchsorted(-nodes, -ab, right=False).clamp(1, self.num_timesteps)
        lo, hi = nodes[k - 1], nodes[k]
        frac = ((lo - ab) / (lo - hi)).clamp(0, 1)
        return ((k - 1) + frac) / self.num_timesteps

    def timestep(self, t):
        """The (fractional) training timestep index i = t T - 1 a discrete network is fed."""
        return _as_time(t) * self.num_timesteps - 1

    def t_from_timestep(self, timestep):
        return (torch.as_tensor(timestep, dtype=torch.float64) + 1) / self.num_timesteps

    @property
    def t_min(self) -> float:  # type: ignore[override]
        return 1 / self.num_timesteps


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
        t = _as_time(t)
        return -0.5 * (self.beta_max - self.beta_min) * t**2 - self.beta_min * t

    def log_snr(self, t):
        lab = self._log_alpha_bar(t)
        return lab - torch.log(-torch.expm1(lab))

    def log_snr_dt(self, t):
        t = _as_time(t)
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
        return -2 * torch.log(torch.tan(a * _as_time(t) + b))

    def log_snr_dt(self, t):
        a, b = self._ab()
        u = a * _as_time(t) + b
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
        return self.log_snr_max + _as_time(t) * (self.log_snr_min - self.log_snr_max)

    def log_snr_dt(self, t):
        return torch.full_like(_as_time(t), self.log_snr_min - self.log_snr_max)

    def t_from_log_snr(self, log_snr):
        lam = torch.as_tensor(log_snr, dtype=torch.float64)
        return ((lam - self.log_snr_max) / (self.log_snr_min - self.log_snr_max)).clamp(0, 1)


# ----------------------------------------------------------------------------- alpha = 1


class SigmaSchedule(Schedule):
    """Variance exploding: alpha = 1, defined by sigma(t) and its inverse."""

    @abstractmethod
    def t_from_sigma(self, sigma: Tensor) -> Tensor: ...

    def alpha(self, t):
        return torch.ones_like(_as_time(t))

    def alpha_dt(self, t):
        return torch.zeros_like(_as_time(t))

    def t_from_log_snr(self, log_snr):
        return self.t_from_sigma(torch.exp(-torch.as_tensor(log_snr, dtype=torch.float64) / 2))


@dataclass(frozen=True)
class VESchedule(SigmaSchedule):
    """VE SDE, sigma(t) = sigma_min (sigma_max / sigma_min)^t (Song et al. 2021, Eq. 30)."""

    kind: ClassVar[str] = "ve"
    sigma_min: float = 0.01
    sigma_max: float = 50.0

    def sigma(self, t):
        return self.sigma_min * (self.sigma_max / self.sigma_min) ** _as_time(t)

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
        return self.sigma_max * _as_time(t)

    def sigma_dt(self, t):
        return torch.full_like(_as_time(t), self.sigma_max)

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
        return 1 - _as_time(t)

    def sigma(self, t):
        return _as_time(t)

    def alpha_dt(self, t):
        return torch.full_like(_as_time(t), -1.0)

    def sigma_dt(self, t):
        return torch.ones_like(_as_time(t))

    def t_from_log_snr(self, log_snr):
        return torch.sigmoid(-torch.as_tensor(log_snr, dtype=torch.float64) / 2)


# ----------------------------------------------------------------------------- registry

SCHEDULES: dict[str, type[Schedule]] = {
    c.kind: c
    for c in (
        DiscreteSchedule,
        VPLinearSchedule,
        VPCosineSchedule,
        VPLinearLogSNRSchedule,
        VESchedule,
        EDMSchedule,
        FlowSchedule,
    )
}
# Short names: the discrete beta kinds resolve to DiscreteSchedule(beta_kind=name).
SCHEDULE_NAMES = sorted([*SCHEDULES, *(k for k in _BETA_RANGE)])


def schedule_from_dict(d: dict) -> Schedule:
    """Build a schedule from ``to_dict()`` output; unknown keys raise listing the valid ones."""
    d = dict(d)
    kind = d.pop("kind", None)
    if kind in _BETA_RANGE:
        d.setdefault("beta_kind", kind)
        kind = "discrete"
    if kind not in SCHEDULES:
        raise ValueError(f"unknown schedule {kind!r}; valid: {SCHEDULE_NAMES}")
    cls = SCHEDULES[kind]
    valid = [f.name for f in fields(cls) if f.init]  # type: ignore[arg-type]
    unknown = sorted(set(d) - set(valid))
    if unknown:
        raise ValueError(f"unknown option(s) {unknown} for schedule {kind!r}; valid: {valid}")
    return cls(**d)


def get_schedule(name: str) -> Schedule:
    """A schedule by name with its published defaults, e.g. 'linear', 'cosine', 'edm', 'flow'."""
    return schedule_from_dict({"kind": name})
