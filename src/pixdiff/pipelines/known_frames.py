"""Known frames of a generated clip (docs/video.md, Image-to-video, interpolation and extension):
image-to-video from a first frame, interpolation and extension from any frames.

Two ways to make a clip show the given frames, as Ho et al. 2022a ("Video Diffusion Models",
Sec. 3.1) compare them:

- ``concat``: a network trained with known frames (``data.known_frames``) is given them, with a
  mask, as extra input channels (``Cond.known``; the first frame as in SVD, Blattmann et al.
  2023, Sec. 4.4);
- ``replace``: any video network; at every step the known frames of x_t are replaced by the
  forward-noised given frames q(x_t | x0) (RePaint, Lugmayr et al. 2022, Eq. 8, with its
  resampling; Ho et al. 2022a's replacement baseline), the inpainting loop of
  :func:`pixdiff.pipelines.edit.inpaint` with a mask over frames.

Either way the clip's known frames are then replaced by the given ones (``paste``), so they are
exactly what was given.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from PIL import Image
from torch import Tensor, nn

from pixdiff.conditioning import Cond
from pixdiff.data import to_model_space
from pixdiff.data.folder import to_mode
from pixdiff.data.video_io import read_clip_file
from pixdiff.images import read_image
from pixdiff.nets.video import known_input
from pixdiff.pipelines.edit import inpaint
from pixdiff.sampling import Sampling, draw

KnownMode = Literal["concat", "replace"]
FrameInput = Tensor | Image.Image | str | Path


@dataclass(frozen=True)
class KnownFrames:
    """Frames a clip must show, and how to make it show them.

    Attributes:
        frames: (K, C, H, W) in [-1, 1], the given frames.
        index: the K frame positions they take in the clip (distinct, from 0).
        mode: ``concat`` (a network trained with known frames) or ``replace`` (RePaint-style
            replacement, any video network).
        resample: RePaint's resampling R of ``replace`` (1: plain replacement).
        paste: replace the generated clip's known frames by the given ones at the end.
    """

    frames: Tensor
    index: tuple[int, ...]
    mode: KnownMode = "concat"
    resample: int = 1
    paste: bool = True

    def given(self, frames: int) -> Tensor:
        """(F,) bool, True at the known positions of a clip of ``frames`` frames; one line for
        a position beyond it."""
        beyond = [i for i in self.index if not 0 <= i < frames]
        if beyond:
            raise ValueError(
                f"--known-index {','.join(map(str, beyond))}: the clip has {frames} frames "
                f"(0 to {frames - 1}); use positions in that range"
            )
        mask = torch.zeros(frames, dtype=torch.bool)
        mask[list(self.index)] = True
        return mask

    def clip(self, frames: int) -> Tensor:
        """(F, C, H, W): the given frames at their positions, zeros elsewhere."""
        x0 = self.frames.new_zeros(frames, *self.frames.shape[1:])
        x0[list(self.index)] = self.frames
        return x0


def read_known(
    model,
    *,
    first_frame: FrameInput | None = None,
    known_frames: FrameInput | None = None,
    known_index: Sequence[int] | None = None,
    mode: KnownMode | None = None,
    resample: int = 1,
) -> KnownFrames | None:
    """The request's known frames for a video ``model`` (a loaded run): ``first_frame`` (an
    image file, PIL image or (C, H, W) tensor) at position 0, or ``known_frames`` (a GIF or
    video file, or a (K, C, H, W) tensor) at ``known_index`` (default 0, 1, ..., K - 1; fewer
    positions than frames take the first frames). None
    when neither is given. ``mode`` None is ``concat``. One line for anything wrong."""
    if first_frame is None and known_frames is None:
        for flag, value in (("--known-index", known_index), ("--known-mode", mode)):
            if value is not None:
                raise ValueError(f"{flag} needs --first-frame IMAGE or --known-frames FILE")
        return None
    if first_frame is not None and known_frames is not None:
        raise ValueError("give --first-frame or --known-frames, not both")
    if len(model.image_shape) != 4:
        raise ValueError(f"--first-frame / --known-frames: {model.path} is an image model")
    if mode not in (None, "concat", "replace"):
        raise ValueError(f"--known-mode must be concat or replace, got {mode!r}")
    if resample < 1:
        raise ValueError(f"--resample must be >= 1 (1 = no resampling), got {resample}")
    _, channels, size, _ = model.image_shape
    if first_frame is not None:
        frames = _image(first_frame, channels, size)
        index = (0,) if known_index is None else tuple(known_index)
    else:
        frames = _frames(known_frames, channels, size)
        index = tuple(range(len(frames))) if known_index is None else tuple(known_index)
        frames = frames[: len(index)]  # a longer clip gives its first frames
    if len(index) != len(frames) or len(set(index)) != len(index):
        raise ValueError(
            f"--known-index names {len(index)} positions ({','.join(map(str, index))}) for "
            f"{len(frames)} given frames: give one distinct position per frame"
        )
    known = KnownFrames(frames.float(), index, mode or "concat", resample)
    known.given(model.image_shape[0])
    if known.mode == "concat" and not getattr(model.net.config, "known_frames", False):
        raise ValueError(
            f"{model.path} was not trained with known frames (data.known_frames): use "
            "--known-mode replace (RePaint-style replacement, any video run), or train with "
            "--set data.known_frames=first,random,none"
        )
    return known


def _image(image: FrameInput, channels: int, size: int) -> Tensor:
    """A first frame as (1, C, H, W): a file (refused unless size x size), PIL or tensor."""
    if isinstance(image, (str, Path)):
        return read_image(image, size=size, channels=channels, who="--first-frame: this model")
    if isinstance(image, Image.Image):
        array = torch.from_numpy(np.asarray(to_mode(image, channels)).copy())
        image = to_model_space(array.reshape(image.height, image.width, channels).permute(2, 0, 1))
    return _checked(image[None] if image.dim() == 3 else image, channels, size, "--first-frame")


def _frames(clip: FrameInput, channels: int, size: int) -> Tensor:
    """Known frames as (K, C, H, W): a GIF or video file (grey from its luma) or a tensor."""
    if isinstance(clip, (str, Path)):
        x = read_clip_file(clip)  # (K, 3, H, W)
        if channels == 1:
            grey = bool((x[:, :1] == x[:, 1:]).all())
            luma = torch.tensor([0.299, 0.587, 0.114]).reshape(1, 3, 1, 1)
            x = x[:, :1] if grey else (x * luma).sum(1, keepdim=True)
        return _checked(x, channels, size, f"--known-frames {clip}")
    if not isinstance(clip, Tensor):
        raise ValueError("--known-frames takes a GIF or video file, or a (K, C, H, W) tensor")
    return _checked(clip, channels, size, "--known-frames")


def _checked(x: Tensor, channels: int, size: int, who: str) -> Tensor:
    if x.dim() != 4 or tuple(x.shape[1:]) != (channels, size, size):
        raise ValueError(
            f"{who}: got frames of shape {tuple(x.shape[1:])}, this model makes "
            f"{size}x{size} frames with {channels} channel(s); give frames of that shape"
        )
    return x


def known_cond(known: KnownFrames | None, n: int, frames: int) -> Cond | None:
    """``Cond.known`` of n clips of ``frames`` frames, for ``concat``; None otherwise."""
    if known is None or known.mode != "concat":
        return None
    clip = known.clip(frames)
    return Cond(known=known_input(clip.expand(n, *clip.shape), known.given(frames).expand(n, -1)))


def draw_known(
    denoiser: nn.Module,
    known: KnownFrames,
    shape: tuple[int, ...],
    sampling: Sampling,
    *,
    cond: Cond | None,
    seed: int,
    device: str | torch.device,
    dtype: torch.dtype,
    progress: bool,
) -> Tensor:
    """n clips (n, F, C, H, W) showing the known frames: ``concat`` samples as usual (the
    frames are in ``cond``); ``replace`` runs :func:`pixdiff.pipelines.edit.inpaint` with the
    mask 1 on the known frames. Then, with ``paste``, the known frames are set to the given ones."""
    frames = shape[1]
    x0 = known.clip(frames).to(device, dtype)[None].expand(shape)
    given = known.given(frames).to(device)
    if known.mode == "replace":
        mask = given.to(dtype).reshape(1, frames, 1, 1, 1).expand(1, frames, 1, *shape[-2:])
        x = inpaint(
            denoiser, x0.contiguous(), mask, resample=known.resample, sampling=sampling,
            cond=cond, seed=seed, progress=progress,
        )  # fmt: skip
    else:
        x = draw(
            denoiser, shape, sampling, cond=cond, seed=seed, device=device, dtype=dtype,
            progress=progress,
        )  # fmt: skip
    if known.paste:
        x = torch.where(given[None, :, None, None, None], x0, x)
    return x
