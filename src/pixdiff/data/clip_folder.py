"""A user's own clips: a folder holding one entry per clip, with optional captions and labels.

Layout (the Hugging Face ``imagefolder`` convention, one level down)::

    clips/
      metadata.jsonl          optional: {"file_name": "walk", "text": "a dog walking"} per line
      walk/                   a clip as a folder of frames (PNG/JPEG/WebP), in name order,
        frame1.png ...          numbers compared as numbers (frame2 before frame10)
      spin.gif                a clip as a GIF (Pillow)
      wave.mp4                a clip as a video file (imageio with its ffmpeg plugin)

Entries are sorted by name the same way; hidden ones are skipped, and so are files of other
kinds. ``metadata.jsonl`` names each clip by its folder or file name (``file_name``) and gives
its caption (``text``) and/or class (``label``, an int id or a class-name string), as
:mod:`pixdiff.data.folder` reads them.

Frames: a clip gives its FIRST ``frames`` frames, or with ``frame_stride`` k every k-th of its
first ``(frames - 1) * k + 1`` frames; later frames are not used, and nothing is
interpolated in time.
Each frame is converted to grey or RGB (transparency on white), its shorter side resized and
centre-cropped to a square, as images are. Every problem is one line naming the file: a clip
with frames of mixed sizes, a corrupt file, a clip with fewer frames than asked for.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from PIL import Image, ImageOps
from tqdm import tqdm

from pixdiff.data.clip_set import ClipSet
from pixdiff.data.folder import (
    IMAGE_EXTENSIONS,
    METADATA_FILE,
    folder_metadata,
    label_ids,
    metadata_column,
    to_mode,
)
from pixdiff.data.image_set import check_fits_in_memory
from pixdiff.data.video_read import VIDEO_EXTENSIONS, read_frame_folder, read_gif, read_mp4

CLIP_FILE_EXTENSIONS = (".gif", *VIDEO_EXTENSIONS)


def natural_key(name: str) -> tuple:
    """Sort key comparing runs of digits as numbers: "frame2" < "frame10"."""
    return tuple(int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name))


def _visible(path: Path) -> bool:
    return not path.name.startswith(".")


def list_clips(root: Path) -> list[Path]:
    """The clips directly under ``root``: frame folders and GIF/video files, in name order."""
    entries = (
        p
        for p in root.iterdir()
        if _visible(p) and (p.is_dir() or p.suffix.lower() in CLIP_FILE_EXTENSIONS)
    )
    return sorted(entries, key=lambda p: natural_key(p.name))


def frame_files(folder: Path) -> list[Path]:
    """The frame images directly in a clip folder, in name order (numbers as numbers)."""
    files = [
        p
        for p in folder.iterdir()
        if _visible(p) and p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file()
    ]
    return sorted(files, key=lambda p: natural_key(p.name))


def fit_frame(image: Image.Image, *, size: int, channels: Literal[1, 3]) -> np.ndarray:
    """A frame as uint8 (channels, size, size): converted, shorter side resized, centre-cropped."""
    image = ImageOps.fit(to_mode(image, channels), (size, size), method=Image.Resampling.LANCZOS)
    array = np.asarray(image)
    return array[None] if channels == 1 else array.transpose(2, 0, 1)


def read_clip(
    path: Path, *, size: int, frames: int, channels: Literal[1, 3] = 3, frame_stride: int = 1
) -> np.ndarray:
    """One clip (frame folder, GIF or video file) as uint8 (frames, channels, size, size):
    every ``frame_stride``-th of its first ``(frames - 1) * frame_stride + 1`` frames."""
    needed = (frames - 1) * frame_stride + 1
    if path.is_dir():
        files = frame_files(path)
        if not files:
            raise ValueError(f"clip folder {path} holds no frames ({', '.join(IMAGE_EXTENSIONS)})")
        images = read_frame_folder(path, files[:needed])
    elif path.suffix.lower() == ".gif":
        images = read_gif(path, max_frames=needed)
    else:
        images = read_mp4(path, max_frames=needed)
    if len(images) < needed:
        raise ValueError(
            f"clip {path} has {len(images)} frame(s), fewer than the {needed} needed for "
            f"{frames} frames at stride {frame_stride}; ask for fewer frames or remove the clip"
        )
    return np.stack([fit_frame(im, size=size, channels=channels) for im in images[::frame_stride]])


def load_clip_folder(
    root: str | Path,
    *,
    size: int,
    frames: int,
    channels: Literal[1, 3] = 3,
    frame_stride: int = 1,
    progress: bool = True,
) -> ClipSet:
    """Every clip under ``root`` as uint8 (N, frames, channels, size, size).

    Args:
        root: a folder of clips (frame folders, GIFs, video files), optionally with a
            ``metadata.jsonl`` giving ``text`` and/or ``label`` per clip (``file_name``).
        size: side of the square frames (shorter side resized, then centre-cropped).
        frames: frames per clip: the clip's first ones (see ``frame_stride``).
        channels: 1 for grey, 3 for RGB; transparency is composited on white.
        frame_stride: take every ``frame_stride``-th frame (2 halves the frame rate).
        progress: show a progress bar while decoding.
    """
    root = Path(root).expanduser()
    if channels not in (1, 3) or size < 1 or frames < 1 or frame_stride < 1:
        raise ValueError(
            f"need channels 1 or 3 and size, frames, frame_stride >= 1; got {channels}, {size}, "
            f"{frames}, {frame_stride}"
        )
    if not root.is_dir():
        raise FileNotFoundError(f"clip folder {root} does not exist (or is not a folder)")
    paths = list_clips(root)
    if not paths:
        raise ValueError(
            f"no clips under {root}: expected frame folders or {', '.join(CLIP_FILE_EXTENSIONS)}"
        )
    meta = folder_metadata(root)
    names = [p.name for p in paths]
    meta_path = root / METADATA_FILE
    texts = metadata_column(meta.texts, names, "text", meta_path, item="clip")
    raw_labels = metadata_column(meta.labels, names, "label", meta_path, item="clip")
    check_fits_in_memory(len(paths) * frames, channels, size, f"the clips under {root}")
    clips = np.empty((len(paths), frames, channels, size, size), dtype=np.uint8)
    bar = tqdm(paths, desc="loading clips", unit="clip", disable=None if progress else True)
    for i, path in enumerate(bar):
        clips[i] = read_clip(
            path, size=size, frames=frames, channels=channels, frame_stride=frame_stride
        )
    labels, class_names = label_ids(raw_labels) if raw_labels else (None, None)
    return ClipSet(
        torch.from_numpy(clips), captions=texts, labels=labels, class_names=class_names,
        name=root.name,
    )  # fmt: skip
