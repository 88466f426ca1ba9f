"""Samplers by name.

Each runs as ``run(denoiser, x, ts, *, cond, generator, progress)`` once its options are bound
(:meth:`SamplerSpec.bind`). A one-step method registers its ``*_step`` function, which the
registry runs over the grid; a method with state across steps registers its own loop.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from functools import partial
from typing import Any, Literal, NamedTuple, get_args, get_origin, get_type_hints

import torch
from torch import Tensor

from pixdiff.samplers.adaptive import sample_ode_rk45
from pixdiff.samplers.common import (
    SamplingError,
    per_sample_generators,
    randn,
    run_steps,
)
from pixdiff.samplers.consistency import consistency_step
from pixdiff.samplers.ddim import ddim_step
from pixdiff.samplers.ddpm import ddpm_step
from pixdiff.samplers.deis import sample_deis
from pixdiff.samplers.dpm_solver import dpm_solver_step, dpmpp_2s_step, sample_dpmpp_multistep
from pixdiff.samplers.euler import euler_ancestral_step, euler_step, sample_heun, sample_lms
from pixdiff.samplers.picard import Picard, sample_picard
from pixdiff.samplers.pndm import pndm_nfe, sample_pndm
from pixdiff.samplers.sde import sde_pc_step
from pixdiff.samplers.unipc import sample_unipc

# Keywords every sampler takes from the caller; the rest are the method's own options.
COMMON_KEYWORDS = ("cond", "generator", "progress")


class Check(NamedTuple):
    """A rule on a numeric option: ``ok(value)`` must hold; ``rule`` states it after the
    method's title ("eta must be in [0, 1]")."""

    ok: Callable[[Any], bool]
    rule: str


