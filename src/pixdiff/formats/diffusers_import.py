"""A diffusers folder as a pixdiff model: ``pixdiff.load(DIR)``, ``pixdiff sample DIR`` and
``pixdiff import DIR --out RUN``.

A folder is a diffusers one when it has ``model_index.json`` or ``unet/config.json`` (a
pipeline), or a ``config.json`` naming a diffusers ``_class_name`` (a bare model; its scheduler
config beside it as ``scheduler_config.json``). Its network is read as

- pixdiff's own U-Net when the ``UNet2DModel`` has a weight-for-weight counterpart
  (:mod:`.diffusers_unet`); this needs no diffusers install;
- the pixdiff network of a ``PixdiffModel`` folder that pixdiff exported
  (:mod:`.diffusers_model`), from its config and weights alone;
- else through diffusers itself (:class:`pixdiff.interop.DiffusersUNet`), for sampling only.

The scheduler config gives the betas, the prediction type, the default time grid and the x0
clip (:mod:`.diffusers_scheduler`). A folder pixdiff exported also has ``pixdiff.json``, the
run's own config (class names, sampling defaults, the schedule of a continuous-time run), which
makes the way back exact. Only safetensors weights load unless ``allow_pickle``.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from pixdiff.checkpoint import (
    CONFIG,
    CheckpointError,
    LoadedModel,
    build_run_net,
    load,
    load_state_into,
    net_config_to_dict,
    read_tensors,
    run_denoiser,
)
from pixdiff.config import DataConfig, DiffusionConfig, SampleDefaults, TrainConfig, to_dict
from pixdiff.formats.diffusers_scheduler import read_sampling, read_schedule, warn_unsupported
from pixdiff.formats.diffusers_unet import (
    NoCounterpart,
    unet_from_diffusers_config,
    unet_state_from_diffusers,
)
from pixdiff.interop import DiffusersUNet, load_unet2d
from pixdiff.loras import is_lora_run, load_lora_run

SAFE_WEIGHTS, PICKLE_WEIGHTS = "diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.bin"
PIXDIFF_JSON = "pixdiff.json"  # the exported run's own config.json
CUSTOM_CLASS = "PixdiffModel"  # the class of formats/diffusers_model.py


def _read_json(path: Path) -> dict:
    try:
        value = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CheckpointError(f"{path} is not valid JSON ({e})") from e
    if not isinstance(value, dict):
        raise CheckpointError(f"{path} is not a JSON object")
    return value


def _names_diffusers_class(config_file: Path) -> bool:
    return config_file.is_file() and "_class_name" in _read_json(config_file)


def diffusers_layout(path: str | Path) -> tuple[Path, Path] | None:
    """(model folder, scheduler config file) of a diffusers folder; None for anything else."""
    path = Path(path)
    if not path.is_dir():
        return None
    if (path / "model_index.json").is_file() or (path / "unet" / CONFIG).is_file():
        return path / "unet", path / "scheduler" / "scheduler_config.json"
    if _names_diffusers_class(path / CONFIG):
        return path, path / "scheduler_config.json"
    return None


def load_model(
    path: str | Path, *, ema: bool = True, device: str | torch.device = "cpu",
    allow_pickle: bool = False,
) -> LoadedModel:  # fmt: skip
    """A pixdiff run directory or checkpoint (:func:`pixdiff.checkpoint.load`), or a diffusers
    folder (:func:`load_diffusers`)."""
    path = Path(path)
    if diffusers_layout(path) is not None:
        return load_diffusers(path, device=device, allow_pickle=allow_pickle)
    if path.is_dir() and not (path / CONFIG).exists():
        raise CheckpointError(
            f"{path} is neither a pixdiff run (no {CONFIG}) nor a diffusers model folder (no "
            "model_index.json, unet/config.json, or config.json naming a diffusers class)"
        )
    if is_lora_run(path):  # a LoRA run brings its base (pixdiff.loras)
        return load_lora_run(path, ema=ema, device=device)
    return load(path, ema=ema, device=device)


def load_diffusers(
    path: str | Path, *, device: str | torch.device = "cpu", allow_pickle: bool = False
) -> LoadedModel:
    """A diffusers pipeline or model folder as a loaded pixdiff model (see the module doc)."""
    path = Path(path)
    layout = diffusers_layout(path)
    if layout is None:
        raise CheckpointError(f"{path} is not a diffusers folder (no model_index.json)")
    unet_dir, scheduler_file = layout
    _refuse_latent(path)
    if not scheduler_file.is_file():
        raise FileNotFoundError(
            f"{path} has no scheduler config ({scheduler_file}): pixdiff needs its betas and "
            "prediction type"
        )
    scheduler = _read_json(scheduler_file)
    unet_config = _read_json(unet_dir / CONFIG)
    own = _read_json(path / PIXDIFF_JSON) if (path / PIXDIFF_JSON).is_file() else None
    weights = _weights_file(unet_dir, allow_pickle)
    kind = unet_config.get("_class_name")
    if kind == CUSTOM_CLASS:
        config = unet_config["run_config"]
        net = _load_net(config, _strip(_read_weights(weights), "net."), weights)
    elif kind == "UNet2DModel":
        config, net = _unet2d(unet_config, own, weights, scheduler, scheduler_file, allow_pickle)
    else:
        raise ValueError(
            f"{unet_dir} holds a diffusers {kind}; pixdiff reads UNet2DModel (pixel space) "
            f"and the {CUSTOM_CLASS} it exports"
        )
    config = {**config, "sampling": read_sampling(scheduler, scheduler_file)}
    warn_unsupported(scheduler, scheduler_file)
    net.to(device).eval().requires_grad_(False)
    denoiser = run_denoiser(net, config, path)
    return LoadedModel(denoiser, net, config, config.get("class_names"), path)


def _refuse_latent(path: Path) -> None:
    index = path / "model_index.json"
    if index.is_file() and "vae" in _read_json(index):
        raise ValueError(
            f"{path} is a latent diffusion pipeline (it has a vae); pixdiff samples pixels"
        )


def _weights_file(unet_dir: Path, allow_pickle: bool) -> Path:
    """The model's safetensors weights, or with ``allow_pickle`` its .bin pickle."""
    if (unet_dir / SAFE_WEIGHTS).is_file():
        return unet_dir / SAFE_WEIGHTS
    if (unet_dir / PICKLE_WEIGHTS).is_file():
        if allow_pickle:
            return unet_dir / PICKLE_WEIGHTS
        raise CheckpointError(
            f"{unet_dir} has only {PICKLE_WEIGHTS}, a pickle, which can run code when loaded; "
            "pixdiff loads safetensors only: pass --allow-pickle (allow_pickle=True) if you "
            "trust its source"
        )
    raise CheckpointError(f"{unet_dir} has no weights ({SAFE_WEIGHTS})")


