"""Named network configurations and the config -> network factory.

Each published preset cites its paper and the parameter count the paper reports; counts
measured with :func:`count_parameters` (tested in ``tests/nets/test_nets_registry.py``) are
given next to them. Presets are plain frozen configs: override any field with
``preset(name, in_channels=1, image_size=28, num_classes=10)``.
"""

from __future__ import annotations

import dataclasses

from torch import nn

from pixdiff.nets.dit import DiT, DiTConfig
from pixdiff.nets.unet import UNet, UNetConfig
from pixdiff.nets.video_dit import VideoDiT, VideoDiTConfig
from pixdiff.nets.video_unet import VideoUNet, VideoUNetConfig

# A video config is its image config plus temporal fields (a subclass): anything that sizes an
# image network from a config sizes the video network's per-frame part alike.
NetConfig = UNetConfig | DiTConfig | VideoUNetConfig | VideoDiTConfig

# DiT sizes (Peebles & Xie 2023, Table 1): (hidden_size, depth, num_heads).
_DIT_SIZES = {"s": (384, 12, 6), "b": (768, 12, 12), "l": (1024, 24, 16), "xl": (1152, 28, 16)}


def _dit_pixels(size: str, patch_size: int) -> DiTConfig:
    """DiT-{size}/{patch} on 64x64x3 pixels, class-conditional ImageNet, learned sigma.

    Published counts (Peebles & Xie 2023, Table 1; latent 32x32x4 input, patch 2): DiT-S 33M,
    DiT-B 130M, DiT-L 458M, DiT-XL 675M. On pixels only the patch embedding and the final
    linear change size (and our fixed position embedding is a buffer, not a parameter).
    """
    hidden, depth, heads = _DIT_SIZES[size]
    return DiTConfig(
        in_channels=3,
        image_size=64,
        patch_size=patch_size,
        hidden_size=hidden,
        depth=depth,
        num_heads=heads,
        num_classes=1000,
        learn_sigma=True,
    )


def _jit_tiny(patch_size: int) -> DiTConfig:
    """A JiT-style pixel Transformer (Li & He 2025) small enough for a 2-core CPU (ours; no
    published counterpart): 32x32x3, width 64, 4 blocks of 4 heads, a 16-channel bottleneck
    patch embedding, 2-D RoPE and qk-norm. Train it as JiT does, x0-prediction with a flow
    velocity loss: ``--formulation flow --set diffusion.prediction=x0 --set
    diffusion.loss_space=flow`` (docs/concepts.md, Section 16)."""
    return DiTConfig(
        in_channels=3,
        image_size=32,
        patch_size=patch_size,
        hidden_size=64,
        depth=4,
        num_heads=4,
        bottleneck_dim=16,
        rope=True,
        qk_norm=True,
    )


