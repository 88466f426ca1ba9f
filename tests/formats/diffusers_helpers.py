"""Helpers of the export / import tests: tiny diffusers folders and diffusers' own DDIM loop."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

diffusers = pytest.importorskip("diffusers", reason="diffusers is the optional interop extra")


def tiny_unet2d(**overrides) -> torch.nn.Module:
    """A random 8x8 RGB UNet2DModel (two levels, attention in the second), eval mode."""
    torch.manual_seed(0)
    options = dict(
        sample_size=8, in_channels=3, out_channels=3, block_out_channels=(8, 16),
        layers_per_block=1, down_block_types=("DownBlock2D", "AttnDownBlock2D"),
        up_block_types=("AttnUpBlock2D", "UpBlock2D"), norm_num_groups=4, attention_head_dim=4,
    )  # fmt: skip
    return diffusers.UNet2DModel(**{**options, **overrides}).eval()


def save_pipeline(folder: Path, unet, scheduler: dict | None = None, *, safe: bool = True) -> Path:
    """A diffusers pipeline folder as ``save_pretrained`` writes it: unet/, scheduler/ and
    model_index.json; ``scheduler`` is a DDIMScheduler config (diffusers' defaults if None)."""
    unet.save_pretrained(folder / "unet", safe_serialization=safe)
    diffusers.DDIMScheduler(**(scheduler or {})).save_pretrained(folder / "scheduler")
    index = {"_class_name": "DDIMPipeline", "unet": ["diffusers", "UNet2DModel"],
             "scheduler": ["diffusers", "DDIMScheduler"]}  # fmt: skip
    (folder / "model_index.json").write_text(json.dumps(index))
    return folder


def diffusers_ddim(unet, scheduler, noise, steps, *, labels=None, null=None, guidance=1.0):
    """diffusers' own DDIM loop (DDIMPipeline's, with classifier-free guidance when labels are
    given): the reference pixdiff's samples are held to."""
    scheduler.set_timesteps(steps)
    x = noise.clone()
    with torch.no_grad():
        for t in scheduler.timesteps:
            if labels is None:
                out = unet(x, t).sample
            else:
                both = torch.cat([labels, torch.full_like(labels, null)])
                cond, uncond = unet(torch.cat([x, x]), t, class_labels=both).sample.chunk(2)
                out = uncond + guidance * (cond - uncond)
            x = scheduler.step(out, t, x).prev_sample
    return x


def randomized(net: torch.nn.Module) -> torch.nn.Module:
    """``net`` in eval mode with N(0, 0.05^2) added to every weight (zero-initialised ones too)."""
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in net.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=gen))
    return net.eval()
