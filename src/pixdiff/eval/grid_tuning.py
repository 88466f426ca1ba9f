"""Tune a model's time grids: warm-up noises and conditioning, the teacher, the dynamic
programme and the optional refinement, for one sampler and budget at a time (the search is
:mod:`pixdiff.eval.grid_search`, the refinement :mod:`pixdiff.eval.grid_refine`).
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

import torch
from torch import Tensor

from pixdiff.checkpoint import pixdiff_version
from pixdiff.conditioning import Cond
from pixdiff.data import load_dataset
from pixdiff.eval.grid_refine import refine_grid
from pixdiff.eval.grid_search import (
    TEACHER,
    Trajectory,
    default_last_step,
    endpoint_rmse,
    fixed_rmse,
    step_costs,
    teacher_trajectory,
    tuned_times,
)
from pixdiff.pipelines.generate import Generative
from pixdiff.pipelines.steering import Steering
from pixdiff.samplers import per_sample_generators, randn
from pixdiff.sampling import steps_for_nfe
from pixdiff.timesteps import time_grid
from pixdiff.tuned_grids import TunedGrid


@dataclass(frozen=True)
class Warmup:
    """What a grid is tuned on: the (guided) denoiser, the noises x_T (N, C, H, W) float64
    scaled to the prior, their conditioning, and a record of both for ``tuned_on``."""

    denoiser: torch.nn.Module
    x_T: Tensor
    cond: Cond | None
    about: dict


def warmup(
    model: Generative, *, n: int, seed: int, guidance: float | None = None, device="cpu"
) -> Warmup:
    """n warm-up noises (seeds seed .. seed + n - 1) and their conditioning: class-balanced
    labels of a class-conditional model, captions of a text model's training data (the empty
    prompt where that data cannot be read), at ``guidance`` (None: the run's scale)."""
    steering, conditioning = _warmup_steering(model, n, guidance)
    resolved = steering.resolve(model, n)
    gens = per_sample_generators(seed, n)
    x_T = randn((n, *model.image_shape), gens, device=device, dtype=torch.float64)
    x_T = x_T * model.denoiser.schedule.prior_std()
    cond = resolved.cond.to(device) if resolved.cond is not None else None
    about = {"n": n, "seed": seed, "conditioning": conditioning, "guidance": resolved.scale}
    return Warmup(resolved.denoiser, x_T, cond, about)


def _warmup_steering(model: Generative, n: int, guidance: float | None) -> tuple[Steering, str]:
    if model.text_encoder is not None:
        prompts = run_captions(model, n)
        if prompts:
            kinds = len(set(prompts))
            return Steering(prompts=prompts, guidance=guidance), f"{kinds} captions of its data"
        return Steering(), "the empty prompt (the run's captions could not be read)"
    if model.num_classes:
        labels = torch.arange(n) % model.num_classes
        return Steering(classes=labels, guidance=guidance), "class-balanced labels"
    return Steering(guidance=guidance), "unconditional"


def run_captions(model: Generative, n: int) -> list[str]:
    """n captions spread evenly over the distinct captions of the run's training data; empty
    when the data cannot be loaded or has none."""
    data_config = model.config["train"]["data"]
    try:
        data = load_dataset(data_config["name"], image_size=model.image_shape[-1], split="train")
    except (OSError, ValueError):
        return []
    captions = list(dict.fromkeys(c for c in (data.captions or []) if c))
    if not captions:
        return []
    pick = torch.linspace(0, len(captions) - 1, n).round().long()
    return [captions[i] for i in pick]


def tune(
    denoiser,
    trajectory: Trajectory,
    costs: Tensor,
    sampler: str,
    nfe: int,
    *,
    refine: int = 0,
    last_step: str = "free",
    about: dict | None = None,
    progress: bool = False,
) -> TunedGrid:
    """The tuned grid of ``sampler`` at ``nfe`` evaluations: the cheapest path of the dynamic
    programme or, where one does better on the warm-up noises, a fixed grid; then ``refine``
    descent iterations (:func:`pixdiff.eval.grid_refine.refine_grid`). ``last_step``: see
    :func:`pixdiff.eval.grid_search.tuned_times`; "auto" picks the sampler's default
    (:func:`pixdiff.eval.grid_search.default_last_step`). ``about`` (the warm-up's record) goes into
    ``tuned_on``."""
    steps = steps_for_nfe(sampler, nfe)
    if last_step == "auto":  # the refinement moves every interior time: free then
        last_step = "free" if refine else default_last_step(sampler)
    if refine and last_step != "free":
        raise ValueError("refinement (--refine) moves every interior time; use it with "
                         "--last-step free")  # fmt: skip
    times = tuned_times(trajectory, costs, steps, last_step=last_step)
    rmse = endpoint_rmse(denoiser, trajectory, sampler, times)
    fixed = fixed_rmse(denoiser, trajectory, sampler, steps, last_step=last_step)
    start = min(fixed, key=fixed.get, default=None)
    if start is not None and fixed[start] < rmse:
        times = tuple(time_grid(denoiser.schedule, steps, spacing=start).tolist())
        rmse = fixed[start]
    else:
        start = "dynamic programming"
    if refine:
        times, rmse = refine_grid(
            denoiser, trajectory, sampler, times, iterations=refine, progress=progress
        )
    on = {**(about or {}), "start": start, "refine_iterations": refine, "last_step": last_step}
    return TunedGrid(sampler, nfe, times, rmse, fixed, {**on, "pixdiff": pixdiff_version()})


def tune_all(
    warm: Warmup,
    samplers: Sequence[str],
    nfes: Sequence[int],
    *,
    candidates: int = 100,
    reference_steps: int = 200,
    refine: int = 0,
    last_step: str = "free",
    sigma_data: float = 0.5,
    on_grid: Callable[[TunedGrid], None] | None = None,
    progress: bool = False,
) -> list[TunedGrid]:
    """Tuned grids of each sampler at each budget of ``nfes``, all from one teacher solve of
    about ``reference_steps`` steps over ``candidates`` candidate times; ``on_grid`` receives
    each grid as it is found (to store it at once)."""
    steps = [steps_for_nfe(s, nfe) for s in samplers for nfe in nfes]  # too small: fail first
    if max(steps) >= candidates:
        raise ValueError(f"{max(steps)} steps need more than {candidates} candidate times")
    start = time.perf_counter()
    substeps = max(1, round(reference_steps / candidates))
    trajectory = teacher_trajectory(
        warm.denoiser, warm.x_T, candidates=candidates, substeps=substeps, cond=warm.cond,
        progress=progress,
    )  # fmt: skip
    costs = step_costs(trajectory, warm.denoiser.schedule, sigma_data=sigma_data)
    about = {
        **warm.about,
        "teacher": TEACHER,
        "reference_steps": substeps * (len(trajectory.times) - 2) + 1,
        "candidates": candidates,
        "teacher_seconds": round(time.perf_counter() - start, 1),
    }
    grids = []
    for sampler, nfe in itertools.product(samplers, nfes):
        begun = time.perf_counter()
        grid = tune(
            warm.denoiser, trajectory, costs, sampler, nfe, refine=refine,
            last_step=last_step, about=about, progress=progress,
        )  # fmt: skip
        seconds = round(time.perf_counter() - begun, 1)
        grids.append(replace(grid, tuned_on={**grid.tuned_on, "seconds": seconds}))
        if on_grid is not None:
            on_grid(grids[-1])
    return grids
