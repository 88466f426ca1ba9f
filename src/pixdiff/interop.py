"""Interop: drive pixdiff samplers with a diffusers ``UNet2DModel`` loaded from a local folder.

diffusers is an optional extra (``pip install diffusers``); nothing is downloaded: the folder must
hold the model already (``config.json`` + weights), as written by ``save_pretrained``. A pipeline
folder (``unet/`` and ``scheduler/`` inside) works too; its ``scheduler_config.json`` gives the
schedule, prediction type and x0 clip (:mod:`pixdiff.formats.diffusers_scheduler`). Only
safetensors weights load, unless ``allow_pickle`` says the user trusts a ``.bin`` file.

A UNet2DModel that pixdiff's own U-Net can rebuild weight for weight needs none of this:
``pixdiff.load(DIR)`` reads it without diffusers (:mod:`pixdiff.formats.diffusers_import`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from torch import Tensor, nn

from pixdiff.conditioning import Cond, check_supported
from pixdiff.denoiser import Denoiser
from pixdiff.formats.diffusers_scheduler import (
    BETA_SCHEDULES,
    PREDICTION_TYPES,
    read_scheduler,
    schedule_from_diffusers,
)

__all__ = [
    "BETA_SCHEDULES",
    "PREDICTION_TYPES",
    "AdapterConfig",
    "DiffusersUNet",
    "load_diffusers_unet",
    "load_unet2d",
    "schedule_from_diffusers",
]


@dataclass(frozen=True)
class AdapterConfig:
    """What pixdiff reads of a network's config, for a UNet2DModel it does not rebuild: image
    shape and classes (a diffusers class embedding has no null label, so no guidance)."""

    in_channels: int
    image_size: int
    num_classes: int = 0
    learn_sigma: bool = False
    context_dim: int = 0
    pooled_dim: int = 0
    low_res_channels: int = 0
    guidance_embed: bool = False
    self_condition: bool = False


class DiffusersUNet(nn.Module):
    """A diffusers UNet2DModel as a pixdiff network ``net(x_t, c_noise, cond)``."""

    def __init__(self, unet: nn.Module):
        super().__init__()
        self.unet = unet
        c = getattr(unet, "config", None)
        size = getattr(c, "sample_size", None)
        self.config = None if c is None else AdapterConfig(
            in_channels=c.in_channels,
            image_size=size[0] if isinstance(size, (list, tuple)) else size,
            num_classes=c.num_class_embeds or 0,
            learn_sigma=c.out_channels == 2 * c.in_channels,
        )  # fmt: skip

    def forward(self, x: Tensor, c_noise: Tensor, cond: Cond | None = None) -> Tensor:
        check_supported(cond, {"label"}, "a diffusers UNet2DModel")
        labels = cond.label if cond is not None else None
        return self.unet(x, c_noise, class_labels=labels).sample

    def required_cond(self) -> list[str]:
        return ["label"] if self.config is not None and self.config.num_classes else []


def load_unet2d(unet_dir: str | Path, *, device: str = "cpu", allow_pickle: bool = False):
    """diffusers' ``UNet2DModel.from_pretrained`` of a local folder, safetensors only unless
    ``allow_pickle``."""
    try:
        from diffusers import UNet2DModel
    except ImportError:
        raise ValueError(
            f"{unet_dir} is a UNet2DModel that pixdiff's U-Net cannot rebuild; reading it "
            "needs diffusers: pip install diffusers (or pip install 'pixdiff[interop]')"
        ) from None
    unet = UNet2DModel.from_pretrained(
        unet_dir, local_files_only=True, use_safetensors=not allow_pickle
    )
    return unet.to(device).eval().requires_grad_(False)


def load_diffusers_unet(
    path: str | Path,
    *,
    scheduler_config: dict | None = None,
    device: str = "cpu",
    allow_pickle: bool = False,
) -> Denoiser:
    """A Denoiser over a local diffusers UNet2DModel (a model folder or a pipeline folder).

    Args:
        scheduler_config: used when the folder has no ``scheduler/scheduler_config.json``.
        allow_pickle: also load ``diffusion_pytorch_model.bin`` (a pickle) when there is no
            safetensors file; only for a folder whose source you trust.
    """
    path = Path(path)
    unet_dir = path / "unet" if (path / "unet").is_dir() else path
    if not (unet_dir / "config.json").exists():
        raise FileNotFoundError(f"{unet_dir} has no config.json: not a saved UNet2DModel")
    sched_file = path / "scheduler" / "scheduler_config.json"
    if sched_file.exists():
        scheduler_config = json.loads(sched_file.read_text())
    if scheduler_config is None:
        raise ValueError(f"{path} has no scheduler/scheduler_config.json; pass scheduler_config")
    unet = load_unet2d(unet_dir, device=device, allow_pickle=allow_pickle)
    s = read_scheduler(scheduler_config, sched_file if sched_file.exists() else "scheduler_config")
    learn_sigma = unet.config.out_channels == 2 * unet.config.in_channels
    return Denoiser(
        DiffusersUNet(unet), s.schedule, s.prediction, learn_sigma=learn_sigma, clip_x0=s.clip_x0
    )
