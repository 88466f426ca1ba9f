"""Every synthetic clip moves as its caption says, measured on the pixels: the object's centre
of mass for translation and bouncing, its principal axis for rotation, its ink for zoom and fade,
the spread of the ink for two objects moving apart."""

import math
from dataclasses import replace

import pytest
import torch

from pixdiff.data.clip_render import grey_sprite, render_clip
from pixdiff.data.clips import ClipSpec, make_clips
from pixdiff.data.emoji import DEFAULT_FONT
from pixdiff.data.fashion_mnist import DEFAULT_ROOT
from pixdiff.data.motions import DIRECTIONS, MOTIONS, caption_of, tracks_for

needs_fashion = pytest.mark.skipif(
    not DEFAULT_ROOT.is_dir(), reason="Debian package dataset-fashion-mnist is not installed"
)
needs_font = pytest.mark.skipif(
    not DEFAULT_FONT.is_file(), reason="Debian package fonts-noto-color-emoji is not installed"
)


def ink(clip: torch.Tensor, background: float) -> torch.Tensor:
    """(F, C, H, W) uint8 -> (F, H, W): how far each pixel is from the background."""
    return (clip.double() - background).abs().sum(1)


def centres(weights: torch.Tensor) -> torch.Tensor:
    """(F, H, W) -> (F, 2): the (x, y) centre of mass of each frame."""
    h, w = weights.shape[1:]
    ys, xs = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    mass = weights.sum((1, 2))
    return torch.stack([(weights * xs).sum((1, 2)) / mass, (weights * ys).sum((1, 2)) / mass], 1)