PRESETS: dict[str, NetConfig] = {
    # DDPM CIFAR-10 U-Net (Ho et al. 2020, Appendix B): 35.7M published; 35,746,307 here.
    # Additive time embedding, single-head attention at 16x16, dropout 0.1, conv resampling.
    "ddpm-cifar10": UNetConfig(
        in_channels=3,
        out_channels=3,
        image_size=32,
        model_channels=128,
        channel_mult=(1, 2, 2, 2),
        num_res_blocks=2,
        attention_resolutions=(16,),
        num_heads=1,
        dropout=0.1,
        scale_shift_norm=False,
    ),
    # ADM ImageNet 64x64 class-conditional (Dhariwal & Nichol 2021, Table 11 hyper-parameters):
    # 296M published; 295,905,222 here (our label table has one extra null-label row, +768).
    # Learned sigma (hybrid loss, Nichol & Dhariwal 2021), 64 channels per head, BigGAN
    # up/down, scale-shift norm, attention at 32, 16 and 8.
    "adm-64": UNetConfig(
        in_channels=3,
        out_channels=3,
        image_size=64,
        model_channels=192,
        channel_mult=(1, 2, 3, 4),
        num_res_blocks=3,
        attention_resolutions=(32, 16, 8),
        head_channels=64,
        dropout=0.1,
        scale_shift_norm=True,
        resblock_updown=True,
        num_classes=1000,
        learn_sigma=True,
    ),
    # EDM's DDPM++ for CIFAR-10 (Karras et al. 2022, config F; Song et al. 2021 DDPM++):
    # 55.7M published; 57,117,955 here (+2.5%). Our ADM-style U-Net differs from SongUNet in
    # (a) attention after every decoder block at 16x16, SongUNet only after the last (+1.05M);
    # (b) the input conv is 256 wide where SongUNet's is 128 (+0.59M in the first encoder and
    # last decoder block); (c) no 1x1 projection on the resampling blocks' skips (-0.26M);
    # (d) no augmentation-label mapping (-1.2k). Additive embedding, residual resampling.
    "edm-ddpmpp-cifar10": UNetConfig(
        in_channels=3,
        out_channels=3,
        image_size=32,
        model_channels=128,
        channel_mult=(2, 2, 2),
        num_res_blocks=4,
        attention_resolutions=(16,),
        head_channels=64,
        dropout=0.13,
        scale_shift_norm=False,
        resblock_updown=True,
    ),
    # Small nets that train on 2 CPU cores (ours, no published counterpart).
    # unet-tiny: 32x32x3 unconditional, for tests (81,011 params).
    "unet-tiny": UNetConfig(
        in_channels=3,
        out_channels=3,
        image_size=32,
        model_channels=16,
        channel_mult=(1, 1),
        num_res_blocks=1,
        attention_resolutions=(16,),
        num_heads=2,
        num_groups=8,
    ),
    # unet-small: Fashion-MNIST 28x28x1, 10 classes (28 -> 14 -> 7); 1,744,289 params.
    "unet-small": UNetConfig(
        in_channels=1,
        out_channels=1,
        image_size=28,
        model_channels=32,
        channel_mult=(1, 2, 2),
        num_res_blocks=2,
        attention_resolutions=(7,),
        num_heads=4,
        dropout=0.1,
        num_classes=10,
    ),
    # unet-fashion: the shipped Fashion-MNIST model; unet-small with one residual block per
    # level, which trains ~1.5-2x faster on a 2-core CPU (1,192,641 params).
    "unet-fashion": UNetConfig(
        in_channels=1,
        out_channels=1,
        image_size=28,
        model_channels=32,
        channel_mult=(1, 2, 2),
        num_res_blocks=1,
        attention_resolutions=(7,),
        num_heads=4,
        dropout=0.1,
        num_classes=10,
    ),
    # unet-sr-small: 16 -> 64 super-resolution stage of a cascade (SR3 / CDM conditioning);
    # 2,428,355 params.
    "unet-sr-small": UNetConfig(
        in_channels=3,
        out_channels=3,
        image_size=64,
        model_channels=32,
        channel_mult=(1, 2, 2, 2),
        num_res_blocks=2,
        attention_resolutions=(8,),
        num_heads=4,
        low_res_channels=3,
    ),
    # dit-tiny: 32x32x3 unconditional, patch 4 (64 tokens), for tests; 184,560 params.
    "dit-tiny": DiTConfig(
        in_channels=3,
        image_size=32,
        patch_size=4,
        hidden_size=64,
        depth=2,
        num_heads=4,
    ),
    # Video nets (ours, no published counterpart) that train at 32x32 on 8-16 frames on 2 CPU
    # cores. video-unet-tiny: a unet-fashion-sized per-frame U-Net (32 -> 16 -> 8) with a
    # temporal conv after every block and temporal attention at 16 and 8 (VDM, Ho et al.
    # 2022a); 1,427,587 params (1,192,387 of them per-frame), 1,428,995 with 10 classes.
    "video-unet-tiny": VideoUNetConfig(
        in_channels=3,
        out_channels=3,
        image_size=32,
        model_channels=32,
        channel_mult=(1, 2, 2),
        num_res_blocks=1,
        attention_resolutions=(8,),
        num_heads=4,
        num_frames=8,
        temporal_conv_resolutions=(32, 16, 8),
        temporal_attention_resolutions=(16, 8),
    ),
    # video-dit-tiny: patch 4 (64 tokens a frame), width 96, 4 spatial + 4 temporal blocks;
    # 1,401,104 params (731,280 of them per-frame).
    "video-dit-tiny": VideoDiTConfig(
        in_channels=3,
        image_size=32,
        patch_size=4,
        hidden_size=96,
        depth=4,
        num_heads=4,
        num_frames=8,
    ),
}
PRESETS.update(
    {f"dit-{size}-{patch}": _dit_pixels(size, patch) for size in _DIT_SIZES for patch in (2, 4, 8)}
)
# jit-tiny-2 / -4 / -8: 256, 64 and 16 tokens at 32x32.
PRESETS.update({f"jit-tiny-{patch}": _jit_tiny(patch) for patch in (2, 4, 8)})

