"""What a video run adds to the trainer (docs/video.md, Training): clip data by name, the
network config's clip fields, starting from an image run, and the joint-training flag.

A clip run trains the same loop on batches of clips (B, F, C, H, W): the Gaussian path, the
losses and the samplers see one more axis and nothing else (Ho et al. 2022a, "Video Diffusion
Models"). Joint image and video training (ibid., Sec. 3) marks a share of each batch's clips
as independent frames (``Cond.independent_frames``): their frames attend only to themselves
and skip the temporal convolutions, so they train the spatial layers as images. The frames
are the clip's own, each conditioned on the clip's caption or label: the clip sets hold no
separate images, and a caption describes every frame of its clip.

Known-frame conditioning (``data.known_frames``; docs/video.md, Image-to-video) gives the
network, per clip, its first frame, a random subset of its frames, or none, with a mask
(``Cond.known``, concatenated to x_t: Ho et al. 2022a, Sec. 3.1; the first frame as SVD's
image-to-video, Blattmann et al. 2023, Sec. 4.4). The loss stays on every frame.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from pixdiff.checkpoint import find_weights, read_json, read_tensors
from pixdiff.conditioning import Cond, merge
from pixdiff.config import TrainConfig
from pixdiff.data import Batch, ClipSet, ImageSet, is_clip_dataset, load_clip_dataset, load_dataset
from pixdiff.data.clip_load import CLIP_DATASETS
from pixdiff.data.clips import SIZE_RANGE
from pixdiff.nets import preset
from pixdiff.nets.text import TextConditionedNet
from pixdiff.nets.video import TemporalOptions, init_from_image, known_input
from pixdiff.training.losses import dropped

# the network config fields the data (and the conditioning) fix, which an image run must share
_SHARED = ("in_channels", "image_size", "num_classes", "context_dim", "pooled_dim")
VIDEO_PRESETS = ("video-unet-tiny", "video-dit-tiny")


def load_training_data(cfg: TrainConfig) -> ImageSet | ClipSet:
    """The run's data: clips for a clip set's name or a folder with ``data.frames``, else
    images (:func:`pixdiff.data.load_dataset`)."""
    d = cfg.data
    if not is_clip_dataset(d.name, d.frames):
        return load_dataset(
            d.name, image_size=d.image_size, channels=d.channels, split=d.split,
            skip_bad_images=d.skip_bad_images, control=cfg.control,
        )  # fmt: skip
    check_clip_run(cfg)
    return load_clip_dataset(
        d.name, image_size=d.image_size, frames=d.frames, channels=d.channels, split=d.split,
        num_clips=d.num_clips,
    )  # fmt: skip


def check_clip_run(cfg: TrainConfig) -> None:
    """One line for what a clip run cannot do (yet)."""
    if cfg.sr.low_res_size or cfg.control.enabled:
        raise ValueError(f"{cfg.data.name!r} is clips: --sr-from and --control are image runs'")
    low, high = SIZE_RANGE
    if cfg.data.name in CLIP_DATASETS and not low <= cfg.data.image_size <= high:
        raise ValueError(
            f"--image-size {cfg.data.image_size}: {cfg.data.name} clips are {low} to {high} px "
            f"(the image default is 28); pass --image-size {low}"
        )
    if cfg.run.eval_every:
        raise ValueError("run.eval_every scores image samples; set run.eval_every=0 for clips")


def known_modes(cfg: TrainConfig) -> list[str]:
    """The ``data.known_frames`` modes; [] when no clip reveals frames (none alone)."""
    modes = cfg.data.known_frames.split(",")
    return [] if modes == ["none"] else modes


def video_fields(cfg: TrainConfig, data: ImageSet | ClipSet) -> dict[str, object]:
    """The net config fields a clip run fixes (``num_frames``; with ``model.init_from`` every
    field of the image run's network); {} for an image run. One line when the preset is not
    of the data's kind or the image run does not fit the data."""
    video = isinstance(preset(cfg.model.preset), TemporalOptions)
    clips = isinstance(data, ClipSet)
    if clips != video:
        fix = f"a video preset ({', '.join(VIDEO_PRESETS)})" if clips else "an image preset"
        kind = "clips" if clips else "images"
        raise ValueError(f"--data {cfg.data.name} is {kind}: --preset {cfg.model.preset} "
                         f"cannot train on them; use {fix}")  # fmt: skip
    if cfg.model.init_from and not clips:
        raise ValueError("model.init_from (--init-from) starts a video run from an image run")
    if known_modes(cfg) and not clips:
        raise ValueError(f"data.known_frames={cfg.data.known_frames!r} is for clips")
    known = {"known_frames": True} if known_modes(cfg) else {}
    return {"num_frames": data.frames, **known} if clips else {}


def image_run_fields(cfg: TrainConfig, fitted: dict[str, object]) -> dict[str, object]:
    """The network config of ``model.init_from``'s image run, as fields of the video config;
    one line naming a field the data fixes otherwise."""
    run = Path(cfg.model.init_from)
    image = read_json(find_weights(run, ema=True)[1])["net"]
    image = {k: v for k, v in image.items() if k != "type"}
    for name in _SHARED:
        if name in fitted and name in image and fitted[name] != image[name]:
            raise ValueError(
                f"--init-from {run}: its network has {name}={image[name]} but these clips "
                f"need {fitted[name]}; train the image run on frames of the same size, "
                "channels and conditioning"
            )
    return {k: tuple(v) if isinstance(v, list) else v for k, v in image.items()}


def init_spatial(net: nn.Module, cfg: TrainConfig) -> None:
    """Load ``model.init_from``'s EMA weights into ``net``'s spatial layers (and its text
    encoder), so the video network starts as that image model on every frame."""
    run = Path(cfg.model.init_from)
    weights, config_path = find_weights(run, ema=True)
    config = read_json(config_path)
    state, _ = read_tensors(weights)
    text = isinstance(net, TextConditionedNet)
    if text != bool(config.get("text_conditioned")):
        raise ValueError(
            f"--init-from {run}: it is {'' if not text else 'not '}text-conditioned and this "
            f"run is {'' if text else 'not '}; condition both on the same thing"
        )
    if text:
        encoder = {k[len("text_encoder.") :]: v for k, v in state.items() if k.startswith("text_")}
        state = {k[len("net.") :]: v for k, v in state.items() if k.startswith("net.")}
        net.text_encoder.load_state_dict(encoder)
        net = net.net
    init_from_image(net, state)


def independent_cond(cfg: TrainConfig, batch: Batch, generator: torch.Generator) -> Cond | None:
    """Each clip of the batch flagged as independent frames with probability
    ``data.image_share`` (none drawn without it, nor for images)."""
    if not cfg.data.image_share or batch.images.dim() != 5:
        return None
    flags = dropped(batch.images.shape[0], cfg.data.image_share, generator)
    return Cond(independent_frames=flags.to(batch.images.device))


def clip_cond(cfg: TrainConfig, batch: Batch, generator: torch.Generator) -> Cond | None:
    """A clip batch's joint-training flags (:func:`independent_cond`) and known frames
    (:func:`known_cond`); a clip trained as independent frames reveals none."""
    independent = independent_cond(cfg, batch, generator)
    known = known_cond(cfg, batch, generator, independent)
    return merge(independent, known)


def known_cond(
    cfg: TrainConfig, batch: Batch, generator: torch.Generator, independent: Cond | None
) -> Cond | None:
    """The batch's ``Cond.known``: each clip draws one of the ``data.known_frames`` modes
    uniformly; None for a run without known frames (nothing drawn)."""
    modes = known_modes(cfg)
    if not modes or batch.images.dim() != 5:
        return None
    clips = batch.images
    given = known_mask(modes, clips.shape[0], clips.shape[1], generator).to(clips.device)
    if independent is not None:
        given &= ~independent.independent_frames[:, None]
    return Cond(known=known_input(clips, given))


def known_mask(modes: list[str], batch: int, frames: int, generator: torch.Generator):
    """(batch, frames) bool, True on a clip's given frames: the first; or k uniform in
    [1, F - 1] frames at random positions (interpolation and extension patterns alike); or none.
    """
    mode = torch.randint(len(modes), (batch,), generator=generator)
    count = torch.randint(1, max(frames, 2), (batch,), generator=generator)
    rank = torch.rand(batch, frames, generator=generator).argsort(1).argsort(1)
    masks = {
        "first": (torch.arange(frames) == 0).expand(batch, frames),
        "random": rank < count[:, None],
        "none": torch.zeros(batch, frames, dtype=torch.bool),
    }
    return torch.stack([masks[m] for m in modes])[mode, torch.arange(batch)]


def clip_config_entry(data: ImageSet | ClipSet) -> dict[str, object]:
    """config.json's ``data`` entry."""
    entry: dict[str, object] = {"name": data.name, "size": len(data)}
    if isinstance(data, ClipSet):
        entry["frames"] = data.frames
    return entry


__all__ = ["VIDEO_PRESETS", "image_run_fields", "init_spatial", "load_training_data"]
