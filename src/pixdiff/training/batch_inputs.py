"""The network inputs of a training batch: what a run is conditioned on, each batch's clean
images x0 and its Cond.

The rule: with ``data.conditional`` (the default) a model conditions on what its data has.
Captions (the emoji set, a folder's ``metadata.jsonl`` ``text``) make it text-conditioned, and
labels are then unused (``text.enabled=false`` ignores the captions instead); otherwise labels
make it class-conditional; otherwise it is unconditional. Conditions are dropped for
classifier-free guidance (Ho & Salimans 2022): labels to the null label, prompts to the empty
prompt. A super-resolution run (``sr.low_res_size``) also conditions on the low-res image, and
a run with ``control.kind`` on its control map, concatenated to x_t, itself dropped to the null
map (zeros) with its own probability ``control.dropout`` (InstructPix2Pix, Brooks et al. 2023,
Sec. 3.3).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from pixdiff.conditioning import Cond, merge
from pixdiff.config import SRConfig, TrainConfig
from pixdiff.data import Batch, ImageSet
from pixdiff.low_res import aug_levels, downsample, low_res_cond, random_crop
from pixdiff.nets.text import TextConditionedNet
from pixdiff.schedule_registry import schedule_from_dict
from pixdiff.training.losses import drop_labels, drop_prompts, dropped
from pixdiff.training.video_run import clip_cond


def uses_text(cfg: TrainConfig, data: ImageSet) -> bool:
    """Whether the run is text-conditioned; a text encoder asked for without captions is an
    error."""
    text = cfg.data.conditional and cfg.text.enabled and data.captions is not None
    if cfg.text.encoder != "builtin" and not text:
        why = "has no captions" if data.captions is None else "is used with conditioning off"
        raise ValueError(
            f"text.encoder={cfg.text.encoder!r} needs captioned data (metadata.jsonl 'text'), "
            f"data.conditional and text.enabled; {data.name!r} {why}"
        )
    return text


def cond_fields(cfg: TrainConfig, data: ImageSet) -> dict[str, int]:
    """The network config fields the conditioning fixes: num_classes, context_dim, pooled_dim,
    and low_res_channels (the image's channels for a super-resolution run, ``sr.low_res_size``)."""
    low_res = {"low_res_channels": data.images.shape[1] if cfg.sr.low_res_size else 0}
    if cfg.control.enabled:
        low_res["control_channels"] = control_channels(cfg, data)
    if uses_text(cfg, data):
        text = {"num_classes": 0, "context_dim": cfg.text.width, "pooled_dim": cfg.text.width}
        return {**text, **low_res}
    use_labels = cfg.data.conditional and data.labels is not None
    return {"num_classes": data.num_classes if use_labels else 0, **low_res}


def batch_inputs(
    cfg: TrainConfig, model: nn.Module, batch: Batch, generator: torch.Generator, device
) -> tuple[Tensor, Cond | None]:
    """The batch's clean images x0 and Cond: the class or text condition (dropped for CFG)
    and, for a super-resolution run, the augmented low-res image (never dropped). With
    ``sr.crop_size`` x0 is a random crop of each image, and the low-res image its match."""
    cond = merge(
        _steering_cond(cfg, model, batch, generator, device), control_cond(cfg, batch, generator)
    )
    cond = merge(cond, clip_cond(cfg, batch, generator))  # clips: joint training, known frames
    if not cfg.sr.low_res_size:
        return batch.images, cond
    images, size = batch.images, cfg.sr.low_res_size
    if cfg.sr.crop_size:
        factor = cfg.data.image_size // size
        images = random_crop(images, cfg.sr.crop_size, factor, generator)
        size = cfg.sr.crop_size // factor
    return images, merge(cond, training_cond(images, cfg.sr, generator, size=size))


def training_cond(
    images: Tensor, sr: SRConfig, generator: torch.Generator, *, size: int | None = None
) -> Cond:
    """A training batch's low-res Cond: ``images`` (N, C, H, W) area-downsampled to ``size``
    (default ``sr.low_res_size``; a crop passes its own) and augmented at times uniform in
    [0, ``sr.aug_max``]."""
    low_res = downsample(images, size or sr.low_res_size)
    levels = aug_levels(images.shape[0], sr.aug_max, generator)
    noise = torch.randn(low_res.shape, generator=generator)
    return low_res_cond(low_res, levels, schedule_from_dict(sr.aug_schedule), noise)


def _steering_cond(
    cfg: TrainConfig, model: nn.Module, batch: Batch, generator: torch.Generator, device
) -> Cond | None:
    """Labels or encoded prompts, dropped for CFG; text is encoded here, with gradients, so the
    builtin encoder trains with the denoiser."""
    if isinstance(model, TextConditionedNet):
        prompts = drop_prompts(batch.captions, cfg.text.prompt_dropout, generator)
        return model.encode(prompts, warn=False)  # train() warned once about long captions
    num_classes = model.config.num_classes
    if not num_classes:
        return None
    label = drop_labels(batch.labels, cfg.diffusion.label_dropout, num_classes, generator)
    return Cond(label=label.to(device))


def control_channels(cfg: TrainConfig, data: ImageSet) -> int:
    """The channels of a control run's maps; one line for what a control run cannot do."""
    if data.control is None:
        raise ValueError(f"control.kind={cfg.control.kind!r} but {data.name!r} has no maps")
    if cfg.sr.low_res_size:
        raise ValueError("--control with --sr-from: control maps steer base models only")
    if cfg.run.eval_every:
        raise ValueError(
            "run.eval_every scores generated samples, which a control run draws from maps: "
            "set run.eval_every=0 (bench/control.py scores control runs)"
        )
    return data.control.shape[1]


def control_cond(cfg: TrainConfig, batch: Batch, generator: torch.Generator) -> Cond | None:
    """The batch's control maps, each replaced by the null map (zeros) with probability
    ``control.dropout``; None for a run without control."""
    if not cfg.control.enabled:
        return None
    drop = dropped(batch.control.shape[0], cfg.control.dropout, generator)
    keep = (~drop).to(batch.control.device, batch.control.dtype)[:, None, None, None]
    return Cond(control=batch.control * keep)


def grid_prompts(data: ImageSet, rows: int = 8) -> list[str]:
    """The first ``rows`` distinct captions, one row of a training sample grid each."""
    return list(dict.fromkeys(data.captions))[:rows]
