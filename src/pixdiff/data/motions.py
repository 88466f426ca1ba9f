"""The motions of the synthetic clips, their captions, the held-out split and their tracks.

The data follow Moving MNIST (Srivastava et al. 2015, "Unsupervised Learning of Video
Representations using LSTMs", Sec. 3: digits translating and bouncing off the frame's edges),
widened to the motions Video Diffusion Models are asked for (Ho et al. 2022): translation in 8
directions, bouncing, rotation, zoom, fade and two objects moving apart. A motion is drawn as
one :class:`Track` per object: the object's pose in each frame, which
:func:`pixdiff.data.clip_render.render_clip` draws. Every track keeps the whole object inside
the frame.

Conventions: pixels are indexed (x right, y down); "up" is towards y = 0; "clockwise" is as seen
on screen, i.e. from +x towards +y. Translations move by whole pixels (positions are rounded),
so a translated object is an exact copy of the first frame's.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, replace
from functools import partial
from typing import Literal, get_args

import torch
from torch import Tensor

Motion = Literal[
    "moving left", "moving right", "moving up", "moving down",
    "moving up-left", "moving up-right", "moving down-left", "moving down-right",
    "bouncing", "rotating clockwise", "rotating anticlockwise",
    "zooming in", "zooming out", "fading in", "fading out", "moving apart",
]  # fmt: skip
# The motion classes in a stable order: a clip's ``motions`` entry indexes this tuple, and a
# motion classifier's outputs follow it. Append new motions at the end only.
MOTIONS: tuple[str, ...] = get_args(Motion)

DIRECTIONS: dict[str, tuple[int, int]] = {
    "moving left": (-1, 0), "moving right": (1, 0), "moving up": (0, -1), "moving down": (0, 1),
    "moving up-left": (-1, -1), "moving up-right": (1, -1),
    "moving down-left": (-1, 1), "moving down-right": (1, 1),
}  # fmt: skip
# An (object, motion) pair is held out of "train" when (object id + motion id) % HOLDOUT_EVERY
# is HOLDOUT_EVERY - 1: an eighth of the pairs, yet every object keeps most of its motions and
# every motion most of its objects, so each held-out caption is a new combination of a seen
# object and a seen motion.
HOLDOUT_EVERY = 8

# speeds in frame sides per frame; angles in degrees per frame; scales relative to the sprite
SPEED = (1 / 64, 1 / 16)
SPIN = (10.0, 20.0)
ZOOM_LARGEST = (1.0, 1.25)
ZOOM_RATIO = (0.4, 0.6)


def caption_of(object_name: str, motion: str) -> str:
    """The clip's caption: "red apple moving left", "sneaker pair moving apart"."""
    if motion not in MOTIONS:
        raise ValueError(f"unknown motion {motion!r}; motions are {', '.join(MOTIONS)}")
    return (
        f"{object_name} pair moving apart"
        if motion == "moving apart"
        else f"{object_name} {motion}"
    )


def is_held_out(object_id: int, motion_id: int) -> bool:
    """Whether captions of this (object, motion) pair are in the held-out "test" split."""
    return (object_id + motion_id) % HOLDOUT_EVERY == HOLDOUT_EVERY - 1


def split_pairs(num_objects: int, split: str) -> list[tuple[int, int]]:
    """The (object id, motion id) pairs of ``split``: "train", held-out "test" or "all"."""
    pairs = [(o, m) for o in range(num_objects) for m in range(len(MOTIONS))]
    if split == "all":
        return pairs
    if split not in ("train", "test"):
        raise ValueError(f"unknown split {split!r}; valid splits are train, test, all")
    return [p for p in pairs if is_held_out(*p) == (split == "test")]


@dataclass(frozen=True)
class Footprint:
    """What a motion needs to know of a sprite: its side, the bounding box of its pixels
    (alpha > 0; inclusive indices), its centre of mass (weighted by the contrast with the
    background) and the distance from that centre within which every pixel of it lies, with a
    pixel of margin for interpolation."""

    side: int
    x0: int
    x1: int
    y0: int
    y1: int
    com: tuple[float, float]
    radius: float