@dataclass(frozen=True, kw_only=True)
class SamplerSpec:
    """A registered sampler: how it runs, network evaluations per step and fewest steps.

    ``step`` is a one-step method ``step(denoiser, x, t, s, *, options..., cond[, generator])``:
    :meth:`bind` checks its options (the values of a ``Literal`` option from its annotation,
    ``checks`` for numeric ones; ``title`` names the method in the message and the progress
    bar) and runs it over the grid without gradients. ``loop`` is a whole sampler
    ``loop(denoiser, x, ts, *, options..., cond, generator, progress)`` for methods that carry
    state across steps (multistep history, adaptive step size, churn scaled by the step count);
    it checks its own options.

    ``nfe``, where given, counts the evaluations of a run from its steps and options when that
    is not steps x nfe_per_step (warm-up stages, an order or corrector count set by options).
    """

    step: Callable[..., Tensor] | None = None
    loop: Callable[..., Tensor] | None = None
    title: str = ""
    checks: Mapping[str, Check] = field(default_factory=dict)
    nfe_per_step: int = 1
    min_steps: int = 1
    stochastic: bool = False
    defaults: Mapping = field(default_factory=dict)
    nfe: Callable[[int, Mapping], int] | None = None

    def __post_init__(self):
        if (self.step is None) == (self.loop is None):
            raise ValueError("a sampler registers exactly one of its step and its loop")
        if self.step is not None and not self.title:
            raise ValueError("a one-step sampler needs a title for its messages")

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
        params = inspect.signature(self.step or self.loop).parameters.values()
        return [
            p.name for p in params if p.kind is p.KEYWORD_ONLY and p.name not in COMMON_KEYWORDS
        ]

    def bind(self, options: Mapping | None) -> Callable[..., Tensor]:
        """The sampler with these options: ``run(denoiser, x, ts, *, cond, generator,
        progress)``. Raises ValueError for an unknown option or a value the method refuses."""
        if self.loop is not None:
            return partial(self.loop, **self._with_defaults(options))
        return partial(self._run_steps, self.one_step(options))

    def _with_defaults(self, options: Mapping | None) -> dict:
        """The spec's defaults updated by ``options``; ValueError for an unknown option."""
        options = {**self.defaults, **(options or {})}
        unknown = sorted(set(options) - set(self.options()))
        if unknown:
            raise ValueError(f"unknown sampler option(s) {unknown}; valid: {self.options()}")
        return options

    def one_step(self, options: Mapping | None) -> Callable[..., Tensor]:
        """The one-step method with these options, checked as by :meth:`bind`:
        ``step(denoiser, x, t, s, *, cond, generator)`` (``generator`` goes to a step that
        draws noise). Raises ValueError for a multistep method, which has no one-step form."""
        if self.step is None:
            raise ValueError(f"{self.loop.__name__} is multistep: it has no one-step form")
        options = self._with_defaults(options)
        self._check(options)
        draws_noise = "generator" in inspect.signature(self.step).parameters

        def step(denoiser, x: Tensor, t: Tensor, s: Tensor, *, cond=None, generator=None):
            noise = {"generator": generator} if draws_noise else {}
            return self.step(denoiser, x, t, s, cond=cond, **noise, **options)

        return step

    def _run_steps(
        self,
        step: Callable[..., Tensor],
        denoiser,
        x: Tensor,
        ts: Tensor,
        *,
        cond=None,
        generator=None,
        progress=False,
    ) -> Tensor:
        """The one-step method ``step`` (:meth:`one_step`) over the grid ``ts``, without
        gradients: on each pair t > s, ``x = step(denoiser, x, t, s, cond=cond,
        generator=generator)``."""

        def one_step(x, t, s, i):
            return step(denoiser, x, t, s, cond=cond, generator=generator)

        with torch.no_grad():
            return run_steps(one_step, x, ts, progress=progress, desc=self.title)

    def _check(self, options: Mapping) -> None:
        """Raise ValueError for an option value outside its ``Literal`` choices or ``checks``."""
        hints = get_type_hints(self.step)
        for name, value in options.items():
            choices = get_args(hints[name]) if get_origin(hints[name]) is Literal else ()
            if choices and value not in choices:
                raise ValueError(_not_a_choice(self.title, name, value, choices))
            check = self.checks.get(name)
            if check is not None and not check.ok(value):
                raise ValueError(f"{self.title} {check.rule}, got {value!r}")

    def function(self, name: str) -> Callable[..., Tensor]:
        """The one-step method as a function ``name(denoiser, x, ts, *, options..., cond,
        generator, progress)``, e.g. ``sample_ddim``; its options are checked as by :meth:`bind`
        (a misspelled one raises)."""

        def sample(
            denoiser, x: Tensor, ts: Tensor, *, cond=None, generator=None, progress=False, **options
        ) -> Tensor:
            run = self.bind(options)
            return run(denoiser, x, ts, cond=cond, generator=generator, progress=progress)

        sample.__name__ = sample.__qualname__ = name
        sample.__doc__ = f"{self.title} sampling over the grid ts: :func:`{self.step.__name__}`."
        sample.__signature__ = self._signature()  # type: ignore[attr-defined]
        return sample

    def _signature(self) -> inspect.Signature:
        """(denoiser, x, ts, *, options..., cond, generator, progress) with the spec's defaults."""
        params = list(inspect.signature(self.step).parameters.values())
        positional = [p.replace(kind=p.POSITIONAL_OR_KEYWORD) for p in params[:2]]
        grid = inspect.Parameter("ts", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation="Tensor")
        keywords = [
            p.replace(default=self.defaults.get(p.name, p.default))
            for p in params
            if p.kind is p.KEYWORD_ONLY and p.name != "generator"
        ]
        progress = inspect.Parameter("progress", inspect.Parameter.KEYWORD_ONLY, default=False)
        generator = inspect.Parameter("generator", inspect.Parameter.KEYWORD_ONLY, default=None)
        return inspect.Signature([*positional, grid, *keywords, generator, progress])


def _not_a_choice(title: str, name: str, value, choices: tuple) -> str:
    """The message for a value outside a ``Literal`` option's choices: an unknown name for a
    named choice, else the values it must be."""
    if all(isinstance(c, str) for c in choices):
        return f"unknown {title} {name} {value!r}; valid: {', '.join(choices)}"
    *head, last = (str(c) for c in choices)
    return f"{title} {name} must be {', '.join(head)} or {last}, got {value!r}"


