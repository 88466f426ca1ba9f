"""Samplers by name.

Each is a function ``sample_x(denoiser, x, ts, *, cond, generator, progress, ...options)``.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import partial

from pixdiff.samplers.adaptive import sample_ode_rk45
from pixdiff.samplers.common import SamplingError, per_sample_generators, randn, run_steps
from pixdiff.samplers.ddim import ddim_step, sample_ddim
from pixdiff.samplers.ddpm import ddpm_step, learned_log_variance, posterior, sample_ddpm
from pixdiff.samplers.deis import sample_deis
from pixdiff.samplers.dpm_solver import sample_dpm_solver, sample_dpmpp_2s, sample_dpmpp_multistep
from pixdiff.samplers.euler import sample_euler, sample_euler_ancestral, sample_heun, sample_lms
from pixdiff.samplers.pndm import sample_plms
from pixdiff.samplers.sde import sample_sde_pc
from pixdiff.samplers.unipc import sample_unipc

# Keywords every sampler takes from the caller; the rest are the method's own options.
COMMON_KEYWORDS = ("cond", "generator", "progress")


@dataclass(frozen=True)
class SamplerSpec:
    """A registered sampler: its function, network evaluations per step and fewest steps."""

    fn: Callable
    nfe_per_step: int = 1
    min_steps: int = 1
    stochastic: bool = False
    defaults: Mapping = field(default_factory=dict)

    def options(self) -> list[str]:
        """The method's own keyword options (beyond x, grid and COMMON_KEYWORDS)."""
        params = inspect.signature(self.fn).parameters.values()
        return [
            p.name for p in params if p.kind is p.KEYWORD_ONLY and p.name not in COMMON_KEYWORDS
        ]

    def bind(self, options: Mapping | None) -> Callable:
        options = {**self.defaults, **(options or {})}
        unknown = sorted(set(options) - set(self.options()))
        if unknown:
            raise ValueError(f"unknown sampler option(s) {unknown}; valid: {self.options()}")
        return partial(self.fn, **options)


SAMPLERS: dict[str, SamplerSpec] = {
    "ddpm": SamplerSpec(sample_ddpm, stochastic=True),
    "ddpm-large": SamplerSpec(sample_ddpm, stochastic=True, defaults={"variance": "large"}),
    "ddpm-learned": SamplerSpec(sample_ddpm, stochastic=True, defaults={"variance": "learned"}),
    "ddim": SamplerSpec(sample_ddim),
    # Karras et al. 2022 family, in x~ = x / alpha and sigma~ = sigma / alpha (euler.py)
    "euler": SamplerSpec(sample_euler),
    "euler-ancestral": SamplerSpec(sample_euler_ancestral, stochastic=True),
    "heun": SamplerSpec(sample_heun, nfe_per_step=2),
    "lms": SamplerSpec(sample_lms),
    # exponential integrators in lambda = log(alpha / sigma) (dpm_solver.py); multistep ones warm
    # up with lower orders, so one step suffices for all
    "dpm-solver-1": SamplerSpec(sample_dpm_solver, defaults={"order": 1}),
    "dpm-solver-2": SamplerSpec(sample_dpm_solver, nfe_per_step=2, defaults={"order": 2}),
    "dpm-solver-3": SamplerSpec(sample_dpm_solver, nfe_per_step=3, defaults={"order": 3}),
    "dpmpp-2s": SamplerSpec(sample_dpmpp_2s, nfe_per_step=2),
    "dpmpp-2m": SamplerSpec(sample_dpmpp_multistep, defaults={"order": 2}),
    "dpmpp-3m": SamplerSpec(sample_dpmpp_multistep, defaults={"order": 3}),
    "dpmpp-2m-sde": SamplerSpec(
        sample_dpmpp_multistep, stochastic=True, defaults={"order": 2, "eta": 1.0}
    ),
    "dpmpp-1-sde": SamplerSpec(
        sample_dpmpp_multistep, stochastic=True, defaults={"order": 1, "eta": 1.0}
    ),
    # multistep solvers with 1 NFE per step (unipc.py, deis.py, pndm.py); lower orders warm up
    "unipc-bh1": SamplerSpec(sample_unipc, defaults={"variant": "bh1"}),
    "unipc-bh2": SamplerSpec(sample_unipc, defaults={"variant": "bh2"}),
    "deis": SamplerSpec(sample_deis),
    "plms": SamplerSpec(sample_plms),
    # adaptive dopri5 on the probability-flow ODE (adaptive.py): NFE set by rtol/atol, not by
    # steps (nfe_per_step is nominal; options={"stats": {}} reports the count)
    "ode-rk45": SamplerSpec(sample_ode_rk45),
    # reverse-SDE predictor-corrector (sde.py): 1 + corrector_steps NFE per step (default 1)
    "sde-pc": SamplerSpec(sample_sde_pc, nfe_per_step=2, stochastic=True),
}


def available() -> dict[str, int]:
    """Registered sampler names with their network evaluations (NFE) per step."""
    return {name: spec.nfe_per_step for name, spec in SAMPLERS.items()}


def get_sampler(name: str) -> SamplerSpec:
    if name not in SAMPLERS:
        raise ValueError(f"unknown sampler {name!r}; valid: {sorted(SAMPLERS)}")
    return SAMPLERS[name]


__all__ = [
    "SAMPLERS",
    "SamplerSpec",
    "SamplingError",
    "available",
    "ddim_step",
    "ddpm_step",
    "learned_log_variance",
    "get_sampler",
    "per_sample_generators",
    "posterior",
    "randn",
    "run_steps",
    "sample_ddim",
    "sample_ddpm",
    "sample_deis",
    "sample_dpm_solver",
    "sample_dpmpp_2s",
    "sample_dpmpp_multistep",
    "sample_euler",
    "sample_euler_ancestral",
    "sample_heun",
    "sample_lms",
    "sample_ode_rk45",
    "sample_plms",
    "sample_sde_pc",
    "sample_unipc",
]
