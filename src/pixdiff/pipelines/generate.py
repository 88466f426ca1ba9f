"""Generate images from a trained model: batching, per-sample seeds, classes and guidance."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import Tensor, nn

from pixdiff.conditioning import Cond
from pixdiff.denoiser import Denoised
from pixdiff.guidance import DenoiserWrapper, GuidanceOptions, guide
from pixdiff.sampling import sample


class TrajectoryRecorder(DenoiserWrapper):
    """Wraps a denoiser and keeps (x_t, predicted x0) of every call, for trajectory GIFs."""

    def __init__(self, denoiser: nn.Module):
        super().__init__(denoiser)
        self.frames: list[tuple[Tensor, Tensor]] = []

    def forward(self, x_t: Tensor, t, cond: Cond | None = None) -> Denoised:
        out = self.denoiser(x_t, t, cond)
        self.frames.append((x_t.detach().cpu(), out.x0.detach().cpu()))
        return out


def class_cond(
    labels: Tensor | None,
    n: int,
    num_classes: int,
    guidance: float,
    *,
    options: GuidanceOptions | None = None,
) -> Cond | None:
    """The Cond for n samples, validating the request against the model (``num_classes`` 0:
    unconditional) and the guidance ``options`` (a classifier brings its own classes)."""
    options = options or GuidanceOptions()
    classifier = options.classifier
    if classifier is not None and labels is None:
        raise ValueError("classifier guidance steers towards a class: give the classes (--class)")
    if num_classes == 0:
        _check_unconditional(guidance, options)
        if labels is None:
            return None
        if classifier is None:
            raise ValueError("this model is unconditional: it cannot be asked for a class")
        return Cond(label=_label_ids(labels, n, classifier.num_classes))
    if classifier is not None and classifier.num_classes != num_classes:
        raise ValueError(
            f"the classifier knows {classifier.num_classes} classes, the model {num_classes}"
        )
    if options.negative_label is not None:
        _label_ids(torch.tensor([options.negative_label]), 1, num_classes, what="negative class")
    if labels is None:  # unconditional samples from a conditional model: the null label
        return Cond(label=torch.full((n,), num_classes, dtype=torch.long))
    return Cond(label=_label_ids(labels, n, num_classes))


def _check_unconditional(guidance: float, options: GuidanceOptions) -> None:
    """Raise for classifier-free guidance asked of an unconditional model."""
    if guidance != 1.0:
        raise ValueError(
            f"guidance {guidance} needs a class-conditional model; this one is "
            "unconditional (use --guidance 1)"
        )
    if options.cfg_options():
        raise ValueError(
            f"{', '.join(options.cfg_options())} need(s) a class-conditional model; "
            "this one is unconditional"
        )


def _label_ids(labels, n: int, num_classes: int, *, what: str = "class") -> Tensor:
    """``labels`` as (n,) int64, each in [0, num_classes)."""
    labels = torch.as_tensor(labels, dtype=torch.long)
    if labels.shape != (n,):
        raise ValueError(f"need {n} labels, got shape {tuple(labels.shape)}")
    if bool(((labels < 0) | (labels >= num_classes)).any()):
        raise ValueError(f"{what} ids must be in [0, {num_classes - 1}], got {labels.tolist()}")
    return labels


def generate(
    denoiser: nn.Module,
    image_shape: Sequence[int],
    *,
    n: int,
    labels: Tensor | None = None,
    num_classes: int = 0,
    guidance: float = 1.0,
    sampler: str = "ddim",
    steps: int = 50,
    seed: int = 0,
    batch_size: int = 64,
    options: Mapping | None = None,
    device: str | torch.device = "cpu",
    progress: bool = False,
    recorder: TrajectoryRecorder | None = None,
    dtype: torch.dtype = torch.float32,
    spacing: str | None = None,
    guidance_options: GuidanceOptions | None = None,
) -> Tensor:
    """n samples (N, C, H, W) in [-1, 1] (unclipped); sample i uses seed + i.

    Args:
        labels: (n,) class ids, or None for unconditional samples (the null label).
        guidance: classifier-free guidance scale w (1 = plain conditional); applied when
            labels or a negative class are given.
        guidance_options: negative class, guidance interval, CFG-rescale, thresholding and
            classifier guidance (see :class:`pixdiff.guidance.GuidanceOptions`).
        recorder: if given, wraps the denoiser to record the trajectory of the first batch.
        dtype: the sampler state's dtype (float64 for reference solutions).
        spacing: the time grid (default: by schedule, see pixdiff.sampling.default_spacing).
    """
    if n < 1:
        raise ValueError(f"number of samples must be >= 1, got {n}")
    guiding = guidance_options or GuidanceOptions()
    cond = class_cond(labels, n, num_classes, guidance, options=guiding)
    cfg = labels is not None or guiding.negative_label is not None
    den = guide(denoiser, scale=guidance, num_classes=num_classes, options=guiding, cfg=cfg)
    out = []
    for start in range(0, n, batch_size):
        stop = min(n, start + batch_size)
        part = cond.index(slice(start, stop)).to(device) if cond is not None else None
        use = den
        if recorder is not None and start == 0:
            recorder.denoiser = den
            use = recorder
        x = sample(
            use,
            (stop - start, *image_shape),
            sampler=sampler,
            steps=steps,
            cond=part,
            seed=seed + start,
            options=options,
            device=device,
            progress=progress,
            dtype=dtype,
            spacing=spacing,
        )
        out.append(x.cpu())
    return torch.cat(out)


def class_grid(
    denoiser: nn.Module,
    image_shape: Sequence[int],
    *,
    num_classes: int,
    guidance: float,
    per_row: int = 8,
    max_rows: int = 10,
    steps: int = 50,
    seed: int = 0,
    batch_size: int = 100,
    device: str | torch.device = "cpu",
    progress: bool = False,
) -> Tensor:
    """Samples for a grid of ``per_row`` columns: one row per class (the first ``max_rows``
    classes, guided), or a per_row x per_row grid from an unconditional model."""
    rows = min(num_classes, max_rows) if num_classes else per_row
    labels = torch.arange(rows).repeat_interleave(per_row) if num_classes else None
    return generate(
        denoiser,
        image_shape,
        n=rows * per_row,
        labels=labels,
        num_classes=num_classes,
        guidance=guidance if num_classes else 1.0,
        steps=steps,
        seed=seed,
        batch_size=batch_size,
        device=device,
        progress=progress,
    )