def _singlestep(per_step: int) -> Callable[[int, Mapping], int]:
    """Evaluations of a singlestep method (``order`` or ``per_step`` per step) whose last step,
    to sigma = 0, takes one (the data prediction there needs no intermediate stage)."""
    return lambda steps, options: options.get("order", per_step) * (steps - 1) + 1


_DDPM = SamplerSpec(step=ddpm_step, title="DDPM", stochastic=True)
_DPM_SOLVER = SamplerSpec(step=dpm_solver_step, title="DPM-Solver", nfe=_singlestep(1))

SAMPLERS: dict[str, SamplerSpec] = {
    "ddpm": _DDPM,
    "ddpm-large": replace(_DDPM, defaults={"variance": "large"}),
    "ddpm-learned": replace(_DDPM, defaults={"variance": "learned"}),
    "ddim": SamplerSpec(
        step=ddim_step,
        title="DDIM",
        checks={"eta": Check(lambda eta: 0 <= eta <= 1, "eta must be in [0, 1]")},
    ),
    # Karras et al. 2022 family, in x~ = x / alpha and sigma~ = sigma / alpha (euler.py)
    "euler": SamplerSpec(step=euler_step, title="Euler"),
    "euler-ancestral": SamplerSpec(
        step=euler_ancestral_step,
        title="Euler ancestral",
        stochastic=True,
        checks={"eta": Check(lambda eta: eta >= 0, "eta must be >= 0")},
    ),
    # at most: Heun's trapezoid is skipped on the last step and on huge drops of sigma~
    "heun": SamplerSpec(loop=sample_heun, nfe_per_step=2, nfe=_singlestep(2)),
    "lms": SamplerSpec(loop=sample_lms),
    # exponential integrators in lambda = log(alpha / sigma) (dpm_solver.py); multistep ones warm
    # up with lower orders, so one step suffices for all
    "dpm-solver-1": replace(_DPM_SOLVER, defaults={"order": 1}),
    "dpm-solver-2": replace(_DPM_SOLVER, nfe_per_step=2, defaults={"order": 2}),
    "dpm-solver-3": replace(_DPM_SOLVER, nfe_per_step=3, defaults={"order": 3}),
    "dpmpp-2s": SamplerSpec(
        step=dpmpp_2s_step, title="DPM-Solver++(2S)", nfe_per_step=2, nfe=_singlestep(2)
    ),
    "dpmpp-2m": SamplerSpec(loop=sample_dpmpp_multistep, defaults={"order": 2}),
    "dpmpp-3m": SamplerSpec(loop=sample_dpmpp_multistep, defaults={"order": 3}),
    "dpmpp-2m-sde": SamplerSpec(
        loop=sample_dpmpp_multistep, stochastic=True, defaults={"order": 2, "eta": 1.0}
    ),
    "dpmpp-1-sde": SamplerSpec(
        loop=sample_dpmpp_multistep, stochastic=True, defaults={"order": 1, "eta": 1.0}
    ),
    # multistep solvers with 1 NFE per step (unipc.py, deis.py, pndm.py); lower orders warm up
    "unipc-bh1": SamplerSpec(loop=sample_unipc, defaults={"variant": "bh1"}),
    "unipc-bh2": SamplerSpec(loop=sample_unipc, defaults={"variant": "bh2"}),
    "deis": SamplerSpec(loop=sample_deis),
    "plms": SamplerSpec(loop=sample_pndm, defaults={"pseudo_rk": False}),
    "pndm": SamplerSpec(
        loop=sample_pndm,
        nfe=lambda steps, o: pndm_nfe(steps) if o.get("pseudo_rk", True) else steps,
    ),
    # adaptive dopri5 on the probability-flow ODE (adaptive.py): NFE set by rtol/atol, not by
    # steps (nfe_per_step is nominal; options={"stats": {}} reports the count)
    "ode-rk45": SamplerSpec(loop=sample_ode_rk45),
    # reverse-SDE predictor-corrector (sde.py): 1 + corrector_steps NFE per step (default 1)
    "sde-pc": SamplerSpec(
        step=sde_pc_step,
        title="SDE",
        nfe_per_step=2,
        stochastic=True,
        checks={
            "corrector_steps": Check(lambda n: n >= 0, "needs corrector_steps >= 0"),
            "snr": Check(lambda snr: snr > 0, "needs snr > 0"),
        },
        nfe=lambda steps, o: steps * (1 + o.get("corrector_steps", 1)),
    ),
    # multistep consistency sampling (consistency.py): for consistency-distilled runs
    "consistency": SamplerSpec(step=consistency_step, title="consistency", stochastic=True),
}