@dataclass(frozen=True)
class Track:
    """One object's pose in each of F frames; each field is float64 (F,).

    x, y: the sprite's top-left corner in frame pixels; angle: radians, clockwise on screen,
    about the sprite's centre of mass; scale: about the same centre; opacity: in [0, 1].
    """

    x: Tensor
    y: Tensor
    angle: Tensor
    scale: Tensor
    opacity: Tensor


def still(frames: int, x: float, y: float) -> Track:
    """An upright, unscaled, opaque object at (x, y) in every frame."""
    ones = torch.ones(frames, dtype=torch.float64)
    return Track(ones * x, ones * y, *_rest(frames))


def _rest(frames: int) -> tuple[Tensor, Tensor, Tensor]:
    """angle, scale and opacity of an upright, unscaled, opaque object."""
    ones = torch.ones(frames, dtype=torch.float64)
    return ones * 0, ones, ones


def uniform(generator: torch.Generator, low: float, high: float) -> float:
    """A float drawn uniformly from [low, high)."""
    return low + (high - low) * torch.rand((), generator=generator, dtype=torch.float64).item()


def randint(generator: torch.Generator, low: int, high: int) -> int:
    """An integer in [low, high], both included."""
    return int(torch.randint(low, high + 1, (), generator=generator))


def _bounds(fp: Footprint, size: int) -> tuple[tuple[int, int], tuple[int, int]]:
    """The top-left corners (x range, y range) that keep an upright, unscaled sprite inside."""
    return (-fp.x0, size - 1 - fp.x1), (-fp.y0, size - 1 - fp.y1)


def _steps(frames: int, travel: int) -> Tensor:
    """Whole-pixel distances 0 .. travel over the frames, as even as rounding allows."""
    return (torch.arange(frames, dtype=torch.float64) * travel / (frames - 1)).round()


def translate(fp: Footprint, size: int, frames: int, g: torch.Generator, direction) -> list[Track]:
    """Constant velocity in ``direction`` (dx, dy in {-1, 0, 1}); positions in whole pixels."""
    spans = _bounds(fp, size)
    room = min(hi - lo for (lo, hi), d in zip(spans, direction, strict=True) if d)
    top = min(SPEED[1] * size, room / (frames - 1))
    travel = round(uniform(g, min(SPEED[0] * size, top), top) * (frames - 1))
    steps = _steps(frames, travel)
    start = []
    for (lo, hi), d in zip(spans, direction, strict=True):
        first = randint(g, lo + travel, hi) if d < 0 else randint(g, lo, hi - travel * (d > 0))
        start.append(first + d * steps)
    return [Track(start[0], start[1], *_rest(frames))]


def _reflect(position: Tensor, room: int) -> Tensor:
    """Positions folded into [0, room]: an elastic bounce at both ends (a triangle wave)."""
    folded = torch.remainder(position, 2 * room)
    return torch.where(folded > room, 2 * room - folded, folded)


def bounce(fp: Footprint, size: int, frames: int, g: torch.Generator) -> list[Track]:
    """Moving MNIST's motion (Srivastava et al. 2015): constant velocity, reflected at the
    frame's edges. One axis (at random) is fast enough to bounce at least once."""
    spans = _bounds(fp, size)
    bouncing_axis = randint(g, 0, 1)
    pos = []
    for axis, (lo, hi) in enumerate(spans):
        room = hi - lo
        must = (room + 2) / (frames - 1)  # travelling over room + 2 px forces a reflection
        fast = max(must, SPEED[1] * size)
        speed = (
            uniform(g, must, fast) if axis == bouncing_axis else uniform(g, SPEED[0] * size, fast)
        )
        sign = 1 if randint(g, 0, 1) else -1
        t = torch.arange(frames, dtype=torch.float64)
        pos.append(lo + _reflect(uniform(g, 0, room) + sign * speed * t, room).round())
    return [Track(pos[0], pos[1], *_rest(frames))]


def _centre(fp: Footprint, size: int, reach: float, g: torch.Generator) -> tuple[float, float]:
    """A top-left corner whose centre of mass keeps ``reach`` pixels from every edge."""
    if reach > (size - 1) / 2:
        raise ValueError(f"a sprite reaching {reach:.1f} px cannot turn inside {size} px")
    cx, cy = (uniform(g, reach, size - 1 - reach) for _ in range(2))
    return cx - fp.com[0], cy - fp.com[1]


