"""Networks: ``net(x_t, c_noise, cond) -> tensor shaped like x_t`` (DDPM/ADM U-Net, DiT)."""

from pixdiff.nets.dit import DiT, DiTConfig
from pixdiff.nets.registry import PRESETS, build_net, count_parameters, preset
from pixdiff.nets.unet import UNet, UNetConfig

__all__ = [
    "PRESETS",
    "DiT",
    "DiTConfig",
    "UNet",
    "UNetConfig",
    "build_net",
    "count_parameters",
    "preset",
]
