"""U-Net in the DDPM / ADM style for pixel-space diffusion.

Ho et al. 2020 ("Denoising Diffusion Probabilistic Models", the CIFAR-10 U-Net); Nichol &
Dhariwal 2021 ("Improved DDPM", learned variance); Dhariwal & Nichol 2021 ("Diffusion Models
Beat GANs", ADM: scale-shift norm, BigGAN up/down blocks, head width 64). Cross-attention to a
token context follows LDM (Rombach et al. 2022); low-resolution conditioning by concatenation
follows SR3 (Saharia et al. 2021) and CDM (Ho et al. 2022): see ``layers.concat_low_res``.

The network maps ``(x_t, c_noise, cond)`` to an output shaped like ``x_t`` (twice the channels
with ``learn_sigma``); it knows nothing of schedules or prediction types.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from pixdiff.conditioning import Cond
from pixdiff.nets.checks import (
    broadcast_c_noise,
    check_config_ints,
    check_net_inputs,
    config_from_dict,
    config_to_dict,
    input_channels,
    required_cond,
)
from pixdiff.nets.layers import CondEmbedder, group_norm, network_input, zero_module
from pixdiff.nets.unet_blocks import (
    AttentionBlock,
    Downsample,
    EmbedSequential,
    Resample,
    ResBlock,
    Upsample,
)

# ``hook(i, h) -> h`` on the output h of the U-Net's block i (input blocks, middle, output
# blocks, numbered in forward order).
BlockHook = Callable[[int, Tensor], Tensor]


@dataclass(frozen=True)
class UNetConfig:
    """Hyper-parameters of :class:`UNet`; round-trips through JSON via to_dict / from_dict.

    Attributes:
        in_channels, out_channels: image channels in and out (out doubled by ``learn_sigma``).
        image_size: training resolution; attention resolutions refer to it.
        model_channels: width of the first level; level i has ``model_channels * channel_mult[i]``.
        channel_mult: per-level width multipliers; ``len`` is the number of levels.
        num_res_blocks: residual blocks per level in the encoder (decoder has one more).
        attention_resolutions: feature-map sizes (in pixels, e.g. (16,)) that get attention.
        num_heads: attention heads, used when ``head_channels`` is 0.
        head_channels: channels per head (ADM uses 64); 0 = use ``num_heads``.
        dropout: dropout before the last conv of each residual block.
        scale_shift_norm: ADM adaptive GroupNorm ``norm(h) * (1 + scale) + shift``; False =
            DDPM's additive embedding ``norm(h + emb)``.
        resblock_updown: BigGAN-style residual blocks for resampling instead of plain convs.
        num_groups: GroupNorm groups (fewer are used when a width is not divisible).
        num_classes: class-conditional with this many classes (0 = no labels).
        context_dim: width of cross-attention context tokens (0 = no cross-attention).
        pooled_dim: width of a pooled embedding added to the timestep embedding (0 = none).
        learn_sigma: output twice ``out_channels`` (iDDPM learned variance).
        low_res_channels: channels of ``cond.low_res`` concatenated to the input (0 = none).
        guidance_embed: take the guidance scale ``cond.guidance`` as an input (a student of
            guided distillation, Meng et al. 2023); off for every trained model.
        self_condition: also take the previous x0 estimate ``cond.self_cond`` as
            ``in_channels`` more input channels (Chen et al. 2023, "Analog Bits", Sec. 3).
        control_channels: channels of the control map ``cond.control`` concatenated to the
            input (InstructPix2Pix, Brooks et al. 2023, Sec. 3.2; 0 = none).
    """

    in_channels: int = 3
    out_channels: int = 3
    image_size: int = 32
    model_channels: int = 128
    channel_mult: tuple[int, ...] = (1, 2, 2, 2)
    num_res_blocks: int = 2
    attention_resolutions: tuple[int, ...] = (16,)
    num_heads: int = 4
    head_channels: int = 0
    dropout: float = 0.0
    scale_shift_norm: bool = True
    resblock_updown: bool = False
    num_groups: int = 32
    num_classes: int = 0
    context_dim: int = 0
    pooled_dim: int = 0
    learn_sigma: bool = False
    low_res_channels: int = 0
    guidance_embed: bool = False
    self_condition: bool = False
    control_channels: int = 0

    def __post_init__(self) -> None:
        check_config_ints(
            self,
            positive=("in_channels", "out_channels", "image_size", "model_channels")
            + ("num_res_blocks", "num_heads", "num_groups"),
            non_negative=("head_channels", "num_classes", "context_dim", "pooled_dim")
            + ("low_res_channels", "control_channels"),
        )
        if not self.channel_mult or min(self.channel_mult) < 1:
            raise ValueError(f"channel_mult must be positive ints, got {self.channel_mult}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")
        if self.image_size % self.size_multiple:
            raise ValueError(
                f"image_size {self.image_size} is not divisible by {self.size_multiple} "
                f"= 2**(levels-1) for channel_mult {self.channel_mult}"
            )
        unused = [r for r in self.attention_resolutions if r not in self.resolutions]
        if unused:
            raise ValueError(
                f"attention_resolutions {unused} never occur: the levels of this U-Net have "
                f"resolutions {self.resolutions} (set attention_resolutions with image_size)"
            )
        attended = [r in self.attention_resolutions for r in self.resolutions[:-1]] + [True]
        for mult, attention in zip(self.channel_mult, attended, strict=True):
            if attention:
                self.heads(self.model_channels * mult)

    @property
    def size_multiple(self) -> int:
        """H and W must be multiples of this: 2**(levels - 1)."""
        return 2 ** (len(self.channel_mult) - 1)

    @property
    def resolutions(self) -> tuple[int, ...]:
        """Feature-map size of each level at ``image_size``."""
        return tuple(self.image_size >> level for level in range(len(self.channel_mult)))

    @property
    def emb_dim(self) -> int:
        """Width of the timestep embedding: 4 x model_channels (DDPM, ADM)."""
        return 4 * self.model_channels

    @property
    def total_out_channels(self) -> int:
        return self.out_channels * (2 if self.learn_sigma else 1)

    def heads(self, channels: int) -> int:
        """Number of attention heads for a block of ``channels`` channels."""
        divisor = self.head_channels or self.num_heads
        if channels % divisor:
            raise ValueError(
                f"{channels} attention channels cannot be split into heads with num_heads="
                f"{self.num_heads}, head_channels={self.head_channels}"
            )
        return channels // self.head_channels if self.head_channels else self.num_heads

    def to_dict(self) -> dict[str, Any]:
        return config_to_dict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> UNetConfig:
        return config_from_dict(cls, d)


# ----------------------------------------------------------------------------- network


class UNet(nn.Module):
    """DDPM / ADM U-Net: ``net(x_t, c_noise, cond) -> (N, out_channels [x2], H, W)``.

    Encoder levels of ``num_res_blocks`` residual blocks (attention at the configured
    resolutions) and a 2x downsample; a middle ResBlock-Attention-ResBlock; a decoder mirroring
    the encoder with one extra block per level, each consuming a skip connection (Ho et al. 2020,
    Appendix B; Dhariwal & Nichol 2021, Section 3). The output conv is zero-initialised, so a
    fresh network outputs exactly zero.
    """

    def __init__(self, config: UNetConfig):
        super().__init__()
        self.config = config
        c = config
        self.embed = CondEmbedder(
            c.emb_dim,
            freq_dim=c.model_channels,
            num_classes=c.num_classes,
            pooled_dim=c.pooled_dim,
            low_res_noise=c.low_res_channels > 0,
            guidance=c.guidance_embed,
        )
        self.input_blocks, skip_channels = self._build_encoder()
        self.skip_channels = tuple(skip_channels)  # width of each skip connection, in order
        top = c.model_channels * c.channel_mult[-1]
        self.middle = EmbedSequential(self._res(top, top), self._attn(top), self._res(top, top))
        self.output_blocks = self._build_decoder(skip_channels)
        ch = c.model_channels * c.channel_mult[0]
        self.out = nn.Sequential(
            group_norm(ch, max_groups=c.num_groups),
            nn.SiLU(),
            zero_module(nn.Conv2d(ch, c.total_out_channels, 3, padding=1)),
        )

    # -- construction

    def _res(self, in_ch: int, out_ch: int, resample: Resample = "none") -> ResBlock:
        c = self.config
        return ResBlock(
            in_ch,
            out_ch,
            c.emb_dim,
            dropout=c.dropout,
            scale_shift_norm=c.scale_shift_norm,
            num_groups=c.num_groups,
            resample=resample,
        )

    def _attn(self, ch: int) -> AttentionBlock:
        c = self.config
        return AttentionBlock(
            ch, num_heads=c.heads(ch), context_dim=c.context_dim, num_groups=c.num_groups
        )

    def _resampler(self, ch: int, mode: Resample) -> nn.Module:
        if self.config.resblock_updown:
            return self._res(ch, ch, mode)
        return Upsample(ch) if mode == "up" else Downsample(ch)

    def _build_encoder(self) -> tuple[nn.ModuleList, list[int]]:
        """Input conv and the encoder levels; returns the blocks and their output widths."""
        c = self.config
        ch = c.model_channels * c.channel_mult[0]
        blocks = [EmbedSequential(nn.Conv2d(input_channels(c), ch, 3, padding=1))]
        skips = [ch]
        for level, mult in enumerate(c.channel_mult):
            for _ in range(c.num_res_blocks):
                layers: list[nn.Module] = [self._res(ch, c.model_channels * mult)]
                ch = c.model_channels * mult
                if c.resolutions[level] in c.attention_resolutions:
                    layers.append(self._attn(ch))
                blocks.append(EmbedSequential(*layers))
                skips.append(ch)
            if level < len(c.channel_mult) - 1:
                blocks.append(EmbedSequential(self._resampler(ch, "down")))
                skips.append(ch)
        return nn.ModuleList(blocks), skips

    def _build_decoder(self, skips: list[int]) -> nn.ModuleList:
        """Decoder levels; each block concatenates one encoder skip (consumed in reverse)."""
        c = self.config
        skips = list(skips)
        ch = c.model_channels * c.channel_mult[-1]
        blocks = []
        for level, mult in reversed(list(enumerate(c.channel_mult))):
            for i in range(c.num_res_blocks + 1):
                layers: list[nn.Module] = [self._res(ch + skips.pop(), c.model_channels * mult)]
                ch = c.model_channels * mult
                if c.resolutions[level] in c.attention_resolutions:
                    layers.append(self._attn(ch))
                if level > 0 and i == c.num_res_blocks:
                    layers.append(self._resampler(ch, "up"))
                blocks.append(EmbedSequential(*layers))
        return nn.ModuleList(blocks)

    # -- forward

    def forward(
        self,
        x: Tensor,
        c_noise: Tensor,
        cond: Cond | None = None,
        *,
        residuals: tuple[list[Tensor], Tensor] | None = None,
        block_hook: BlockHook | None = None,
    ) -> Tensor:
        """Predict the network output for noisy images.

        Args:
            x: (N, in_channels, H, W) noisy images, H and W multiples of 2**(levels-1).
            c_noise: (N,) float noise conditioning, or a scalar broadcast to N.
            cond: the conditioning this net was built for (label / context / pooled / low_res).
            residuals: (one per skip connection, one for the middle block's output), added to
                them before the decoder: a ControlNet adapter's outputs (Zhang et al. 2023,
                Sec. 3.2; :mod:`pixdiff.nets.control`).
            block_hook: ``hook(i, h) -> h`` applied to the output of block i, numbered over
                the input blocks, the middle block and the output blocks in forward order; a
                video U-Net inserts its temporal layers here (:mod:`pixdiff.nets.video_unet`).

        Returns:
            (N, out_channels * (2 if learn_sigma else 1), H, W).
        """
        c_noise = broadcast_c_noise(c_noise, x.shape[0], x.device)
        cond = self._check_inputs(x, cond)
        args = (self.embed(c_noise, cond), cond.context, cond.context_mask)  # emb (N, emb_dim)
        h = network_input(x, cond, self.config)
        skips, h = encode(self.input_blocks, self.middle, h, args, block_hook=block_hook)
        if residuals is not None:
            skips = [s + r for s, r in zip(skips, residuals[0], strict=True)]
            h = h + residuals[1]
        first = len(self.input_blocks) + 1  # number of the first output block
        for i, block in enumerate(self.output_blocks):
            h = block(torch.cat([h, skips.pop()], dim=1), *args)
            if block_hook is not None:
                h = block_hook(first + i, h)
        return self.out(h)

    def required_cond(self) -> list[str]:
        """Names of the Cond fields this network needs on every call."""
        return required_cond(self.config)

    def _check_inputs(self, x: Tensor, cond: Cond | None) -> Cond:
        return check_net_inputs(
            x, cond, self.config, multiple=self.config.size_multiple, who="UNet"
        )


def encode(
    blocks: nn.ModuleList,
    middle: nn.Module,
    h: Tensor,
    args: tuple,
    hint: Tensor | None = None,
    *,
    block_hook: BlockHook | None = None,
) -> tuple[list[Tensor], Tensor]:
    """The U-Net's encoder and middle block on the network input h: (the skip connections, the
    middle block's output). ``hint`` (a ControlNet's encoded map, Zhang et al. 2023) is added
    after the input conv, so it also reaches the first skip connection; ``block_hook`` as in
    :meth:`UNet.forward` (its output is what the skip connection carries)."""
    skips = []
    for i, block in enumerate(blocks):
        h = block(h, *args)
        if i == 0 and hint is not None:
            h = h + hint
        if block_hook is not None:
            h = block_hook(i, h)
        skips.append(h)
    h = middle(h, *args)
    return skips, h if block_hook is None else block_hook(len(blocks), h)
