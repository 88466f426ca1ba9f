"""The blocks of the DDPM / ADM U-Net: residual blocks with a noise embedding, resampling, and
spatial self- and cross-attention (Ho et al. 2020; Dhariwal & Nichol 2021; LDM, Rombach et al.
2022). :class:`ResBlock` is also the block of the noise-conditional classifier."""

from __future__ import annotations

from typing import Literal

import torch.nn.functional as F
from torch import Tensor, nn

from pixdiff.nets.layers import CrossAttention, SelfAttention, group_norm, zero_module

Resample = Literal["none", "up", "down"]


def _resample(x: Tensor, mode: Resample) -> Tensor:
    """Parameter-free 2x resampling used inside BigGAN-style residual blocks (ADM)."""
    if mode == "up":
        return F.interpolate(x, scale_factor=2.0, mode="nearest")
    if mode == "down":
        return F.avg_pool2d(x, kernel_size=2)
    return x


class ResBlock(nn.Module):
    """Residual block with a noise-embedding input (DDPM ``ResnetBlock``; ADM ``ResBlock``).

    ``x -> GN -> SiLU -> [resample] -> conv -> (+emb | FiLM) -> GN -> SiLU -> dropout -> conv``,
    the last conv zero-initialised, plus a (1x1 conv) skip.
    """

    def __init__(
        self,
        in_ch: int,
        out_ch: int,
        emb_dim: int,
        *,
        dropout: float,
        scale_shift_norm: bool,
        num_groups: int,
        resample: Resample = "none",
    ):
        super().__init__()
        self.resample = resample
        self.scale_shift_norm = scale_shift_norm
        self.in_norm = group_norm(in_ch, max_groups=num_groups)
        self.in_conv = nn.Conv2d(in_ch, out_ch, 3, padding=1)
        self.emb_proj = nn.Linear(emb_dim, out_ch * (2 if scale_shift_norm else 1))
        self.out_norm = group_norm(out_ch, max_groups=num_groups)
        self.dropout = nn.Dropout(dropout)
        self.out_conv = zero_module(nn.Conv2d(out_ch, out_ch, 3, padding=1))
        self.skip = nn.Identity() if in_ch == out_ch else nn.Conv2d(in_ch, out_ch, 1)

    def forward(self, x: Tensor, emb: Tensor) -> Tensor:
        """x (N, in_ch, H, W), emb (N, emb_dim) -> (N, out_ch, H', W')."""
        h = self.in_conv(_resample(F.silu(self.in_norm(x)), self.resample))
        e = self.emb_proj(F.silu(emb))[:, :, None, None].to(h.dtype)  # (N, C or 2C, 1, 1)
        if self.scale_shift_norm:
            scale, shift = e.chunk(2, dim=1)
            h = self.out_norm(h) * (1 + scale) + shift
        else:
            h = self.out_norm(h + e)
        h = self.out_conv(self.dropout(F.silu(h)))
        return self.skip(_resample(x, self.resample)) + h


class Downsample(nn.Module):
    """Stride-2 3x3 conv (DDPM, ADM with ``conv_resample``)."""

    def __init__(self, ch: int):
        super().__init__()
        self.conv = nn.Conv2d(ch, ch, 3, stride=2, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(x)


class Upsample(nn.Module):
    """Nearest-neighbour 2x upsampling followed by a 3x3 conv (DDPM, ADM)."""

    def __init__(self, ch: int):
        super().__init__()
        self.conv = nn.Conv2d(ch, ch, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


def to_tokens(x: Tensor) -> Tensor:
    """(N, C, H, W) -> (N, H * W, C)."""
    return x.flatten(2).transpose(1, 2)


def to_map(tokens: Tensor, height: int, width: int) -> Tensor:
    """(N, H * W, C) -> (N, C, H, W)."""
    n, _, c = tokens.shape
    return tokens.transpose(1, 2).reshape(n, c, height, width)


class AttentionBlock(nn.Module):
    """Spatial self-attention (DDPM, ADM), plus cross-attention to a context when configured.

    Each sub-layer is a pre-GroupNorm residual branch with a zero-initialised output projection.
    """

    def __init__(self, ch: int, *, num_heads: int, context_dim: int, num_groups: int):
        super().__init__()
        self.norm = group_norm(ch, max_groups=num_groups)
        self.attn = SelfAttention(ch, num_heads=num_heads, zero_init_out=True)
        self.cross_norm = group_norm(ch, max_groups=num_groups) if context_dim else None
        self.cross = (
            CrossAttention(ch, context_dim, num_heads=num_heads, zero_init_out=True)
            if context_dim
            else None
        )

    def forward(self, x: Tensor, context: Tensor | None, context_mask: Tensor | None) -> Tensor:
        """x (N, C, H, W); context (N, L, D) or None; context_mask (N, L) bool or None."""
        height, width = x.shape[-2:]
        x = x + to_map(self.attn(to_tokens(self.norm(x))), height, width)
        if self.cross is not None:
            tokens = to_tokens(self.cross_norm(x))  # (N, H * W, C)
            x = x + to_map(self.cross(tokens, context, context_mask), height, width)
        return x


class EmbedSequential(nn.Sequential):
    """Runs layers in order, giving each the inputs it takes (ADM ``TimestepEmbedSequential``)."""

    def forward(
        self, h: Tensor, emb: Tensor, context: Tensor | None, context_mask: Tensor | None
    ) -> Tensor:
        for layer in self:
            if isinstance(layer, ResBlock):
                h = layer(h, emb)
            elif isinstance(layer, AttentionBlock):
                h = layer(h, context, context_mask)
            else:
                h = layer(h)
        return h