# The one-step methods as plain functions, with their options as keywords.
sample_ddpm = SAMPLERS["ddpm"].function("sample_ddpm")
sample_ddim = SAMPLERS["ddim"].function("sample_ddim")
sample_euler = SAMPLERS["euler"].function("sample_euler")
sample_euler_ancestral = SAMPLERS["euler-ancestral"].function("sample_euler_ancestral")
sample_dpm_solver = SAMPLERS["dpm-solver-2"].function("sample_dpm_solver")
sample_dpmpp_2s = SAMPLERS["dpmpp-2s"].function("sample_dpmpp_2s")
sample_sde_pc = SAMPLERS["sde-pc"].function("sample_sde_pc")
sample_consistency = SAMPLERS["consistency"].function("sample_consistency")


def available() -> dict[str, int]:
    """Registered sampler names with their network evaluations (NFE) per step."""
    return {name: spec.nfe_per_step for name, spec in SAMPLERS.items()}


def get_sampler(name: str) -> SamplerSpec:
    if name not in SAMPLERS:
        raise ValueError(f"unknown sampler {name!r}; valid: {sorted(SAMPLERS)}")
    return SAMPLERS[name]


def parse_options(sampler: str, texts: Mapping[str, str]) -> dict:
    """A sampler's options given as text (``KEY=VALUE``), each converted by its annotation (a
    number, true/false, one of a Literal's choices) and checked as :meth:`SamplerSpec.bind`
    does. ValueError naming an unknown key (with the valid ones) or the key of a bad value."""
    spec = get_sampler(sampler)
    hints = get_type_hints(spec.step or spec.loop)
    valid = [name for name in spec.options() if _text_kind(hints[name])]
    options = {}
    for key, text in texts.items():
        if key not in valid:
            listed = ", ".join(valid) if valid else "none"
            raise ValueError(f"sampler {sampler} has no option {key!r}; its options: {listed}")
        options[key] = _from_text(hints[key], text, f"sampler {sampler} option {key}")
    spec.bind(options)
    return options


def _text_kind(annotation) -> str | None:
    """How an option of this annotation is written as text, or None if it cannot be."""
    if get_origin(annotation) is Literal:
        return "choice"
    return {bool: "bool", int: "int", float: "float"}.get(annotation)


def _from_text(annotation, text: str, what: str):
    """``text`` as a value of ``annotation`` (see :func:`_text_kind`); ValueError naming
    ``what``."""
    kind = _text_kind(annotation)
    if kind == "choice":
        choices = get_args(annotation)
        for choice in choices:
            if str(choice) == text:
                return choice
        raise ValueError(f"{what} must be one of {', '.join(map(str, choices))}, got {text!r}")
    if kind == "bool":
        if text.lower() in ("true", "false"):
            return text.lower() == "true"
        raise ValueError(f"{what} must be true or false, got {text!r}")
    try:
        value = int(text) if kind == "int" else float(text)
    except ValueError:
        number = "a whole number" if kind == "int" else "a number"
        raise ValueError(f"{what} must be {number}, got {text!r}") from None
    if value != value:  # NaN
        raise ValueError(f"{what} must be a number, got {text!r}")
    return value


__all__ = [
    "SAMPLERS",
    "Picard",
    "SamplerSpec",
    "SamplingError",
    "available",
    "consistency_step",
    "ddim_step",
    "ddpm_step",
    "get_sampler",
    "parse_options",
    "per_sample_generators",
    "randn",
    "run_steps",
    "sample_consistency",
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
    "sample_picard",
    "sample_ode_rk45",
    "sample_pndm",
    "sample_sde_pc",
    "sample_unipc",
]
