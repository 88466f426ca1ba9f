"""``pixdiff export RUN --to diffusers DIR``: a run as a diffusers pipeline folder.

    DIR/model_index.json                         DDIMPipeline (UNet2DModel folders only)
    DIR/unet/config.json                         UNet2DModel, or PixdiffModel (see below)
    DIR/unet/diffusion_pytorch_model.safetensors the weights
    DIR/scheduler/scheduler_config.json          DDIMScheduler: betas, prediction_type,
                                                 timestep_spacing, clip_sample
    DIR/pixdiff.json                             the run's own config.json, for the way back
    DIR/README.md                                how to load it
    DIR/pixdiff_model.py                         PixdiffModel (only when it is the class)

A U-Net on a discrete schedule that diffusers' ``UNet2DModel`` builds weight for weight
(:mod:`.diffusers_unet`) is written as one, so ``UNet2DModel.from_pretrained`` and
``DDIMPipeline.from_pretrained`` load it with no pixdiff installed. Any other network is written
as :class:`~pixdiff.formats.diffusers_model.PixdiffModel` with its module beside it. The time
mapping is :mod:`.diffusers_scheduler`'s.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from pixdiff.checkpoint import LoadedModel, save_tensors
from pixdiff.discrete_schedules import DiscreteSchedule
from pixdiff.files import atomic_write
from pixdiff.formats.diffusers_import import CUSTOM_CLASS, PIXDIFF_JSON, SAFE_WEIGHTS
from pixdiff.formats.diffusers_scheduler import scheduler_config
from pixdiff.formats.diffusers_unet import (
    NoCounterpart,
    unet_state_to_diffusers,
    unet_to_diffusers_config,
)
from pixdiff.nets import UNet

CUSTOM_MODULE = "pixdiff_model.py"
LOAD_NATIVE = """\
import torch
from diffusers import DDIMScheduler, UNet2DModel

unet = UNet2DModel.from_pretrained("{dir}/unet", use_safetensors=True).eval()
scheduler = DDIMScheduler.from_pretrained("{dir}/scheduler")
"""
LOAD_CUSTOM = """\
import sys

import torch
from diffusers import DDIMScheduler

sys.path.insert(0, "{dir}")  # pixdiff_model.py, which needs pixdiff installed
from pixdiff_model import PixdiffModel

unet = PixdiffModel.from_pretrained("{dir}/unet", use_safetensors=True).eval()
scheduler = DDIMScheduler.from_pretrained("{dir}/scheduler")
"""


def diffusers_version() -> str:
    """The installed diffusers' version, recorded as the configs' ``_diffusers_version``."""
    try:
        from importlib.metadata import version

        return version("diffusers")
    except Exception:  # not installed: any version that reads these configs
        return "0.30.0"


def _write_json(path: Path, obj: dict) -> None:
    atomic_write(path, (json.dumps(obj, indent=2) + "\n").encode())


def _fresh(directory: Path) -> Path:
    if directory.exists() and (not directory.is_dir() or any(directory.iterdir())):
        raise FileExistsError(f"{directory} exists and is not empty; export into a new folder")
    directory.mkdir(parents=True, exist_ok=True)
    return directory


def _native_config(model: LoadedModel) -> dict:
    """The UNet2DModel config of the run; NoCounterpart when it must be a PixdiffModel."""
    if type(model.net) is not UNet:
        raise NoCounterpart(f"UNet2DModel has no counterpart of a {type(model.net).__name__}")
    if not isinstance(model.denoiser.schedule, DiscreteSchedule):
        raise NoCounterpart("UNet2DModel is fed the timestep index, not a continuous time")
    return unet_to_diffusers_config(model.net.config)


def export_diffusers(model: LoadedModel, directory: str | Path) -> str:
    """Write ``model`` as a diffusers folder (see the module doc); returns the model class
    written, with the reason when it is PixdiffModel."""
    d, version = model.denoiser, diffusers_version()
    scheduler = scheduler_config(d.schedule, d.prediction, clip_x0=d.clip_x0, version=version)
    out = _fresh(Path(directory))  # after the checks: a refused run leaves no folder behind
    try:
        unet_config = {**_native_config(model), "_diffusers_version": version}
        state = unet_state_to_diffusers(model.net.state_dict(), model.net.config)
        written, load_code = "UNet2DModel", LOAD_NATIVE
        _write_json(out / "model_index.json", {
            "_class_name": "DDIMPipeline", "_diffusers_version": version,
            "scheduler": ["diffusers", "DDIMScheduler"], "unet": ["diffusers", "UNet2DModel"],
        })  # fmt: skip
    except NoCounterpart as e:
        unet_config = {
            "_class_name": CUSTOM_CLASS, "_diffusers_version": version,
            "run_config": model.config, "num_train_timesteps": scheduler["num_train_timesteps"],
        }  # fmt: skip
        state = {f"net.{k}": v for k, v in model.net.state_dict().items()}
        written, load_code = f"{CUSTOM_CLASS}, since {e}", LOAD_CUSTOM
        shutil.copyfile(Path(__file__).with_name("diffusers_model.py"), out / CUSTOM_MODULE)
    save_tensors(out / "unet" / SAFE_WEIGHTS, state, metadata={"format": "pt"})
    _write_json(out / "unet" / "config.json", unet_config)
    _write_json(out / "scheduler" / "scheduler_config.json", scheduler)
    _write_json(out / PIXDIFF_JSON, model.config)
    readme = f"# {model.path.name} as a diffusers {written.split(',')[0]}\n\nWritten by `pixdiff " \
        f"export`. Load it (docs/interop.md in pixdiff shows a full sampling loop):\n\n" \
        f"```python\n{load_code.format(dir=out)}```\n"  # fmt: skip
    atomic_write(out / "README.md", readme.encode())
    return written
