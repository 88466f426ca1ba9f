"""Generate images from a trained model: batching and per-sample seeds over the request that a
:class:`pixdiff.pipelines.steering.Steering` resolves to."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import torch
from torch import Tensor, nn

from pixdiff.conditioning import Cond, merge
from pixdiff.denoiser import Denoised
from pixdiff.guidance import DenoiserWrapper
from pixdiff.pipelines.known_frames import draw_known
from pixdiff.pipelines.steering import Steerable, Steering, check_supported_steps
from pixdiff.sampling import Sampling, draw


class Generative(Steerable, Protocol):
    """A model :func:`generate` can sample: a :class:`Steerable` with its image shape."""

    @property
    def image_shape(self) -> tuple[int, int, int]: ...


class TrajectoryRecorder(DenoiserWrapper):
    """Wraps a denoiser and keeps (x_t, predicted x0) of every call, for trajectory GIFs."""

    def __init__(self, denoiser: nn.Module):
        super().__init__(denoiser)
        self.frames: list[tuple[Tensor, Tensor]] = []

    def forward(self, x_t: Tensor, t, cond: Cond | None = None) -> Denoised:
        out = self.denoiser(x_t, t, cond)
        self.frames.append((x_t.detach().cpu(), out.x0.detach().cpu()))
        return out


def generate(
    model: Generative,
    steering: Steering | None = None,
    sampling: Sampling | None = None,
    *,
    n: int,
    seed: int | Sequence[int] = 0,
    batch_size: int = 64,
    device: str | torch.device = "cpu",
    progress: bool = False,
    recorder: TrajectoryRecorder | None = None,
    dtype: torch.dtype = torch.float32,
    extra_cond: Cond | None = None,
) -> Tensor:
    """n samples (N, C, H, W) in [-1, 1] (unclipped) of a model; sample i uses seed + i.

    Args:
        model: a loaded run (:func:`pixdiff.checkpoint.load`), or anything with its
            ``denoiser``, ``image_shape``, ``num_classes``, ``class_names``, ``text_encoder``
            and ``config``.
        steering: classes or prompts, negatives, guidance scale and options (default: none,
            unguided samples); :meth:`Steering.resolve` decides how to guide.
        sampling: sampler, steps, time grid and the sampler's options (default: 50 DDIM
            steps on the schedule's default grid).
        seed: sample i uses seed + i; a sequence gives each of the n samples its own seed
            (a server batching several requests into one pass).
        recorder: if given, wraps the denoiser to record the trajectory of the first batch.
        dtype: the sampler state's dtype (float64 for reference solutions).
        extra_cond: conditioning every sample also gets, n rows (a super-resolution model's
            low-res image, see :func:`pixdiff.pipelines.cascade.low_res_input`); CFG keeps it in
            both branches.
    """
    if n < 1:
        raise ValueError(f"number of samples must be >= 1, got {n}")
    steering, sampling = steering or Steering(), sampling or Sampling()
    check_supported_steps(model, sampling.steps)
    seeds = None if isinstance(seed, int) else [int(s) for s in seed]
    if seeds is not None and len(seeds) != n:
        raise ValueError(f"got {len(seeds)} seeds for {n} samples")
    resolved = steering.resolve(model, n)
    cond = merge(resolved.cond, extra_cond)
    out = []
    for start in range(0, n, batch_size):
        stop = min(n, start + batch_size)
        part = cond.index(slice(start, stop)).to(device) if cond is not None else None
        use = resolved.denoiser
        if recorder is not None and start == 0:
            recorder.denoiser = use
            use = recorder
        shape, first = (stop - start, *model.image_shape), seed + start if seeds is None else None
        if steering.known is not None:  # a clip's known frames (pipelines.known_frames)
            if seeds is not None:
                raise ValueError("known frames take one seed (sample i uses seed + i)")
            x = draw_known(
                use, steering.known, shape, sampling, cond=part, seed=first, device=device,
                dtype=dtype, progress=progress,
            )  # fmt: skip
        else:
            x = draw(
                use, shape, sampling, cond=part, seed=first if seeds is None else
                seeds[start:stop], device=device, dtype=dtype, progress=progress,
            )  # fmt: skip
        out.append(x.cpu())
    return torch.cat(out)


def class_grid(
    model: Generative,
    *,
    prompts: Sequence[str] | None = None,
    guidance: float | None = None,
    per_row: int = 8,
    max_rows: int = 10,
    sampling: Sampling | None = None,
    seed: int = 0,
    batch_size: int = 100,
    device: str | torch.device = "cpu",
    progress: bool = False,
) -> Tensor:
    """Samples for a grid of ``per_row`` columns: one row per class (the first ``max_rows``
    classes) or per prompt of a text-conditioned model (the first ``max_rows``), guided with
    ``guidance`` (None: the run's scale), or a per_row x per_row grid from an unconditional
    model."""
    if prompts:
        prompts = [p for p in prompts[:max_rows] for _ in range(per_row)]
    k = model.num_classes
    rows = len(prompts) // per_row if prompts else min(k, max_rows) or per_row
    labels = torch.arange(rows).repeat_interleave(per_row) if k else None
    steering = Steering(classes=labels, prompts=prompts or None, guidance=guidance)
    return generate(
        model, steering, sampling, n=rows * per_row, seed=seed, batch_size=batch_size,
        device=device, progress=progress,
    )  # fmt: skip
