"""Networks: ``net(x_t, c_noise, cond) -> tensor shaped like x_t`` (DDPM/ADM U-Net, DiT, and
their video forms on (B, F, C, H, W) clips), and the text encoders that turn prompts into their
``cond``."""

from pixdiff.nets.dit import DiT, DiTConfig
from pixdiff.nets.prompts import PromptEncoder
from pixdiff.nets.registry import PRESETS, build_net, count_parameters, preset
from pixdiff.nets.text import ByteTokenizer, TextConditionedNet, TextEncoder, build_text_encoder
from pixdiff.nets.unet import UNet, UNetConfig
from pixdiff.nets.video import init_from_image
from pixdiff.nets.video_dit import VideoDiT, VideoDiTConfig
from pixdiff.nets.video_unet import VideoUNet, VideoUNetConfig

__all__ = [
    "PRESETS",
    "ByteTokenizer",
    "DiT",
    "DiTConfig",
    "PromptEncoder",
    "TextConditionedNet",
    "TextEncoder",
    "UNet",
    "UNetConfig",
    "VideoDiT",
    "VideoDiTConfig",
    "VideoUNet",
    "VideoUNetConfig",
    "build_net",
    "build_text_encoder",
    "count_parameters",
    "init_from_image",
    "preset",
]
