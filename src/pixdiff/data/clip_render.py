"""Drawing objects into frames: sprites (premultiplied colour and alpha over a background),
warped by each frame's pose and composited with the "over" operator (Porter and Duff 1984,
"Compositing Digital Images", Sec. 4: with premultiplied colour, A over B is
c = c_A + (1 - alpha_A) c_B and alpha = alpha_A + (1 - alpha_A) alpha_B).

The warp is bilinear sampling (``torch.nn.functional.grid_sample``) at the inverse map of each
output pixel, in float64. An upright, unscaled object at a whole-pixel position samples its
sprite exactly at pixel centres, so such a frame is an exact copy of the sprite.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from pixdiff.data.motions import Footprint, Track


@dataclass(frozen=True)
class Sprite:
    """An object to draw, on the background it is shown against.

    Attributes:
        colour: (C, S, S) float64 in [0, 1], premultiplied by alpha.
        alpha: (1, S, S) float64 in [0, 1]; the object is where alpha > 0.
        background: C values in [0, 1], the colour of the frame around the object.
    """

    colour: Tensor
    alpha: Tensor
    background: tuple[float, ...]

    def __post_init__(self) -> None:
        side = self.alpha.shape[-1]
        if self.alpha.shape != (1, side, side) or self.colour.shape[1:] != (side, side):
            raise ValueError(
                f"a sprite needs colour (C, S, S) and alpha (1, S, S), got "
                f"{tuple(self.colour.shape)} and {tuple(self.alpha.shape)}"
            )
        if len(self.background) != self.colour.shape[0]:
            channels = self.colour.shape[0]
            raise ValueError(f"{len(self.background)} background values, {channels} channels")

    def footprint(self) -> Footprint:
        """The visible pixels' bounding box, centre of mass and reach (:class:`Footprint`);
        the mass is the contrast with the background, what a viewer sees move."""
        alpha = self.alpha[0]
        ys, xs = torch.nonzero(alpha > 0, as_tuple=True)
        if len(xs) == 0:
            raise ValueError("the sprite is empty (alpha is 0 everywhere)")
        # the centre of what is seen: the contrast with the background, frame - background
        background = torch.tensor(self.background, dtype=torch.float64).view(-1, 1, 1)
        ink = (self.colour - background * self.alpha).abs().sum(0)[ys, xs]
        weight = ink if ink.sum() > 0 else alpha[ys, xs]
        cx = float((weight * xs).sum() / weight.sum())
        cy = float((weight * ys).sum() / weight.sum())
        # bilinear sampling spreads a pixel over its neighbours: one pixel of margin
        reach = float(torch.sqrt((xs - cx) ** 2 + (ys - cy) ** 2).max()) + math.sqrt(2)
        return Footprint(
            side=alpha.shape[-1], x0=int(xs.min()), x1=int(xs.max()), y0=int(ys.min()),
            y1=int(ys.max()), com=(cx, cy), radius=reach,
        )  # fmt: skip


def grey_sprite(item: Tensor, *, channels: int = 1) -> Sprite:
    """A white-on-black item (a Fashion-MNIST image, uint8 (1, S, S)) as a sprite on black:
    its brightness is its opacity, so the composite reproduces the item exactly."""
    alpha = item.to(torch.float64) / 255
    return Sprite(alpha.expand(channels, -1, -1).clone(), alpha, (0.0,) * channels)


def sprite_on_white(rgb: Tensor, alpha: Tensor) -> Sprite:
    """An emoji as a sprite on white, from its colours composited on white (uint8 (3, S, S))
    and its alpha (uint8 (1, S, S)): on white, rgb = 1 - alpha + colour, so the premultiplied
    colour is rgb - 1 + alpha (clamped to [0, alpha] against the filters' rounding)."""
    a = alpha.to(torch.float64) / 255
    colour = (rgb.to(torch.float64) / 255 - 1 + a).clamp(min=0)
    return Sprite(torch.minimum(colour, a), a, (1.0, 1.0, 1.0))


def warp(layers: Tensor, com: tuple[float, float], track: Track, size: int) -> Tensor:
    """Sample (L, S, S) sprite layers at each frame's pose: (F, L, size, size).

    Output pixel p comes from sprite point q = R(-angle) (p - corner - com) / scale + com,
    the inverse of placing the sprite's centre of mass at corner + com, rotated and scaled.
    """
    frames, side = len(track.x), layers.shape[-1]
    pixels = torch.arange(size, dtype=torch.float64)
    py, px = torch.meshgrid(pixels, pixels, indexing="ij")  # (H, W)
    view = (frames, 1, 1)
    dx = px - (track.x + com[0]).view(view)  # (F, H, W)
    dy = py - (track.y + com[1]).view(view)
    cos, sin, scale = (v.view(view) for v in (track.angle.cos(), track.angle.sin(), track.scale))
    qx = (cos * dx + sin * dy) / scale + com[0]
    qy = (-sin * dx + cos * dy) / scale + com[1]
    # pixel centres of an S-wide image sit at (2 q + 1) / S - 1 (align_corners=False)
    grid = torch.stack([(2 * qx + 1) / side - 1, (2 * qy + 1) / side - 1], dim=-1)
    source = layers.to(torch.float64).expand(frames, -1, -1, -1)
    return F.grid_sample(source, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def render_clip(sprite: Sprite, tracks: list[Track], *, size: int) -> Tensor:
    """Draw ``sprite`` once per track (later tracks on top) on its background: uint8
    (F, C, size, size)."""
    layers = torch.cat([sprite.colour, sprite.alpha])  # (C + 1, S, S)
    com = sprite.footprint().com
    colour = alpha = None
    for track in tracks:
        drawn = warp(layers, com, track, size) * track.opacity.view(-1, 1, 1, 1)
        c, a = drawn[:, :-1], drawn[:, -1:]
        if colour is None:
            colour, alpha = c, a
        else:  # the new object over what is drawn
            colour, alpha = c + (1 - a) * colour, a + (1 - a) * alpha
    background = torch.tensor(sprite.background, dtype=torch.float64).view(1, -1, 1, 1)
    frames = background * (1 - alpha) + colour
    return (frames * 255).round().clamp(0, 255).to(torch.uint8)
