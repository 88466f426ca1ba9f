"""Shared oracle helpers for the sampler tests: exact ODE errors on Gaussian data."""

import torch

from pixdiff.samplers import SAMPLERS
from pixdiff.toy import GaussianMixture

MU, S = [2.0, -1.0], 0.5
GAUSS = GaussianMixture.gaussian(MU, S)
# (schedule, prediction) pairs covering every kind of path
PATHS = [
    ("linear", "eps"),
    ("vp-linear", "eps"),
    ("vp-cosine", "v"),
    ("ve", "score"),
    ("edm", "edm"),
    ("flow", "flow"),
]


def log_snr_grid(schedule, steps: int, lam_end: float = 0.7):
    """steps + 1 times uniform in lambda = log(alpha/sigma) from t_max to lambda = lam_end,
    an intermediate time (sigma/alpha = 0.5, the data scale): no final jump to t = 0, so the
    final step does not mask a method's order."""
    lam = torch.linspace(schedule.log_snr(schedule.t_max).item() / 2, lam_end, steps + 1)
    ts = schedule.t_from_log_snr(2 * lam.double())
    ts[0] = schedule.t_max
    return ts


def start_and_exact(schedule, ts, n=200):
    """x_T ~ N(0, sigma_T^2) at ts[0] and the exact ODE solution from it at ts[-1]."""
    a_T, s_T = schedule.alpha(ts[0]).item(), schedule.sigma(ts[0]).item()
    x_T = s_T * torch.randn(n, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    a_end, s_end = schedule.alpha(ts[-1]).item(), schedule.sigma(ts[-1]).item()
    return x_T, GAUSS.ode_map_gaussian(x_T, a_T, s_T, alpha_to=a_end, sigma_to=s_end)


def ode_error(name: str, options: dict, schedule, steps: int, n: int = 200) -> float:
    """Max |sampler - exact ODE solution| at the grid's end time, from the same x_T."""
    ts = log_snr_grid(schedule, steps)
    x_T, exact = start_and_exact(schedule, ts, n)
    x = SAMPLERS[name].bind(options)(GAUSS.exact_denoiser(schedule), x_T, ts)
    return (x - exact).abs().max().item()


class CountingDenoiser:
    """Wraps a denoiser and counts its calls (NFE)."""

    def __init__(self, denoiser):
        self.denoiser, self.schedule, self.calls = denoiser, denoiser.schedule, 0

    def __call__(self, x, t, cond=None):
        self.calls += 1
        return self.denoiser(x, t, cond)
