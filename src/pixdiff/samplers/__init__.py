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
from pixdiff.samplers.pndm import pndm_nfe, sample_plms, sample_pndm
from pixdiff.samplers.sde import sample_sde_pc
from pixdiff.samplers.unipc import sample_unipc

# Keywords every sampler takes from the caller; the rest are the method's own options.
COMMON_KEYWORDS = ("cond", "generator", "progress")


@dataclass(frozen=True)
class SamplerSpec:
    """A registered sampler: its function, network evaluations per step and fewest steps.

    ``nfe``, where given, counts the evaluations of a run from its steps and options when that
    is not steps x nfe_per_step (warm-up stages, an order or corrector count set by options).
    """

    fn: Callable
    nfe_per_step: int = 1
    min_steps: int = 1
    stochastic: bool = False
    defaults: Mapping = field(default_factory=dict)
    nfe: Callable[[int, Mapping], int] | None = None

    def total_nfe(self, steps: int, options: Mapping | None = None) -> int:
        """Network evaluations of a run of ``steps`` steps with ``options``."""
        if self.nfe is None:
            return steps * self.nfe_per_step
        return self.nfe(steps, {**self.defaults, **(options or {})})

    def steps_for(self, budget: int, options: Mapping | None = None) -> int:
        """The most steps whose run fits ``budget`` evaluations (0 if none does)."""
        steps = 0
        while self.total_nfe(steps + 1, options) <= budget:
            steps += 1
        return steps

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


def _singlestep(per_step: int) -> Callable[[int, Mapping], int]:
    """Evaluations of a singlestep method (``order`` or ``per_step`` per step) whose last step,
    to sigma = 0, takes one (the data prediction there needs no intermediate stage)."""
    return lambda steps, options: options.get("order", per_step) * (steps - 1) + 1


SAMPLERS: dict[str, SamplerSpec] = {
    "ddpm": SamplerSpec(sample_ddpm, stochastic=True),
    "ddpm-large": SamplerSpec(sample_ddpm, stochastic=True, defaults={"variance": "large"}),
    "ddpm-learned": SamplerSpec(sample_ddpm, stochastic=True, defaults={"variance": "learned"}),
    "ddim": SamplerSpec(sample_ddim),
    # Karras et al. 2022 family, in x~ = x / alpha and sigma~ = sigma / alpha (euler.py)
    "euler": SamplerSpec(sample_euler),
    "euler-ancestral": SamplerSpec(sample_euler_ancestral, stochastic=True),
    # at most: Heun's trapezoid is skipped on the last step and where sigma~ shrinks > 10x
    "heun": SamplerSpec(sample_heun, nfe_per_step=2, nfe=_singlestep(2)),
    "lms": SamplerSpec(sample_lms),
    # exponential integrators in lambda = log(alpha / sigma) (dpm_solver.py); multistep ones warm
    # up with lower orders, so one step suffices for all
    "dpm-solver-1": SamplerSpec(sample_dpm_solver, defaults={"order": 1}, nfe=_singlestep(1)),
    "dpm-solver-2": SamplerSpec(
        sample_dpm_solver, nfe_per_step=2, defaults={"order": 2}, nfe=_singlestep(1)
    ),
    "dpm-solver-3": SamplerSpec(
        sample_dpm_solver, nfe_per_step=3, defaults={"order": 3}, nfe=_singlestep(1)
    ),
    "dpmpp-2s": SamplerSpec(sample_dpmpp_2s, nfe_per_step=2, nfe=_singlestep(2)),
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
    "pndm": SamplerSpec(sample_pndm, nfe=lambda steps, _: pndm_nfe(steps)),
    # adaptive dopri5 on the probability-flow ODE (adaptive.py): NFE set by rtol/atol, not by
    # steps (nfe_per_step is nominal; options={"stats": {}} reports the count)
    "ode-rk45": SamplerSpec(sample_ode_rk45),
    # reverse-SDE predictor-corrector (sde.py): 1 + corrector_steps NFE per step (default 1)
    "sde-pc": SamplerSpec(
        sample_sde_pc,
        nfe_per_step=2,
        stochastic=True,
        nfe=lambda steps, o: steps * (1 + o.get("corrector_steps", 1)),
    ),
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
    "sample_pndm",
    "sample_sde_pc",
    "sample_unipc",
]
