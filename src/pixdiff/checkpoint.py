"""Run directories and checkpoints: safetensors + JSON, atomic writes, no pickle anywhere.

A run directory holds::

    config.json              training config, resolved network config, class names,
                             whether the model is text-conditioned
    model.safetensors        raw weights (for users); a text-conditioned model's keys are
                             ``net.*`` and ``text_encoder.*`` (its trained part)
    ema.safetensors          EMA weights (what sampling uses by default)
    train_state.safetensors  everything resume needs in ONE file: model, EMA, optimizer,
                             step, RNG states; replaced atomically, so a killed run resumes
                             from the last complete checkpoint
    log.csv, samples/

Loading never executes code: safetensors holds only tensors and string metadata.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save
from torch import nn

from pixdiff.config import SRConfig, TextConfig, from_dict
from pixdiff.denoiser import Denoiser
from pixdiff.files import atomic_write
from pixdiff.nets import DiTConfig, UNetConfig, build_net
from pixdiff.nets.text import PromptEncoder, TextConditionedNet, build_text_encoder, text_encoder_of
from pixdiff.schedules import schedule_from_dict

CONFIG, MODEL, EMA, TRAIN_STATE = (
    "config.json",
    "model.safetensors",
    "ema.safetensors",
    "train_state.safetensors",
)
_NET_TYPES = {"unet": UNetConfig, "dit": DiTConfig}


class CheckpointError(ValueError):
    """A checkpoint is missing, corrupt, or does not fit the network it is loaded into."""


# ----------------------------------------------------------------------------- atomic files


def save_tensors(
    path: str | Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str] | None = None
) -> None:
    tensors = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}
    atomic_write(path, st_save(tensors, metadata=metadata))


def read_tensors(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Read a safetensors file, raising CheckpointError that names the file on any problem."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError as e:
        raise CheckpointError(f"checkpoint file {path} does not exist") from e
    try:
        tensors = st_load(data)
        header_len = int.from_bytes(data[:8], "little")
        metadata = json.loads(data[8 : 8 + header_len]).get("__metadata__", {}) or {}
    except (SafetensorError, ValueError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{path} is corrupt or not a safetensors file ({e})") from e
    return tensors, metadata


def write_json(path: str | Path, obj: dict) -> None:
    atomic_write(path, (json.dumps(obj, indent=2) + "\n").encode())


def read_json(path: str | Path) -> dict:
    path = Path(path)
    try:
        return json.loads(path.read_text())
    except FileNotFoundError as e:
        raise CheckpointError(f"{path} does not exist") from e
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{path} is not valid JSON ({e})") from e


# ----------------------------------------------------------------------------- network configs


def net_config_to_dict(config: UNetConfig | DiTConfig) -> dict:
    kind = next(k for k, v in _NET_TYPES.items() if isinstance(config, v))
    return {"type": kind, **config.to_dict()}


def net_config_from_dict(d: dict) -> UNetConfig | DiTConfig:
    d = dict(d)
    kind = d.pop("type", None)
    if kind not in _NET_TYPES:
        raise CheckpointError(f"unknown network type {kind!r}; valid: {sorted(_NET_TYPES)}")
    return _NET_TYPES[kind].from_dict(d)


def load_state_into(module: nn.Module, state: dict[str, torch.Tensor], source: str) -> None:
    """Copy ``state`` into ``module``, naming missing, unexpected and mis-shaped keys."""
    own = module.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    wrong = [
        f"{k}: checkpoint {tuple(state[k].shape)} vs network {tuple(own[k].shape)}"
        for k in own
        if k in state and state[k].shape != own[k].shape
    ]
    if missing or unexpected or wrong:
        parts = [
            f"missing {missing[:5]}" if missing else "",
            f"unexpected {unexpected[:5]}" if unexpected else "",
            f"shape mismatch {wrong[:3]}" if wrong else "",
        ]
        raise CheckpointError(
            f"{source} does not fit this network (another architecture?): "
            + "; ".join(p for p in parts if p)
        )
    module.load_state_dict({k: v.to(own[k].dtype) for k, v in state.items()})


# ----------------------------------------------------------------------------- loading a model


@dataclass
class LoadedModel:
    """A trained model ready to sample: its denoiser, network and what it was trained on."""

    denoiser: Denoiser
    net: nn.Module
    config: dict
    class_names: list[str] | None
    path: Path

    @property
    def image_shape(self) -> tuple[int, int, int]:
        c = self.net.config
        return (c.in_channels, c.image_size, c.image_size)

    @property
    def num_classes(self) -> int:
        return self.net.config.num_classes

    @property
    def sr(self) -> SRConfig | None:
        """A super-resolution model's low-res size and augmentation (``sr`` config), else None."""
        sr = from_dict(SRConfig, self.config["train"].get("sr", {}), f"{self.path}: train.sr")
        return sr if sr.low_res_size else None

    @property
    def text_encoder(self) -> PromptEncoder | None:
        """The prompt encoder of a text-conditioned model, else None."""
        return text_encoder_of(self.net)


def find_weights(path: Path, ema: bool) -> tuple[Path, Path]:
    """(weights file, config file) for a run directory or a .safetensors file beside config.json."""
    if path.is_dir():
        weights = path / (EMA if ema and (path / EMA).exists() else MODEL)
        return weights, path / CONFIG
    if path.suffix == ".safetensors":
        return path, path.parent / CONFIG
    if not path.exists():
        raise CheckpointError(
            f"{path} does not exist (expected a run directory or a .safetensors file)"
        )
    raise CheckpointError(f"{path} is neither a run directory nor a .safetensors file")


def load(path: str | Path, *, ema: bool = True, device: str | torch.device = "cpu") -> LoadedModel:
    """Load a trained model from a run directory or checkpoint file (no code is executed).

    Args:
        path: run directory (uses ema.safetensors, else model.safetensors) or a weights file
            with its config.json beside it.
        ema: prefer the EMA weights.
    """
    weights, config_path = find_weights(Path(path), ema)
    config = read_json(config_path)
    for key in ("net", "train"):
        if key not in config:
            raise CheckpointError(f"{config_path} lacks the {key!r} section; is it a pixdiff run?")
    net = build_net(net_config_from_dict(config["net"]))
    if config.get("text_conditioned"):  # the encoder's weights are in the same file
        text = from_dict(TextConfig, config["train"].get("text", {}), f"{config_path}: train.text")
        net = TextConditionedNet(net, build_text_encoder(text))
    state, _ = read_tensors(weights)
    load_state_into(net, state, str(weights))
    net.to(device).eval().requires_grad_(False)
    diff = config["train"]["diffusion"]
    # runs from before diffusion.learn_sigma existed: the network config alone says it
    if diff.get("learn_sigma", net.config.learn_sigma) != net.config.learn_sigma:
        raise CheckpointError(
            f"{config_path}: diffusion.learn_sigma={diff['learn_sigma']} but the network has "
            f"learn_sigma={net.config.learn_sigma}; the config was edited or is corrupt"
        )
    denoiser = Denoiser(
        net,
        schedule_from_dict(diff["schedule"]),
        diff["prediction"],
        sigma_data=diff["sigma_data"],
        learn_sigma=net.config.learn_sigma,
    )
    return LoadedModel(denoiser, net, config, config.get("class_names"), Path(path))
