"""Super-resolution and cascades: a base model, then super-resolution stages (CDM, Ho et al.
2022; Imagen, Saharia et al. 2022, Sec. 2.4).

A super-resolution stage is the ordinary pipeline (:func:`generate`) plus conditioning: the
previous stage's images, clipped to [-1, 1] and noised to the stage's augmentation level
(:mod:`pixdiff.low_res`), as ``cond.low_res``. Classes and prompts pass to every stage
conditioned on them; each stage has its own sampler, steps, guidance and augmentation level.
Upscaling an image is a cascade of one super-resolution stage started from it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from pixdiff.checkpoint import LoadedModel
from pixdiff.conditioning import Cond
from pixdiff.config import SRConfig
from pixdiff.low_res import sampling_cond
from pixdiff.pipelines.generate import generate
from pixdiff.pipelines.steering import Steering
from pixdiff.sampling import Sampling
from pixdiff.schedule_registry import schedule_from_dict

# Stage k (0-based) seeds sample i with seed + k * STAGE_SEED_STRIDE + i, so no two stages share
# a noise stream (nor with the augmentation noise, offset by 2**32) for seeds below 2**32.
STAGE_SEED_STRIDE = 2**33


def low_res_input(
    net_config, low_res: Tensor, *, sr: SRConfig | None, aug_level: float | None, seed: int
) -> Cond:
    """The augmented low-res Cond of a super-resolution net for ``low_res`` (N, C, h, w) in
    [-1, 1], at ``aug_level`` (None: ``sr.aug_level``); raises for a non-SR model or a wrong
    input size."""
    if sr is None:
        raise ValueError(
            "this model is not a super-resolution model (it was trained without --sr-from)"
        )
    size, channels = sr.low_res_size, net_config.low_res_channels
    if low_res.dim() != 4 or tuple(low_res.shape[1:]) != (channels, size, size):
        raise ValueError(
            f"this super-resolution model upsamples {size}x{size} images with {channels} "
            f"channel(s) to {net_config.image_size}x{net_config.image_size}, got low-res input "
            f"of shape {tuple(low_res.shape)}"
        )
    level = sr.aug_level if aug_level is None else aug_level
    return sampling_cond(low_res, level, schedule_from_dict(sr.aug_schedule), seed=seed)


@dataclass(frozen=True)
class Stage:
    """One stage of a cascade: a loaded run and how to sample it.

    Attributes:
        sampling: sampler, steps, time grid and the sampler's own options.
        guidance: this stage's CFG scale where a class or prompt steers it (None: the
            request's, else the run's ``sample.guidance``); a stage nothing steers samples
            unguided (see :meth:`Steering.for_model`).
        aug_level: super-resolution stages' augmentation time; None: the run's ``sr.aug_level``.
    """

    model: LoadedModel
    sampling: Sampling = Sampling()
    guidance: float | None = None
    aug_level: float | None = None


def check_cascade(stages: Sequence[Stage], low_res: Tensor | None = None) -> None:
    """Raise a one-line ValueError unless the stages chain: a base model first (or, from a
    ``low_res`` input, a super-resolution model), then super-resolution models whose low-res
    size and channels are what the previous stage makes."""
    if not stages:
        raise ValueError("a cascade needs at least one stage")
    made = None if low_res is None else tuple(low_res.shape[1:])
    maker = "the low-res input"
    for k, stage in enumerate(stages):
        m, name = stage.model, f"stage {k + 1} ({stage.model.path})"
        if made is None and m.sr is not None:
            raise ValueError(
                f"{name} is a super-resolution model ({m.sr.low_res_size} -> "
                f"{m.image_shape[-1]}); a cascade starts with a base model"
            )
        if made is not None and m.sr is None:
            raise ValueError(
                f"{name} is not a super-resolution model (trained without --sr-from); every "
                "stage that takes the previous one's images must be one"
            )
        if made is not None and m.sr.low_res_size != made[-1]:
            raise ValueError(
                f"{name} upsamples {m.sr.low_res_size}x{m.sr.low_res_size} images, but {maker} "
                f"makes {made[-1]}x{made[-1]} ones"
            )
        if made is not None and m.net.config.low_res_channels != made[0]:
            raise ValueError(
                f"{name} takes {m.net.config.low_res_channels}-channel images, but {maker} "
                f"makes {made[0]}-channel ones"
            )
        made, maker = m.image_shape, name


def cascade(
    stages: Sequence[Stage],
    steering: Steering | None = None,
    *,
    n: int | None = None,
    low_res: Tensor | None = None,
    seed: int = 0,
    batch_size: int = 64,
    device: str | torch.device = "cpu",
    progress: bool = False,
) -> list[Tensor]:
    """Sample a cascade: n images from the base stage, each later stage super-resolving the
    previous one's output (clipped to [-1, 1]). Returns every stage's output, (n, C, H_k, W_k),
    unclipped; the last is the cascade's result.

    Upscaling is a cascade from ``low_res`` (N, C, h, w) in [-1, 1] instead of a base stage:
    ``cascade([Stage(sr_model)], low_res=images)[-1]``.

    Args:
        steering: classes, prompts and guidance for the whole cascade; each stage takes the
            part it is conditioned on (:meth:`Steering.for_model`).
        seed: stage k seeds image i with seed + k * STAGE_SEED_STRIDE + i.
    """
    steering = steering or Steering()
    check_cascade(stages, low_res)
    stage_guided = any(s.guidance not in (None, 1.0) for s in stages)
    steering.check_consumed([s.model for s in stages], stage_guided=stage_guided)
    if low_res is None and n is None:
        raise ValueError("a cascade from a base model needs the number of images n")
    outputs: list[Tensor] = []
    x = low_res
    for k, stage in enumerate(stages):
        m, stage_seed = stage.model, seed + k * STAGE_SEED_STRIDE
        extra = None
        if x is not None:
            extra = low_res_input(
                m.net.config, x.clamp(-1, 1), sr=m.sr, aug_level=stage.aug_level, seed=stage_seed
            )
        try:
            x = generate(
                m, steering.for_model(m, guidance=stage.guidance), stage.sampling,
                n=n if x is None else x.shape[0], seed=stage_seed, extra_cond=extra,
                batch_size=batch_size, device=device, progress=progress,
            )  # fmt: skip
        except ValueError as e:
            raise ValueError(f"stage {k + 1} ({m.path}): {e}") from e
        outputs.append(x)
    return outputs
