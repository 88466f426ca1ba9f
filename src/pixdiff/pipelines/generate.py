"""Generate images from a trained model: batching, per-sample seeds, classes and guidance."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import Tensor, nn

from pixdiff.conditioning import Cond
from pixdiff.denoiser import Denoised
from pixdiff.guidance import ClassifierFreeGuidance, null_label_cond
from pixdiff.sampling import sample


class TrajectoryRecorder(nn.Module):
    """Wraps a denoiser and keeps (x_t, predicted x0) of every call, for trajectory GIFs."""

    def __init__(self, denoiser: nn.Module):
        super().__init__()
        self.denoiser = denoiser
        self.frames: list[tuple[Tensor, Tensor]] = []

    @property
    def schedule(self):
        return self.denoiser.schedule

    def coefs(self, t, x):
        return self.denoiser.coefs(t, x)

    def forward(self, x_t: Tensor, t, cond: Cond | None = None) -> Denoised:
        out = self.denoiser(x_t, t, cond)
        self.frames.append((x_t.detach().cpu(), out.x0.detach().cpu()))
        return out


def class_cond(labels: Tensor | None, n: int, num_classes: int, guidance: float):
    """The Cond for n samples and the guidance wrapper factory, validating the request."""
    if num_classes == 0:
        if labels is not None:
            raise ValueError("this model is unconditional: it cannot be asked for a class")
        if guidance != 1.0:
            raise ValueError(
                f"guidance {guidance} needs a class-conditional model; this one is "
                "unconditional (use --guidance 1)"
            )
        return None
    if labels is None:  # unconditional samples from a conditional model: the null label
        return Cond(label=torch.full((n,), num_classes, dtype=torch.long))
    labels = torch.as_tensor(labels, dtype=torch.long)
    if labels.shape != (n,):
        raise ValueError(f"need {n} labels, got shape {tuple(labels.shape)}")
    if bool(((labels < 0) | (labels >= num_classes)).any()):
        raise ValueError(f"class ids must be in [0, {num_classes - 1}], got {labels.tolist()}")
    return Cond(label=labels)


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
) -> Tensor:
    """n samples (N, C, H, W) in [-1, 1] (unclipped); sample i uses seed + i.

    Args:
        labels: (n,) class ids, or None for unconditional samples (the null label).
        guidance: classifier-free guidance scale w (1 = plain conditional).
        recorder: if given, wraps the denoiser to record the trajectory of the first batch.
        dtype: the sampler state's dtype (float64 for reference solutions).
        spacing: the time grid (default: by schedule, see pixdiff.sampling.default_spacing).
    """
    if n < 1:
        raise ValueError(f"number of samples must be >= 1, got {n}")
    cond = class_cond(labels, n, num_classes, guidance)
    den = denoiser
    if cond is not None and labels is not None and guidance != 1.0:
        den = ClassifierFreeGuidance(denoiser, scale=guidance, uncond=null_label_cond(num_classes))
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