_NET_CLASSES: dict[type, type[nn.Module]] = {
    UNetConfig: UNet,
    DiTConfig: DiT,
    VideoUNetConfig: VideoUNet,
    VideoDiTConfig: VideoDiT,
}


def build_net(config: NetConfig) -> nn.Module:
    """Build the network a config describes (the class is chosen by the config's type)."""
    cls = _NET_CLASSES.get(type(config))
    if cls is None:
        raise TypeError(
            f"build_net needs one of {[c.__name__ for c in _NET_CLASSES]}, "
            f"got {type(config).__name__}"
        )
    return cls(config)


def preset(name: str, **overrides: object) -> NetConfig:
    """The preset config ``name`` with fields replaced by ``overrides``.

    Overriding a U-Net's ``image_size`` without ``attention_resolutions`` keeps attention at the
    same levels: ``preset("ddpm-cifar10", image_size=64)`` attends at 32x32, level 1, as the
    32x32 original does at 16x16.

    Raises:
        ValueError: unknown preset name or unknown field (the message lists the valid ones).
    """
    if name not in PRESETS:
        raise ValueError(f"unknown network preset {name!r}; valid presets are {sorted(PRESETS)}")
    config = PRESETS[name]
    valid = [f.name for f in dataclasses.fields(config)]
    unknown = sorted(set(overrides) - set(valid))
    if unknown:
        raise ValueError(
            f"unknown {type(config).__name__} fields {unknown} for preset {name!r}; "
            f"valid fields are {valid}"
        )
    return dataclasses.replace(config, **_keep_attention_levels(config, overrides))


# The U-Net fields that name feature-map sizes, kept at their levels by a new image_size.
_RESOLUTION_FIELDS = (
    "attention_resolutions",
    "temporal_conv_resolutions",
    "temporal_attention_resolutions",
)


def _keep_attention_levels(config: NetConfig, overrides: dict[str, object]) -> dict[str, object]:
    """Add attention_resolutions (and a video U-Net's temporal resolutions) for a new U-Net
    image_size, so attention and the temporal layers stay at their levels."""
    size = overrides.get("image_size")
    if not isinstance(config, UNetConfig) or not isinstance(size, int):
        return overrides
    kept = {}
    for name in _RESOLUTION_FIELDS:
        if hasattr(config, name) and name not in overrides:
            levels = [config.resolutions.index(r) for r in getattr(config, name)]
            kept[name] = tuple(size >> level for level in levels)
    return {**overrides, **kept}


def count_parameters(net: nn.Module, *, trainable_only: bool = False) -> int:
    """Number of parameters (buffers such as DiT's fixed position embedding excluded)."""
    return sum(p.numel() for p in net.parameters() if p.requires_grad or not trainable_only)
