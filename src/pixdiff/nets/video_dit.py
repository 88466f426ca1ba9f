"""Space-time DiT with factorised attention: the image DiT's blocks attend within each frame,
and after each of them a temporal block attends across the frames at each patch position
(divided space-time attention, TimeSformer, Bertasius et al. 2021, Sec. 3; spatial and temporal
Transformer blocks interleaved as Latte's variant 1, Ma et al. 2024, Sec. 3.2).

A temporal block is a :class:`.dit.DiTBlock` (adaLN-Zero, Peebles & Xie 2023) over the
sequence of a patch position's F frames, without cross-attention, with a relative position bias
giving the frame order (:mod:`.temporal`; there is no temporal position embedding). Its
modulation starts at zero, so its gates do and the block is the identity: a fresh video DiT,
or one given an image DiT's weights (:func:`pixdiff.nets.video.init_from_image`), is exactly the
image DiT on every frame. The image DiT is the submodule ``spatial``.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor, nn

from pixdiff.nets.dit import DiT, DiTBlock, DiTConfig, TokenHook, init_linears
from pixdiff.nets.layers import zero_module
from pixdiff.nets.temporal import across_frames, attention_bias, position_bias, within_frames
from pixdiff.nets.video import TemporalOptions, VideoNet, zero_known_inputs


@dataclass(frozen=True)
class VideoDiTConfig(TemporalOptions, DiTConfig):
    """Hyper-parameters of :class:`VideoDiT`: every :class:`DiTConfig` field (the per-frame DiT;
    ``depth`` spatial blocks, each followed by a temporal block of the same width, heads, MLP
    ratio and qk-norm) and the :class:`TemporalOptions` fields."""

    def __post_init__(self) -> None:
        DiTConfig.__post_init__(self)
        self.check_temporal()

    def image_config(self) -> DiTConfig:
        """The per-frame image DiT's config (this one less the video fields)."""
        return DiTConfig(**self.spatial_fields(DiTConfig))


class TemporalBlock(nn.Module):
    """A DiT block over the frames at each patch position, with a relative position bias."""

    def __init__(self, config: VideoDiTConfig):
        super().__init__()
        c = config
        self.block = DiTBlock(
            c.hidden_size,
            num_heads=c.num_heads,
            mlp_ratio=c.mlp_ratio,
            context_dim=0,
            qk_norm=c.qk_norm,
        )
        self.position = position_bias(c, c.num_heads)
        init_linears(self.block)  # as DiT.initialize_weights
        zero_module(self.block.adaLN_modulation[-1])  # adaLN-Zero: the block starts as identity

    def forward(self, tokens: Tensor, c: Tensor, frames: int, independent: Tensor | None) -> Tensor:
        """tokens (B * F, T, D), c (B * F, D), independent (B,) bool or None -> (B * F, T, D).

        The conditioning vector is the clip's (c_noise and cond are per clip), so the first
        frame's stands for all of the clip's sequences.
        """
        positions = tokens.shape[1]
        sequences = across_frames(tokens, frames)  # (B * T, F, D)
        c_clip = c[::frames].repeat_interleave(positions, dim=0)  # (B * T, D)
        bias = attention_bias(self.position, frames, independent, positions=positions)
        out = self.block(sequences, c_clip, None, None, bias=bias)
        return within_frames(out, positions)


class VideoDiT(VideoNet):
    """Space-time DiT: ``net(x_t, c_noise, cond, independent_frames=None)`` on clips
    (B, F, C, H, W) -> (B, F, C [x2], H, W); arguments as :meth:`.video.VideoNet.forward`."""

    def __init__(self, config: VideoDiTConfig):
        super().__init__()
        self.config = config
        self.spatial = DiT(config.image_config())
        self.temporal = nn.ModuleList(TemporalBlock(config) for _ in range(config.depth))
        zero_known_inputs(self)

    def input_conv(self) -> nn.Conv2d:
        embed = self.spatial.x_embedder  # a conv, or a bottleneck's two (JiT)
        return embed if isinstance(embed, nn.Conv2d) else embed[0]

    def block_hook(self, frames: int, independent: Tensor | None) -> TokenHook:
        """Run temporal block i after spatial block i."""

        def temporal(i: int, tokens: Tensor, c: Tensor) -> Tensor:
            return self.temporal[i](tokens, c, frames, independent)

        return temporal
