"""Discrete schedules: the T-step beta tables of DDPM (Ho et al. 2020) and its successors.

Timestep index i (0..T-1) sits at t = (i + 1) / T and t = 0 is the clean image, so the tables
are bit-compatible with the usual T = 1000 arrays; between nodes alpha_bar is interpolated
linearly in t. The posterior q(x_{t-1} | x_t, x0) of these tables is ``posterior.posterior``
at t = (i + 1) / T, s = i / T.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import ClassVar, Literal, get_args

import torch
from torch import Tensor

from pixdiff.schedules import VPSchedule, as_time

BetaKind = Literal["linear", "scaled-linear", "quadratic", "sigmoid", "cosine"]
BETA_KINDS: tuple[str, ...] = get_args(BetaKind)

# Default beta endpoints per kind: DDPM (Ho et al. 2020) for linear/quadratic; Stable
# Diffusion's scaled-linear (Rombach et al. 2022); GeoDiff's sigmoid (Xu et al. 2022).
_BETA_RANGE = {
    "linear": (1e-4, 0.02),
    "quadratic": (1e-4, 0.02),
    "scaled-linear": (0.00085, 0.012),
    "sigmoid": (1e-4, 0.02),
    "cosine": (None, None),
}


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

    # --- continuous view: nodes t_k = k / T with alpha_bar(0) = 1
    def _nodes(self, device) -> Tensor:
        ones = torch.ones(1, dtype=torch.float64)
        return torch.cat([ones, self.alphas_cumprod]).to(device)

    def alpha_bar(self, t):
        t = as_time(t)
        nodes = self._nodes(t.device)
        pos = t * self.num_timesteps
        k = pos.floor().clamp(max=self.num_timesteps - 1).long()
        frac = pos - k
        return nodes[k] + frac * (nodes[k + 1] - nodes[k])

    def alpha_bar_dt(self, t):
        t = as_time(t)
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
        return as_time(t) * self.num_timesteps - 1

    def t_from_timestep(self, timestep):
        return (torch.as_tensor(timestep, dtype=torch.float64) + 1) / self.num_timesteps

    @property
    def t_min(self) -> float:  # type: ignore[override]
        return 1 / self.num_timesteps
