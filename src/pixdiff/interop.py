"""Interop: drive pixdiff samplers with a diffusers ``UNet2DModel`` loaded from a local folder.

diffusers is an optional extra (``pip install diffusers``); nothing is downloaded: the folder must
hold the model already (``config.json`` + weights), as written by ``save_pretrained``. A pipeline
folder (``unet/`` and ``scheduler/`` inside) works too; its ``scheduler_config.json`` gives the
schedule and prediction type.
"""

from __future__ import annotations

import json
from pathlib import Path

from torch import Tensor, nn

from pixdiff.conditioning import Cond, check_supported
from pixdiff.denoiser import Denoiser
from pixdiff.discrete_schedules import DiscreteSchedule

# diffusers' beta_schedule / prediction_type names -> pixdiff's
BETA_SCHEDULES = {
    "linear": "linear",
    "scaled_linear": "scaled-linear",
    "squaredcos_cap_v2": "cosine",
    "sigmoid": "sigmoid",
}
PREDICTION_TYPES = {"epsilon": "eps", "sample": "x0", "v_prediction": "v"}


class DiffusersUNet(nn.Module):
    """A diffusers UNet2DModel as a pixdiff network ``net(x_t, c_noise, cond)``."""

    def __init__(self, unet: nn.Module):
        super().__init__()
        self.unet = unet

    def forward(self, x: Tensor, c_noise: Tensor, cond: Cond | None = None) -> Tensor:
        check_supported(cond, {"label"}, "a diffusers UNet2DModel")
        labels = cond.label if cond is not None else None
        return self.unet(x, c_noise, class_labels=labels).sample


def schedule_from_diffusers(config: dict) -> tuple[DiscreteSchedule, str]:
    """(schedule, prediction type) from a diffusers scheduler config dict."""
    kind = config.get("beta_schedule", "linear")
    if kind not in BETA_SCHEDULES:
        raise ValueError(
            f"unsupported diffusers beta_schedule {kind!r}; supported: {sorted(BETA_SCHEDULES)}"
        )
    pred = config.get("prediction_type", "epsilon")
    if pred not in PREDICTION_TYPES:
        raise ValueError(
            f"unsupported diffusers prediction_type {pred!r}; supported: {sorted(PREDICTION_TYPES)}"
        )
    betas = (
        {}
        if kind == "squaredcos_cap_v2"
        else {
            "beta_start": config.get("beta_start", 1e-4),
            "beta_end": config.get("beta_end", 0.02),
        }
    )
    schedule = DiscreteSchedule(
        beta_kind=BETA_SCHEDULES[kind],
        num_timesteps=config.get("num_train_timesteps", 1000),
        zero_terminal_snr=bool(config.get("rescale_betas_zero_snr")),
        **betas,
    )
    return schedule, PREDICTION_TYPES[pred]


def load_diffusers_unet(
    path: str | Path, *, scheduler_config: dict | None = None, device: str = "cpu"
) -> Denoiser:
    """A Denoiser over a local diffusers UNet2DModel (a model folder or a pipeline folder).

    Args:
        scheduler_config: used when the folder has no ``scheduler/scheduler_config.json``.
    """
    try:
        from diffusers import UNet2DModel
    except ImportError as e:
        raise ImportError("loading a diffusers model needs `pip install diffusers`") from e
    path = Path(path)
    unet_dir = path / "unet" if (path / "unet").is_dir() else path
    if not (unet_dir / "config.json").exists():
        raise FileNotFoundError(f"{unet_dir} has no config.json: not a saved UNet2DModel")
    sched_file = path / "scheduler" / "scheduler_config.json"
    if sched_file.exists():
        scheduler_config = json.loads(sched_file.read_text())
    if scheduler_config is None:
        raise ValueError(f"{path} has no scheduler/scheduler_config.json; pass scheduler_config")
    unet = UNet2DModel.from_pretrained(unet_dir, local_files_only=True).to(device).eval()
    schedule, prediction = schedule_from_diffusers(scheduler_config)
    learn_sigma = unet.config.out_channels == 2 * unet.config.in_channels
    return Denoiser(DiffusersUNet(unet), schedule, prediction, learn_sigma=learn_sigma)
