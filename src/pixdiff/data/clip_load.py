"""Clip sets by name, as :func:`pixdiff.data.load_dataset` gives image sets by name:
``'fashion-clips'``, ``'emoji-clips'`` (the synthetic captioned clips of
:mod:`pixdiff.data.clips`) or a clip folder (:func:`pixdiff.data.load_clip_folder`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pixdiff.data.clip_folder import load_clip_folder
from pixdiff.data.clip_set import ClipSet
from pixdiff.data.clips import ClipSpec, load_clips
from pixdiff.data.image_set import Split, convert_channels

# dataset name -> ClipSpec.source
CLIP_DATASETS = {"fashion-clips": "fashion-mnist", "emoji-clips": "emoji"}
DEFAULT_FRAMES = 16


def is_clip_dataset(spec: str, frames: int) -> bool:
    """Whether ``spec`` names clips: a clip set's name, or a folder asked for with
    ``frames`` > 0 (a folder without it is a folder of images)."""
    return spec in CLIP_DATASETS or (frames > 0 and Path(spec).expanduser().is_dir())


def load_clip_dataset(
    spec: str,
    *,
    image_size: int,
    frames: int = 0,
    channels: Literal[1, 3] | None = None,
    split: Split = "train",
    num_clips: int = 1024,
    seed: int = 0,
    cache_dir: str | Path | None = None,
    progress: bool = True,
) -> ClipSet:
    """Load ``'fashion-clips'`` (grey), ``'emoji-clips'`` (colour) or a clip folder.

    Args:
        spec: a name from :data:`CLIP_DATASETS` or a clip folder's path.
        image_size: side of the square frames.
        frames: frames per clip; 0: :data:`DEFAULT_FRAMES`.
        channels: 1 or 3; None keeps the set's own (folders: 3).
        split: the synthetic sets' split (held-out object-motion pairs for ``"test"``); a
            folder has one split, all of its clips.
        num_clips: how many synthetic clips (clip i depends only on (seed, split, i)).
        seed: the synthetic clips drawn.
    """
    frames = frames or DEFAULT_FRAMES
    if spec in CLIP_DATASETS:
        data = load_clips(
            ClipSpec(source=CLIP_DATASETS[spec], size=image_size, frames=frames,
                     num_clips=num_clips, split=split, seed=seed),
            cache_dir=cache_dir, progress=progress,
        )  # fmt: skip
        data = _renamed(data, f"{spec}-{split}")
    elif Path(spec).expanduser().is_dir():
        return load_clip_folder(
            spec, size=image_size, frames=frames, channels=channels or 3, progress=progress
        )
    else:
        raise FileNotFoundError(
            f"unknown clip dataset {spec!r}: it is neither one of {', '.join(CLIP_DATASETS)} "
            f"nor an existing folder ({Path(spec).expanduser().resolve()})"
        )
    if channels is not None and channels != data.clips.shape[2]:
        clips = convert_channels(data.clips.flatten(0, 1), channels).unflatten(
            0, data.clips.shape[:2]
        )
        data = ClipSet(clips, data.captions, data.labels, data.class_names, data.motions, data.name)
    return data


def _renamed(data: ClipSet, name: str) -> ClipSet:
    return ClipSet(data.clips, data.captions, data.labels, data.class_names, data.motions, name)
