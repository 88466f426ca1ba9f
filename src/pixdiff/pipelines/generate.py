"""Generate images from a trained model: batching, per-sample seeds, classes or prompts, and
guidance."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace

import torch
from torch import Tensor, nn

from pixdiff.conditioning import Cond, merge
from pixdiff.denoiser import Denoised
from pixdiff.guidance import DenoiserWrapper, GuidanceOptions, guide
from pixdiff.nets.text import PromptEncoder, check_prompts, text_encoder_of
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


def prompt_cond(
    encoder: PromptEncoder,
    prompts: str | Sequence[str] | None,
    n: int,
    *,
    negative_prompt: str | None = None,
) -> tuple[Cond, Callable[[Cond], Cond]]:
    """The Cond of n prompts and CFG's second branch, for a text-conditioned model.

    The second branch is the empty prompt the model was trained on when its prompt was dropped
    (GLIDE, Nichol et al. 2021), or ``negative_prompt``. Prompts and that branch are encoded
    once, in one padded batch, so their contexts have the same length.

    Args:
        prompts: one string for every sample, n strings, or None (the empty prompt).
    """
    if prompts is None or isinstance(prompts, str):
        prompts = [prompts or ""] * n
    prompts = check_prompts(prompts)
    if len(prompts) != n:
        raise ValueError(f"need {n} prompts (or one string for all), got {len(prompts)}")
    with torch.no_grad():
        both = encoder.encode([*prompts, negative_prompt or ""])
    other = both.index(slice(n, n + 1))

    def uncond(cond: Cond) -> Cond:  # keeps fields CFG does not steer by (a low-res image)
        rows = cond.context.shape[0]
        prompt = other.map(lambda v: v.to(cond.context.device).expand(rows, *v.shape[1:]))
        return replace(cond, **{name: getattr(prompt, name) for name in prompt.present()})

    return both.index(slice(0, n)), uncond


def _check_no_prompts(prompts, options: GuidanceOptions) -> None:
    """Raise for prompts asked of a model that is not text-conditioned."""
    if prompts is not None or options.negative_prompt is not None:
        raise ValueError(
            "prompts (--prompt, --negative-prompt) need a text-conditioned model, trained on "
            "captioned data; this one is not (use --class for a class-conditional model)"
        )


def _check_no_classes(labels: Tensor | None, options: GuidanceOptions) -> None:
    """Raise for classes (or a classifier) asked of a text-conditioned model."""
    if labels is not None or options.negative_label is not None:
        raise ValueError(
            "this model is text-conditioned: give prompts (--prompt, --negative-prompt), "
            "not classes (--class, --negative-class)"
        )
    if options.classifier is not None:
        raise ValueError("classifier guidance needs class labels; this model is text-conditioned")


def guided_cond(
    denoiser: nn.Module,
    n: int,
    *,
    labels: Tensor | None,
    prompts: str | Sequence[str] | None,
    num_classes: int,
    guidance: float,
    options: GuidanceOptions,
) -> tuple[Cond | None, nn.Module]:
    """The Cond of n samples and the guided denoiser, from classes or, for a text-conditioned
    model, prompts. CFG applies when there is something to steer by or away from."""
    encoder = text_encoder_of(denoiser)
    if encoder is None:
        _check_no_prompts(prompts, options)
        cond = class_cond(labels, n, num_classes, guidance, options=options)
        cfg, uncond = labels is not None or options.negative_label is not None, None
    else:
        _check_no_classes(labels, options)
        cond, uncond = prompt_cond(encoder, prompts, n, negative_prompt=options.negative_prompt)
        cfg = prompts is not None or options.negative_prompt is not None
    den = guide(
        denoiser, scale=guidance, num_classes=num_classes, options=options, cfg=cfg, uncond=uncond
    )
    return cond, den


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
    prompts: str | Sequence[str] | None = None,
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
    extra_cond: Cond | None = None,
) -> Tensor:
    """n samples (N, C, H, W) in [-1, 1] (unclipped); sample i uses seed + i.

    Args:
        labels: (n,) class ids, or None for unconditional samples (the null label).
        prompts: for a text-conditioned model (its encoder is found on ``denoiser.net``): one
            string for all samples or n strings; None samples the empty prompt.
        guidance: classifier-free guidance scale w (1 = plain conditional); applied when
            labels, prompts, a negative class or a negative prompt are given.
        guidance_options: negative class or prompt, guidance interval, CFG-rescale,
            thresholding and classifier guidance (see :class:`pixdiff.guidance.GuidanceOptions`).
        recorder: if given, wraps the denoiser to record the trajectory of the first batch.
        dtype: the sampler state's dtype (float64 for reference solutions).
        spacing: the time grid (default: by schedule, see pixdiff.sampling.default_spacing).
        extra_cond: conditioning every sample also gets, n rows (a super-resolution model's
            low-res image, see :func:`pixdiff.pipelines.cascade.low_res_input`); CFG keeps it in
            both branches.
    """
    if n < 1:
        raise ValueError(f"number of samples must be >= 1, got {n}")
    cond, den = guided_cond(
        denoiser, n, labels=labels, prompts=prompts, num_classes=num_classes, guidance=guidance,
        options=guidance_options or GuidanceOptions(),
    )  # fmt: skip
    cond = merge(cond, extra_cond)
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
    prompts: Sequence[str] | None = None,
    per_row: int = 8,
    max_rows: int = 10,
    steps: int = 50,
    seed: int = 0,
    batch_size: int = 100,
    device: str | torch.device = "cpu",
    progress: bool = False,
) -> Tensor:
    """Samples for a grid of ``per_row`` columns: one row per class (the first ``max_rows``
    classes, guided) or per prompt of a text-conditioned model (the first ``max_rows``,
    guided), or a per_row x per_row grid from an unconditional model."""
    if prompts:
        prompts = [p for p in prompts[:max_rows] for _ in range(per_row)]
    rows = len(prompts) // per_row if prompts else min(num_classes, max_rows) or per_row
    labels = torch.arange(rows).repeat_interleave(per_row) if num_classes else None
    return generate(
        denoiser,
        image_shape,
        n=rows * per_row,
        labels=labels,
        prompts=prompts or None,
        num_classes=num_classes,
        guidance=guidance if num_classes or prompts else 1.0,
        steps=steps,
        seed=seed,
        batch_size=batch_size,
        device=device,
        progress=progress,
    )