def _read_weights(path: Path) -> dict[str, torch.Tensor]:
    if path.suffix == ".safetensors":
        return read_tensors(path)[0]
    # allow_pickle: still torch's restricted unpickler, which builds tensors and nothing else
    return torch.load(path, map_location="cpu", weights_only=True)


def _strip(state: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    return {k.removeprefix(prefix): v for k, v in state.items()}


def _load_net(config: dict, state: dict[str, torch.Tensor], source: Path) -> torch.nn.Module:
    net = build_run_net(config, source)
    load_state_into(net, state, str(source))
    return net


def _unet2d(unet_config, own, weights, scheduler, scheduler_file, allow_pickle):
    """(run config, network) of a UNet2DModel: pixdiff's U-Net where it has the same weights,
    else diffusers' own class."""
    try:
        net_config = unet_from_diffusers_config(unet_config, null_label=own is not None)
    except NoCounterpart as reason:
        unet = DiffusersUNet(load_unet2d(weights.parent, allow_pickle=allow_pickle))
        config = _foreign_config(None, unet.config, scheduler, scheduler_file)
        config["imported_from"]["adapter"] = str(reason)
        return config, unet
    config = own or _foreign_config(net_config, net_config, scheduler, scheduler_file)
    net = build_run_net(config, weights)
    state = unet_state_from_diffusers(_read_weights(weights), net.config)
    load_state_into(net, state, str(weights))
    return config, net


def _foreign_config(net_config, shape, scheduler: dict, scheduler_file: Path) -> dict:
    """A run config for a diffusers model pixdiff did not export: its schedule, and the
    sampler and steps diffusers' pipeline for its scheduler would use; unguided."""
    schedule, prediction = read_schedule(scheduler, scheduler_file)
    ddpm = scheduler.get("_class_name") == "DDPMScheduler"
    train = TrainConfig(
        data=DataConfig(name="unknown", image_size=shape.image_size, channels=shape.in_channels,
                        conditional=shape.num_classes > 0),
        diffusion=DiffusionConfig(schedule=schedule.to_dict(), prediction=prediction,
                                  learn_sigma=shape.learn_sigma),
        sample=SampleDefaults(sampler="ddpm" if ddpm else "ddim", steps=1000 if ddpm else 50,
                              guidance=1.0),
    )  # fmt: skip
    net = net_config_to_dict(net_config) if net_config is not None else {"type": "diffusers"}
    return {"net": net, "train": to_dict(train), "class_names": None,
            "imported_from": {"format": "diffusers", "scheduler": scheduler}}  # fmt: skip


def run_spacing(run: str | Path | None) -> str | None:
    """The default time grid of a run or diffusers folder: its ``sampling.spacing`` (an
    imported model's), or its scheduler's ``timestep_spacing``; None: the schedule's own."""
    if run is None:
        return None
    path = Path(run)
    layout = diffusers_layout(path)
    if layout is not None:
        return read_sampling(_read_json(layout[1]), layout[1])["spacing"] if layout[1].is_file() \
            else None  # fmt: skip
    config_file = path / CONFIG if path.is_dir() else path.parent / CONFIG
    if not config_file.is_file():
        return None
    return _read_json(config_file).get("sampling", {}).get("spacing")
