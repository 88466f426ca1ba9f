"""Samplers by name.

Each is a function ``sample_x(denoiser, x, ts, *, cond, generator, progress, ...options)``.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import partial

from pixdiff.samplers.common import SamplingError, per_sample_generators, randn, run_steps
from pixdiff.samplers.ddim import ddim_step, sample_ddim
from pixdiff.samplers.ddpm import ddpm_step, posterior, sample_ddpm

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
    "ddim": SamplerSpec(sample_ddim),
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
    "get_sampler",
    "per_sample_generators",
    "posterior",
    "randn",
    "run_steps",
    "sample_ddim",
    "sample_ddpm",
]
