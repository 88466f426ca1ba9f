"""``pixdiff.sample``: draw images from any model with any registered sampler."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from pixdiff.conditioning import Cond
from pixdiff.denoiser import Denoiser
from pixdiff.discrete_schedules import DiscreteSchedule
from pixdiff.guidance import DenoiserWrapper
from pixdiff.precision import NetDtype, autocast, check_net_dtype
from pixdiff.prediction import PredictionType
from pixdiff.samplers import (
    SAMPLERS,
    Picard,
    get_sampler,
    per_sample_generators,
    randn,
    sample_picard,
)
from pixdiff.schedule_registry import get_schedule
from pixdiff.schedules import EDMSchedule, Schedule
from pixdiff.self_conditioning import self_conditioned
from pixdiff.shifted_schedules import ShiftedSchedule
from pixdiff.timesteps import Spacing, time_grid


def default_spacing(schedule: Schedule) -> Spacing:
    """trailing for discrete schedules (Lin et al. 2023), Karras for EDM (shifted or not), else
    uniform in t."""
    if isinstance(schedule, DiscreteSchedule):
        return "trailing"
    base = schedule.base if isinstance(schedule, ShiftedSchedule) else schedule
    return "karras" if isinstance(base, EDMSchedule) else "uniform-t"


def steps_for_nfe(sampler: str, nfe: int, options: Mapping | None = None) -> int:
    """The most steps of ``sampler`` that fit a budget of ``nfe`` network evaluations."""
    spec = get_sampler(sampler)
    steps = spec.steps_for(nfe, options)
    if steps < spec.min_steps:
        need = spec.total_nfe(spec.min_steps, options)
        raise ValueError(
            f"an NFE budget of {nfe} is too small for {sampler!r}: it needs at least "
            f"{need} ({spec.min_steps} step{'s' if spec.min_steps > 1 else ''}, {need} NFE)"
        )
    return steps


def sample(
    model: Callable[..., Tensor] | Denoiser,
    shape_or_noise: Sequence[int] | Tensor,
    *,
    schedule: Schedule | str | None = None,
    prediction: PredictionType | None = None,
    sampler: str = "ddim",
    steps: int = 50,
    spacing: Spacing | None = None,
    cond: Cond | None = None,
    seed: int | Sequence[int] | None = None,
    options: Mapping | None = None,
    sigma_data: float = 0.5,
    learn_sigma: bool = False,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
    net_dtype: NetDtype = "fp32",
    progress: bool = False,
) -> Tensor:
    """Sample images from a model.

    Args:
        model: a :class:`Denoiser` (or a wrapper such as guidance), or ANY callable
            ``model(x_t, timestep[, cond]) -> prediction``
            (then ``schedule`` and ``prediction`` say how to read it; it is fed
            ``schedule.timestep(t)``, the training timestep index for discrete schedules).
        shape_or_noise: (N, C, H, W), or the starting noise itself (unit variance; it is scaled
            by the schedule's prior std).
        sampler: a name from ``pixdiff.samplers.available()``; ``options`` its own keywords
            (e.g. ``{"eta": 0.5}`` for ddim).
        steps: sampler steps; spacing: the time grid (default by schedule, see default_spacing).
        seed: per-sample seeds (an int s gives sample i the seed s + i), so a sample does not
            depend on the batch size; None draws from torch's global generator.
        dtype: the sampler state's dtype (float64 for reference solutions).
        net_dtype: the network's precision: fp32, or bf16 / fp16 by autocast (the sampler
            state stays ``dtype``).

    Returns:
        (N, C, H, W) samples in the data space (images in [-1, 1], unclipped).
    """
    denoiser = _as_denoiser(model, schedule, prediction, sigma_data, learn_sigma)
    run = Sampling(sampler, steps, spacing, options, net_dtype=net_dtype)
    return draw(
        denoiser, shape_or_noise, run, cond=cond, seed=seed, device=device, dtype=dtype,
        progress=progress,
    )  # fmt: skip


def draw(
    denoiser: Denoiser,
    shape_or_noise: Sequence[int] | Tensor,
    sampling: Sampling,
    *,
    cond: Cond | None = None,
    seed: int | Sequence[int] | None = None,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
    progress: bool = False,
) -> Tensor:
    """Samples of a denoiser (or guidance wrapper) as ``sampling`` says, from noise of
    ``shape_or_noise`` scaled to the prior (see :func:`sample` for the arguments)."""
    ts = sampling.grid(denoiser.schedule)
    x, generators = _initial_noise(shape_or_noise, seed, device, dtype)
    x = x * denoiser.schedule.prior_std()
    return sampling(denoiser, x, ts, cond=cond, generators=generators, progress=progress)


@dataclass(frozen=True)
class Sampling:
    """How to sample: a registered sampler, its steps, the time grid (None: by schedule, see
    :func:`default_spacing`) and the sampler's own options (e.g. ``{"eta": 0.5}`` for ddim).

    ``times``, when given, is the grid itself (``steps + 1`` decreasing times ending at 0, e.g.
    a grid tuned for this model) and replaces ``spacing``.

    ``parallel``, when given, runs the sampler's one-step form by Picard iteration (ParaDiGMS,
    :func:`pixdiff.samplers.sample_picard`): the same NFE in fewer sequential network rounds,
    converging to the sequential sample as its tolerance goes to 0.

    ``net_dtype`` is the precision the network runs in (bf16 or fp16 by autocast, see
    :mod:`pixdiff.precision`); the sampler's state keeps the dtype it is drawn in (float32).
    """

    sampler: str = "ddim"
    steps: int = 50
    spacing: Spacing | None = None
    options: Mapping | None = None
    times: tuple[float, ...] | None = None
    parallel: Picard | None = None
    net_dtype: NetDtype = "fp32"

    def __post_init__(self):
        check_net_dtype(self.net_dtype)
        if self.times is not None:
            check_times(self.times, self.steps)
        if self.parallel is not None and get_sampler(self.sampler).step is None:
            one_step = ", ".join(name for name, spec in SAMPLERS.items() if spec.step is not None)
            raise ValueError(
                f"--parallel picard needs a sampler with a one-step form ({one_step}); "
                f"{self.sampler} is multistep"
            )

    def grid(self, schedule: Schedule) -> Tensor:
        """The decreasing grid of ``steps + 1`` times, ending at 0."""
        _check_steps(self.sampler, self.steps)
        if self.times is not None:
            return torch.tensor(self.times, dtype=torch.float64)
        return time_grid(schedule, self.steps, spacing=self.spacing or default_spacing(schedule))

    def __call__(
        self,
        denoiser: Denoiser,
        x: Tensor,
        ts: Tensor,
        *,
        cond: Cond | None = None,
        generators: Sequence[torch.Generator] | None = None,
        progress: bool = False,
    ) -> Tensor:
        """Run the sampler from x at ts[0] over the decreasing grid ``ts``: the whole
        :meth:`grid`, its tail (img2img) or one step of it (inpainting)."""
        _check_steps(self.sampler, len(ts) - 1)
        spec, p = get_sampler(self.sampler), self.parallel
        if self.net_dtype != "fp32":
            denoiser = NetworkPrecision(denoiser, self.net_dtype)
        if p is not None:
            return sample_picard(
                spec.one_step(self.options), denoiser, x, ts, window=p.window,
                tolerance=p.tolerance, stats=p.stats, cond=cond, generator=generators,
                progress=progress,
            )  # fmt: skip
        run = spec.bind(self.options)
        den = self_conditioned(denoiser)  # a run's own previous-estimate state (Picard: its own)
        return run(den, x, ts, cond=cond, generator=generators, progress=progress)


class NetworkPrecision(DenoiserWrapper):
    """Runs the wrapped denoiser (and the guidance in it) under autocast to ``net_dtype``; its
    estimates come back in the sampler state's dtype (:class:`~pixdiff.denoiser.Denoiser`
    casts the network's output), so only the network's own arithmetic is in bf16 or fp16."""

    def __init__(self, denoiser, net_dtype: NetDtype):
        super().__init__(denoiser)
        self.net_dtype = check_net_dtype(net_dtype)

    def forward(self, x_t: Tensor, t, cond: Cond | None = None):
        with autocast(self.net_dtype, x_t.device.type):
            return self.denoiser(x_t, t, cond)


def check_times(times: Sequence[float], steps: int) -> None:
    """Raise unless ``times`` is a grid of ``steps + 1`` strictly decreasing times in [0, 1]
    ending at 0."""
    t = torch.tensor(list(times), dtype=torch.float64)
    if t.dim() != 1 or len(t) != steps + 1:
        raise ValueError(f"a grid of {steps} steps has {steps + 1} times, got {len(t)}")
    if not bool(torch.isfinite(t).all()) or t[0] > 1 or t[-1] != 0 or bool((t[1:] >= t[:-1]).any()):
        raise ValueError(f"a time grid must decrease strictly from <= 1 to 0, got {t.tolist()}")


def _check_steps(sampler: str, steps: int) -> None:
    spec = get_sampler(sampler)
    if steps < spec.min_steps:
        raise ValueError(f"sampler {sampler!r} needs at least {spec.min_steps} steps, got {steps}")


def _as_denoiser(model, schedule, prediction, sigma_data, learn_sigma):
    """A Denoiser (or a wrapper of one, such as guidance, with its ``.schedule``) passes through;
    a raw model is wrapped."""
    if isinstance(getattr(model, "schedule", None), Schedule):
        if schedule is not None or prediction is not None:
            raise ValueError("a Denoiser carries its own schedule and prediction; pass neither")
        return model
    if schedule is None or prediction is None:
        raise ValueError(
            "sampling a raw model needs schedule= and prediction= "
            "(e.g. schedule='linear', prediction='eps')"
        )
    if isinstance(schedule, str):
        schedule = get_schedule(schedule)
    return Denoiser(model, schedule, prediction, sigma_data=sigma_data, learn_sigma=learn_sigma)


def _initial_noise(shape_or_noise, seed, device, dtype) -> tuple[Tensor, list | None]:
    if isinstance(shape_or_noise, Tensor):
        x = shape_or_noise.to(device=device or shape_or_noise.device, dtype=dtype)
        generators = per_sample_generators(seed, x.shape[0]) if seed is not None else None
        return x, generators
    shape = tuple(shape_or_noise)
    if len(shape) < 2 or any(int(n) < 1 for n in shape):
        raise ValueError(f"shape must be (N, C, H, W) with positive sizes, got {shape}")
    generators = per_sample_generators(seed, shape[0]) if seed is not None else None
    return randn(shape, generators, device=device or "cpu", dtype=dtype), generators
