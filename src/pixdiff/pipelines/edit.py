"""Editing with any model and any sampler: img2img (SDEdit) and inpainting (replacement and
RePaint resampling).

Both are the ordinary sampler over (part of) the ordinary time grid, with the input image
entering through the forward process q(x_t | x0) (Ho et al. 2020, Eq. 4); conditioning and
guidance come from :meth:`pixdiff.pipelines.steering.Steering.resolve` as for generation.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from pixdiff.conditioning import Cond
from pixdiff.posterior import transition
from pixdiff.samplers import per_sample_generators, randn
from pixdiff.samplers.common import Generators, randn_like
from pixdiff.sampling import Sampling
from pixdiff.schedules import Schedule, q_sample
from pixdiff.self_conditioning import self_conditioned

DEFAULT_SAMPLING = Sampling()  # 50 DDIM steps on the schedule's default grid


def edit_grid(schedule: Schedule, sampling: Sampling, strength: float) -> Tensor:
    """The tail of the sampling grid at times t <= ``strength``: SDEdit starts at the largest
    grid time not above strength (exactly strength when it is a grid time, as k / steps on
    uniform grids) and runs the grid's remaining steps."""
    if not 0 <= strength <= 1:
        raise ValueError(f"strength must lie in [0, 1] (a time t), got {strength}")
    ts = sampling.grid(schedule)
    return ts[ts <= strength]


def img2img(
    denoiser: nn.Module,
    x0: Tensor,
    *,
    strength: float,
    sampling: Sampling = DEFAULT_SAMPLING,
    cond: Cond | None = None,
    seed: int = 0,
    progress: bool = False,
) -> Tensor:
    """SDEdit (Meng et al. 2022, Sec. 3.2, Alg. 1): noise the input to time t0 = strength,
    x_t0 = alpha(t0) x0 + sigma(t0) z, then denoise with ``sampling`` over the rest of its grid.

    Strength 0 returns x0 exactly; 1 starts from (almost) pure noise and ignores the input.

    Args:
        x0: (N, C, H, W) input images in [-1, 1]; sample i uses seed + i.
        cond: the conditioning of the (possibly guided) ``denoiser``, N rows.
    """
    ts = edit_grid(denoiser.schedule, sampling, strength)
    if len(ts) < 2:
        return x0.clone()
    generators = per_sample_generators(seed, x0.shape[0])
    x = q_sample(denoiser.schedule, x0, ts[0], randn_like(x0, generators))
    return sampling(denoiser, x, ts, cond=cond, generators=generators, progress=progress)


def check_known(known: Tensor, x0: Tensor) -> None:
    """Raise unless ``known`` is a (N or 1, 1, H, W) mask of x0's size with values in [0, 1];
    for clips x0 (N, F, C, H, W), a (N or 1, F, 1, H, W) mask (frames known or not)."""
    shape = (*x0.shape[1:-3], 1, *x0.shape[-2:])  # (1, H, W), or (F, 1, H, W) for clips
    if known.dim() != x0.dim() or tuple(known.shape[1:]) != shape:
        what = "image" if x0.dim() == 4 else "clip"
        raise ValueError(
            f"the mask must be (N, {', '.join(map(str, shape))}) to match the {what}, "
            f"got {tuple(known.shape)}"
        )
    if known.shape[0] not in (1, x0.shape[0]) or bool(((known < 0) | (known > 1)).any()):
        raise ValueError("the mask needs 1 or N rows and values in [0, 1] (1 = keep the input)")


def paste_known(
    schedule: Schedule, x_t: Tensor, x0: Tensor, known: Tensor, t: Tensor, generator: Generators
) -> Tensor:
    """x_t with the known region replaced by a forward-noised input, known * q(x_t | x0) +
    (1 - known) * x_t (Lugmayr et al. 2022, Eq. 8; the replacement method of Song et al. 2021,
    App. I.2)."""
    return known * q_sample(schedule, x0, t, randn_like(x0, generator)) + (1 - known) * x_t


def jump_back(schedule: Schedule, x_s: Tensor, s: Tensor, t: Tensor, generator: Generators):
    """Re-noise x_s to the later time t by the forward process q(x_t | x_s) (RePaint's
    resampling, Lugmayr et al. 2022, Alg. 1 line 10, on any path)."""
    a_ts, var_ts = transition(schedule, s, t)
    return a_ts * x_s + var_ts.clamp_min(0).sqrt() * randn_like(x_s, generator)


def inpaint(
    denoiser: nn.Module,
    x0: Tensor,
    known: Tensor,
    *,
    resample: int = 1,
    sampling: Sampling = DEFAULT_SAMPLING,
    cond: Cond | None = None,
    seed: int = 0,
    progress: bool = False,
) -> Tensor:
    """Fill the unknown region of x0 (RePaint, Lugmayr et al. 2022, Alg. 1, jump length 1).

    Every step t -> s of the sampler is followed by :func:`paste_known` at s; with
    ``resample`` R > 1 the result is jumped back to t by the forward process and the step is
    redone, R times in all (not on the last step, to s = 0), so the generated region
    harmonises with the known one. R = 1 is the plain replacement method. Each step runs as
    its own one-step grid, so multistep samplers (dpmpp-2m, unipc, ...) act as their
    first-order start; NFE is about steps x R.

    Args:
        x0: (N, C, H, W) images in [-1, 1]; their known region is kept. Or clips
            (N, F, C, H, W) (:mod:`pixdiff.pipelines.known_frames`).
        known: (N or 1, 1, H, W) in [0, 1], 1 = keep the input, 0 = generate; for clips
            (N or 1, F, 1, H, W).
        cond: the conditioning of the (possibly guided) ``denoiser``, N rows.
    """
    check_known(known, x0)
    if resample < 1:
        raise ValueError(f"resample must be >= 1 (1 = no resampling), got {resample}")
    schedule = denoiser.schedule
    denoiser = self_conditioned(denoiser)  # one run: each step sees the previous estimate
    ts = sampling.grid(schedule)
    generators = per_sample_generators(seed, x0.shape[0])
    x = randn(x0.shape, generators, device=x0.device) * schedule.prior_std()
    x = paste_known(schedule, x, x0, known, ts[0], generators)
    pairs = list(zip(ts[:-1], ts[1:], strict=True))
    for t, s in tqdm(pairs, desc="inpaint", disable=not progress, leave=False):
        for r in range(resample if s > 0 else 1):
            if r:
                x = jump_back(schedule, x, s, t, generators)
            x = sampling(denoiser, x, torch.stack([t, s]), cond=cond, generators=generators)
            x = paste_known(schedule, x, x0, known, s, generators)
    return x