def moments(weights: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(F, H, W) -> principal-axis angle (radians, from +x towards +y, mod pi) and anisotropy
    ((l1 - l2) / (l1 + l2) of the second-moment matrix) of each frame."""
    h, w = weights.shape[1:]
    ys, xs = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    c = centres(weights)
    dx, dy = xs - c[:, :1, None], ys - c[:, 1:, None]
    mass = weights.sum((1, 2))
    mxx, myy = (weights * dx * dx).sum((1, 2)) / mass, (weights * dy * dy).sum((1, 2)) / mass
    mxy = (weights * dx * dy).sum((1, 2)) / mass
    angle = 0.5 * torch.atan2(2 * mxy, mxx - myy)
    spread = torch.sqrt((mxx - myy) ** 2 + 4 * mxy**2)
    return angle, spread / (mxx + myy)


def spread(weights: torch.Tensor) -> torch.Tensor:
    """(F, H, W) -> mean squared distance of the ink from its centre, per frame."""
    h, w = weights.shape[1:]
    ys, xs = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    c = centres(weights)
    d2 = (xs - c[:, :1, None]) ** 2 + (ys - c[:, 1:, None]) ** 2
    return (weights * d2).sum((1, 2)) / weights.sum((1, 2))


def turned(weights: torch.Tensor) -> torch.Tensor:
    """(F, H, W) -> the principal axis's turn between consecutive frames, unwrapped (mod pi)."""
    angle, _ = moments(weights)
    step = angle[1:] - angle[:-1]
    return torch.remainder(step + math.pi / 2, math.pi) - math.pi / 2


def check_motion(clip: torch.Tensor, motion: str, background: float) -> None:
    """Assert that the uint8 (F, C, H, W) clip shows ``motion``."""
    w = ink(clip, background)
    mass = w.sum((1, 2))
    size = clip.shape[-1]
    if motion in DIRECTIONS or motion == "bouncing":
        assert torch.allclose(mass, mass[0]), "a moving object keeps its ink"
        c = centres(w)
        assert (c >= 0).all() and (c <= size - 1).all()
        step = c[1:] - c[:-1]
        if motion == "bouncing":
            signs = [torch.sign(s[s.abs() > 1e-9]) for s in step.T]  # still frames skipped
            assert any((x[1:] != x[:-1]).any() for x in signs), f"no bounce: {step.tolist()}"
            return
        for axis, d in enumerate(DIRECTIONS[motion]):
            if d == 0:
                assert step[:, axis].abs().max() < 1e-6, f"{motion}: drifts on axis {axis}"
            else:
                assert (step[:, axis] * d >= -1e-9).all(), f"{motion}: steps {step.tolist()}"
                assert (c[-1, axis] - c[0, axis]) * d >= 2, f"{motion}: moved too little"
    elif motion.startswith("rotating"):
        c = centres(w)
        assert (c - c[0]).abs().max() < 0.5, "rotation keeps the centre of mass"
        _, anisotropy = moments(w)
        if anisotropy[0] > 0.15:  # a round object has no principal axis to follow
            sign = 1 if motion == "rotating clockwise" else -1
            turn = turned(w) * sign
            assert (turn > 0).all(), f"{motion}: axis turns {turn.tolist()}"
    elif motion.startswith("zooming"):
        grows = torch.diff(mass) if motion == "zooming in" else -torch.diff(mass)
        assert (grows > 0).all(), f"{motion}: ink {mass.tolist()}"
        c = centres(w)
        assert (c - c[0]).abs().max() < 1.0, "zoom keeps the centre of mass"
    elif motion.startswith("fading"):
        grows = torch.diff(mass) if motion == "fading in" else -torch.diff(mass)
        assert (grows > 0).all(), f"{motion}: ink {mass.tolist()}"
    elif motion == "moving apart":
        s = spread(w)
        assert (torch.diff(s) > -1e-6).all() and s[-1] > s[0] + 4, f"spread {s.tolist()}"
    else:
        raise AssertionError(f"no check for {motion!r}")


def check_set(data, background: float) -> int:
    """Check every clip of a generated set; returns how many were checked."""
    for clip, caption, label, motion in zip(
        data.clips, data.captions, data.labels, data.motions, strict=True
    ):
        assert caption == caption_of(data.class_names[label], MOTIONS[motion])
        check_motion(clip, MOTIONS[motion], background)
    return len(data)


@needs_fashion
def test_fashion_clips_move_as_captioned():
    data = make_clips(ClipSpec(source="fashion-mnist", num_clips=64, frames=8, split="all"))
    assert data.clips.shape == (64, 8, 1, 32, 32)
    assert set(data.motions.tolist()) >= set(range(12)), "most motions are drawn"
    check_set(data, background=0)


@needs_font
def test_emoji_clips_move_as_captioned():
    data = make_clips(ClipSpec(source="emoji", num_clips=48, frames=12, size=64, split="all"))
    assert data.clips.shape == (48, 12, 3, 64, 64)
    check_set(data, background=255)


def bar() -> torch.Tensor:
    """A 16 x 16 uint8 sprite: a 3 x 12 white bar, lying along x."""
    item = torch.zeros(1, 16, 16, dtype=torch.uint8)
    item[0, 6:9, 2:14] = 255
    return item


@pytest.mark.parametrize("motion", MOTIONS)
def test_each_motion_on_an_elongated_object(motion):
    """Every motion, several random draws, on an object whose orientation is unambiguous."""
    sprite = grey_sprite(bar())
    for seed in range(4):
        g = torch.Generator().manual_seed(seed)
        tracks = tracks_for(motion, sprite.footprint(), size=32, frames=16, generator=g)
        clip = render_clip(sprite, tracks, size=32)
        assert clip.shape == (16, 1, 32, 32)
        check_motion(clip, motion, background=0)
        _, anisotropy = moments(ink(clip, 0))
        if motion.startswith("rotating"):
            assert anisotropy[0] > 0.5, "the bar's orientation is measured"


@pytest.mark.parametrize("sprite", [bar(), torch.full((1, 16, 16), 200, dtype=torch.uint8)])
def test_objects_stay_inside_the_frame(sprite):
    """No motion pushes ink past the border: drawn on a canvas 4 pixels wider on every side,
    nothing lands outside the frame. The full square is the widest sprite there is."""
    sprite = grey_sprite(sprite)
    for motion in MOTIONS:
        for seed in range(3):
            g = torch.Generator().manual_seed(seed)
            tracks = tracks_for(motion, sprite.footprint(), size=32, frames=8, generator=g)
            clip = render_clip(sprite, tracks, size=32)
            moved = [replace(t, x=t.x + 4, y=t.y + 4) for t in tracks]
            wider = render_clip(sprite, moved, size=40)
            inside = wider[..., 4:36, 4:36]
            assert wider.sum() == inside.sum(), f"{motion} leaves the frame"
            assert (inside.int() - clip.int()).abs().max() <= 1, motion


def test_translation_copies_the_first_frame_exactly():
    sprite = grey_sprite(bar())
    g = torch.Generator().manual_seed(0)
    (track,) = tracks_for("moving down-right", sprite.footprint(), size=32, frames=8, generator=g)
    clip = render_clip(sprite, [track], size=32)
    dx, dy = int(track.x[-1] - track.x[0]), int(track.y[-1] - track.y[0])
    assert dx > 0 and dx == dy
    assert torch.equal(clip[-1][:, dy:, dx:], clip[0][:, : 32 - dy, : 32 - dx])


def test_unknown_motion_and_too_few_frames():
    sprite = grey_sprite(bar())
    g = torch.Generator().manual_seed(0)
    with pytest.raises(ValueError, match="unknown motion 'spinning'"):
        tracks_for("spinning", sprite.footprint(), size=32, frames=8, generator=g)
    with pytest.raises(ValueError, match="at least 2 frames"):
        tracks_for("bouncing", sprite.footprint(), size=32, frames=1, generator=g)
    with pytest.raises(ValueError, match="unknown motion"):
        caption_of("bag", "spinning")
