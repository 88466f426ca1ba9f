"""Factorised space-time U-Net for video diffusion (Ho et al. 2022a, "Video Diffusion Models",
Sec. 3): the image U-Net's 2-D layers applied to every frame, with temporal layers after the
blocks at chosen resolutions, a kernel-3 convolution over frames (Make-A-Video, Singer et al.
2022, Sec. 3.2; Imagen Video, Ho et al. 2022b) then attention over frames with a relative
position bias (:mod:`.temporal`).

The image U-Net is a submodule, ``spatial``, with its own state-dict keys under ``spatial.``:
an image U-Net's weights load into it (:func:`pixdiff.nets.video.init_from_image`), and since
every temporal layer's output starts at zero the result is exactly that image model on each
frame. The temporal layers run through :meth:`UNet.forward`'s ``block_hook``.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor, nn

from pixdiff.nets.temporal import TemporalAttention, TemporalConv
from pixdiff.nets.unet import BlockHook, UNet, UNetConfig
from pixdiff.nets.unet_blocks import Downsample, ResBlock, Upsample
from pixdiff.nets.video import TemporalOptions, VideoNet, zero_known_inputs


@dataclass(frozen=True)
class VideoUNetConfig(TemporalOptions, UNetConfig):
    """Hyper-parameters of :class:`VideoUNet`: every :class:`UNetConfig` field (the per-frame
    U-Net), the :class:`TemporalOptions` fields, and where the temporal layers go.

    Attributes:
        temporal_conv_resolutions: feature-map sizes (as ``attention_resolutions``) whose
            blocks are followed by a temporal convolution.
        temporal_attention_resolutions: feature-map sizes whose blocks are followed by
            temporal attention (heads as the spatial attention's: ``num_heads`` /
            ``head_channels``).
    """

    temporal_conv_resolutions: tuple[int, ...] = (32, 16, 8, 4)
    temporal_attention_resolutions: tuple[int, ...] = (16, 8, 4)

    def __post_init__(self) -> None:
        UNetConfig.__post_init__(self)
        self.check_temporal()
        for name in ("temporal_conv_resolutions", "temporal_attention_resolutions"):
            unused = [r for r in getattr(self, name) if r not in self.resolutions]
            if unused:
                raise ValueError(
                    f"{name} {unused} never occur: the levels of this U-Net have resolutions "
                    f"{self.resolutions} (set {name} with image_size)"
                )
        mults = self.channel_mult
        for level, size in enumerate(self.resolutions):
            if size in self.temporal_attention_resolutions:  # widths of blocks at this size
                for mult in {mults[level], mults[min(level + 1, len(mults) - 1)]}:
                    self.heads(self.model_channels * mult)

    def image_config(self) -> UNetConfig:
        """The per-frame image U-Net's config (this one less the video fields)."""
        return UNetConfig(**self.spatial_fields(UNetConfig))


def block_outputs(unet: UNet) -> list[tuple[int, int]]:
    """(channels, feature-map size at ``image_size``) of each block's output, in the
    numbering of :meth:`UNet.forward`'s ``block_hook``: input blocks, middle, output blocks."""
    size, channels, outputs = unet.config.image_size, 0, []
    for block in [*unet.input_blocks, unet.middle, *unet.output_blocks]:
        for layer in block:
            if isinstance(layer, nn.Conv2d):  # the input conv
                channels = layer.out_channels
            elif isinstance(layer, ResBlock):
                channels = layer.out_conv.out_channels
                size = {"up": 2 * size, "down": size // 2}.get(layer.resample, size)
            elif isinstance(layer, (Downsample, Upsample)):
                size = size // 2 if isinstance(layer, Downsample) else 2 * size
        outputs.append((channels, size))
    return outputs


class TemporalLayers(nn.Module):
    """The temporal layers after one U-Net block: a convolution over frames, then attention
    over frames (either may be absent), as Make-A-Video's conv-then-attention order."""

    def __init__(self, ch: int, config: VideoUNetConfig, *, conv: bool, attention: bool):
        super().__init__()
        groups = config.num_groups
        self.conv = TemporalConv(ch, num_groups=groups) if conv else None
        self.attn = (
            TemporalAttention(ch, num_heads=config.heads(ch), num_groups=groups, options=config)
            if attention
            else None
        )

    def forward(self, h: Tensor, frames: int, independent: Tensor | None) -> Tensor:
        """h (B * F, C, H, W) -> (B * F, C, H, W)."""
        if self.conv is not None:
            h = self.conv(h, frames, independent)
        if self.attn is not None:
            h = self.attn(h, frames, independent)
        return h


class VideoUNet(VideoNet):
    """Factorised 3D U-Net: ``net(x_t, c_noise, cond, independent_frames=None)`` on clips
    (B, F, C, H, W) -> (B, F, out_channels [x2], H, W) (Ho et al. 2022a, Sec. 3); arguments
    as :meth:`.video.VideoNet.forward`.

    Temporal layers follow every block (input blocks after the input conv, the middle block,
    output blocks) whose output size is in the config's temporal resolutions; they act on the
    block's output, which the encoder's skip connections carry on.
    """

    def __init__(self, config: VideoUNetConfig):
        super().__init__()
        self.config = config
        self.spatial = UNet(config.image_config())
        layers = {}
        for i, (ch, size) in enumerate(block_outputs(self.spatial)):
            conv = size in config.temporal_conv_resolutions
            attention = size in config.temporal_attention_resolutions
            if i > 0 and (conv or attention):
                layers[str(i)] = TemporalLayers(ch, config, conv=conv, attention=attention)
        self.temporal = nn.ModuleDict(layers)
        zero_known_inputs(self)

    def input_conv(self) -> nn.Conv2d:
        return self.spatial.input_blocks[0][0]

    def block_hook(self, frames: int, independent: Tensor | None) -> BlockHook:
        """Run block i's temporal layers, if it has any, on its output."""

        def temporal(i: int, h: Tensor) -> Tensor:
            layers = self.temporal[str(i)] if str(i) in self.temporal else None
            return h if layers is None else layers(h, frames, independent)

        return temporal