def rotate(fp: Footprint, size: int, frames: int, g: torch.Generator, sign: int) -> list[Track]:
    """Rotation about the centre of mass, clockwise (``sign`` 1) or anticlockwise (-1)."""
    x, y = _centre(fp, size, fp.radius, g)
    spin = math.radians(uniform(g, *SPIN))
    angle = sign * spin * torch.arange(frames, dtype=torch.float64)
    return [replace(still(frames, x, y), angle=angle)]


def zoom(fp: Footprint, size: int, frames: int, g: torch.Generator, growing: bool) -> list[Track]:
    """Scaling about the centre of mass, geometric in time, in (``growing``) or out."""
    fits = (size - 1) / (2 * fp.radius)
    largest = uniform(g, min(ZOOM_LARGEST[0], fits), min(ZOOM_LARGEST[1], fits))
    smallest = largest * uniform(g, *ZOOM_RATIO)
    x, y = _centre(fp, size, fp.radius * largest, g)
    t = torch.arange(frames, dtype=torch.float64) / (frames - 1)
    scale = smallest * (largest / smallest) ** (t if growing else 1 - t)
    return [replace(still(frames, x, y), scale=scale)]


def fade(fp: Footprint, size: int, frames: int, g: torch.Generator, appearing: bool) -> list[Track]:
    """A still object whose opacity goes linearly from 0 to 1 (``appearing``) or back."""
    (x_lo, x_hi), (y_lo, y_hi) = _bounds(fp, size)
    track = still(frames, randint(g, x_lo, x_hi), randint(g, y_lo, y_hi))
    ramp = torch.linspace(0, 1, frames, dtype=torch.float64)
    return [replace(track, opacity=ramp if appearing else 1 - ramp)]


APART_AXES = ((1, 0), (0, 1), (1, 1), (1, -1))


def apart(fp: Footprint, size: int, frames: int, g: torch.Generator) -> list[Track]:
    """Two copies, overlapping at first, moving in opposite directions along a random axis
    (horizontal, vertical or a diagonal), in whole pixels; the second is drawn on top."""
    axis = APART_AXES[randint(g, 0, len(APART_AXES) - 1)]
    spans = _bounds(fp, size)
    reach = min(hi - lo for (lo, hi), d in zip(spans, axis, strict=True) if d) // 2
    gap = randint(g, 1, max(1, reach // 4))  # half the first frame's separation
    travel = randint(g, (reach - gap + 1) // 2, reach - gap)
    offset = gap + _steps(frames, travel)  # (F,) half-separation in each moving axis
    centre = [
        randint(g, lo + reach, hi - reach) if d else randint(g, lo, hi)
        for (lo, hi), d in zip(spans, axis, strict=True)
    ]
    rest = _rest(frames)
    first = Track(centre[0] - axis[0] * offset, centre[1] - axis[1] * offset, *rest)
    second = Track(centre[0] + axis[0] * offset, centre[1] + axis[1] * offset, *rest)
    return [first, second]


TrackMaker = Callable[[Footprint, int, int, torch.Generator], list[Track]]


# motion -> (footprint, size, frames, generator) -> tracks, in the order of MOTIONS
TRACK_MAKERS: dict[str, TrackMaker] = {
    **{motion: partial(translate, direction=d) for motion, d in DIRECTIONS.items()},
    "bouncing": bounce,
    "rotating clockwise": partial(rotate, sign=1),
    "rotating anticlockwise": partial(rotate, sign=-1),
    "zooming in": partial(zoom, growing=True),
    "zooming out": partial(zoom, growing=False),
    "fading in": partial(fade, appearing=True),
    "fading out": partial(fade, appearing=False),
    "moving apart": apart,
}
assert tuple(TRACK_MAKERS) == MOTIONS


def tracks_for(
    motion: str, fp: Footprint, *, size: int, frames: int, generator: torch.Generator
) -> list[Track]:
    """The tracks (one per object; two for "moving apart") of a random clip of ``motion``."""
    if motion not in TRACK_MAKERS:
        raise ValueError(f"unknown motion {motion!r}; motions are {', '.join(MOTIONS)}")
    if frames < 2:
        raise ValueError(f"a clip needs at least 2 frames to move, got {frames}")
    return TRACK_MAKERS[motion](fp, size, frames, generator)
