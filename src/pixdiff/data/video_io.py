"""Clips out to files and back: GIF (Pillow, looping forever), MP4 (imageio with its ffmpeg
plugin, optional: ``pip install imageio imageio-ffmpeg``) and a PNG grid of frames.

Clips are (F, C, H, W) floats in [-1, 1], the model's space (C 1 or 3), as a pipeline returns
them; :func:`save_clip` writes all three files and, when imageio is missing, warns in one line
naming the packages and still writes the GIF and the grid. Every file is written atomically.

This module imports :mod:`pixdiff.images` (the grid), which imports :mod:`pixdiff.data`: so it
is not imported by ``pixdiff/data/__init__.py`` (that would be an import cycle at run time).
Import it as ``pixdiff.data.video_io``.
"""

from __future__ import annotations

import io
import warnings
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from pixdiff.data.folder import to_mode
from pixdiff.data.image_set import from_model_space, to_model_space
from pixdiff.data.video_read import (
    FRAME_MS_COMMENT,
    VIDEO_INSTALL,
    VideoBackendMissing,
    import_imageio,
    read_gif,
    read_mp4,
)
from pixdiff.files import atomic_write
from pixdiff.images import make_grid, save_png

__all__ = [
    "VIDEO_INSTALL",
    "VideoBackendMissing",
    "clip_frames",
    "read_gif",
    "read_clip_file",
    "read_mp4",
    "save_clip",
    "write_frame_grid",
    "write_gif",
    "write_mp4",
]


def clip_frames(clip: Tensor, *, scale: int = 1) -> np.ndarray:
    """(F, C, H, W) in [-1, 1] -> uint8 (F, H * scale, W * scale, C), nearest-neighbour
    enlarged; values outside [-1, 1] are clipped."""
    if clip.dim() != 4 or clip.shape[1] not in (1, 3):
        raise ValueError(f"a clip is (F, C, H, W) with C 1 or 3, got shape {tuple(clip.shape)}")
    frames = from_model_space(clip.detach().float().cpu().clamp(-1, 1))
    if scale > 1:
        frames = frames.repeat_interleave(scale, dim=2).repeat_interleave(scale, dim=3)
    return frames.permute(0, 2, 3, 1).numpy()


def _rgb_frames(clip: Tensor, *, scale: int) -> np.ndarray:
    """:func:`clip_frames` with grey repeated into RGB: uint8 (F, H', W', 3)."""
    frames = clip_frames(clip, scale=scale)
    return np.repeat(frames, 3, axis=-1) if frames.shape[-1] == 1 else frames


def write_gif(clip: Tensor, path: str | Path, *, fps: float = 8, scale: int = 1) -> Path:
    """A GIF of the clip at ``fps`` frames per second, looping forever.

    GIF stores durations in hundredths of a second, so the rate is rounded to that. Each frame
    gets a palette of 256 colours (exact for grey clips). The frame duration is also recorded
    in the GIF's comment, so :func:`read_gif` gets every frame back even where Pillow merged
    identical ones. Grey frames are written as RGB: Pillow (13.0) misreads the frames after the
    first of a GIF whose first frame has no palette, which is what it writes for mode L.
    """
    images = [Image.fromarray(frame) for frame in _rgb_frames(clip, scale=scale)]
    buf = io.BytesIO()
    images[0].save(
        buf, format="GIF", save_all=True, append_images=images[1:], duration=1000 / fps, loop=0,
        comment=FRAME_MS_COMMENT + f"{1000 / fps:g}".encode(),
    )  # fmt: skip
    atomic_write(path, buf.getvalue())
    return Path(path)


def write_mp4(
    clip: Tensor, path: str | Path, *, fps: float = 8, scale: int = 1, quality: float = 8
) -> Path:
    """An H.264 MP4 of the clip at ``fps`` (imageio's ffmpeg plugin; ``quality`` 0..10).

    Raises VideoBackendMissing, one line saying ``pip install imageio imageio-ffmpeg``, when
    imageio or imageio-ffmpeg is not installed.
    """
    iio = import_imageio(f"writing {path}")
    frames = _rgb_frames(clip, scale=scale)  # players expect colour
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)  # imageio's ffmpeg pipes
        data = iio.imwrite(
            "<bytes>", frames, extension=".mp4", plugin="FFMPEG", fps=fps, quality=quality,
            macro_block_size=2,
        )  # fmt: skip
    atomic_write(path, data)
    return Path(path)


def write_frame_grid(clips: Tensor, path: str | Path, *, scale: int = 2) -> Path:
    """A PNG of the frames, one row per clip: ``clips`` is (F, C, H, W) or (N, F, C, H, W)."""
    x = clips[None] if clips.dim() == 4 else clips
    if x.dim() != 5:
        raise ValueError(
            f"a grid of frames needs (F, C, H, W) or (N, F, C, H, W), got {tuple(clips.shape)}"
        )
    grid = make_grid(x.flatten(0, 1).clamp(-1, 1), nrow=x.shape[1])
    return save_png(grid, path, scale=scale)


def save_clip(
    clip: Tensor,
    stem: str | Path,
    *,
    fps: float = 8,
    scale: int = 1,
    formats: tuple[str, ...] = ("gif", "mp4", "png"),
) -> list[Path]:
    """Write ``stem``.gif, ``stem``.mp4 and ``stem``.png (the grid of frames) for one
    (F, C, H, W) clip in [-1, 1]; returns the paths written.

    Without imageio the MP4 is skipped with a one-line warning naming the packages to install,
    and the other files are still written.
    """
    unknown = sorted(set(formats) - {"gif", "mp4", "png"})
    if unknown:
        raise ValueError(f"unknown clip formats {unknown}; choose from gif, mp4, png")
    stem = Path(stem)
    written = []
    if "gif" in formats:
        written.append(write_gif(clip, stem.with_suffix(".gif"), fps=fps, scale=scale))
    if "mp4" in formats:
        try:
            written.append(write_mp4(clip, stem.with_suffix(".mp4"), fps=fps, scale=scale))
        except VideoBackendMissing as err:
            warnings.warn(str(err), stacklevel=2)
    if "png" in formats:
        written.append(write_frame_grid(clip, stem.with_suffix(".png"), scale=scale))
    return written


def read_clip_file(path: str | Path, *, max_frames: int | None = None) -> Tensor:
    """A GIF or video file back as (F, 3, H, W) in [-1, 1] (RGB; transparency on white)."""
    path = Path(path)
    reader = read_gif if path.suffix.lower() == ".gif" else read_mp4
    frames = np.stack([np.asarray(to_mode(im, 3)) for im in reader(path, max_frames=max_frames)])
    return to_model_space(torch.from_numpy(frames).permute(0, 3, 1, 2).contiguous())
