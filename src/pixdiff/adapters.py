"""ControlNet adapters on disk, saved apart from their base model and loaded beside it.

An adapter run directory (``pixdiff train-control``) is a run directory whose weights are the
adapter's alone (``model.safetensors``, ``ema.safetensors``, ``train_state.safetensors``), and
whose config.json has an ``adapter`` section naming its base and the base's identity:

    {"adapter": {"method": "controlnet", "base": PATH or a shipped name,
                 "base_sha256": SHA-256 of the base network's weights,
                 "control": {"kind": ..., ...}, "channels": C, "net": the base U-Net's config},
     "train": the adapter's training settings, ...}

The identity is a SHA-256 of the base network's tensors (names, then bytes, in name order), so
it holds whichever file or copy the base is loaded from; an adapter given another base is
refused with one line naming both. Loading never executes code.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import torch
from torch import nn

from pixdiff.checkpoint import (
    CONFIG,
    CheckpointError,
    LoadedModel,
    entry,
    find_weights,
    load,
    load_state_into,
    malformed,
    net_config_from_dict,
    read_json,
    read_tensors,
)
from pixdiff.denoiser import Denoiser
from pixdiff.nets.control import ControlAdapter, ControlledNet
from pixdiff.shipped import SHIPPED_RUNS, shipped_run

ADAPTER = "adapter"  # the config.json section of an adapter run


def weights_sha256(net: nn.Module) -> str:
    """SHA-256 (hex) of a network's tensors: each name, then its bytes, in name order."""
    digest = hashlib.sha256()
    for name, tensor in sorted(net.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy())
    return digest.hexdigest()


def is_adapter_run(path: str | Path) -> bool:
    """Whether ``path`` is the directory of an adapter run."""
    config = Path(path) / CONFIG
    return config.is_file() and ADAPTER in read_json(config)


def base_path(name: str) -> Path:
    """The base run an adapter names: a shipped model's name or a path."""
    path = Path(name)
    if not path.exists() and name in SHIPPED_RUNS:
        return shipped_run(name)
    return path


def attach(base: LoadedModel, path: str | Path, *, ema: bool = True) -> LoadedModel:
    """The loaded ``base`` steered by the adapter in the run directory ``path``: its network is a
    :class:`ControlledNet`, its config the base's with the ``adapter`` section. Refuses (one
    line naming both) an adapter trained on another base."""
    path = Path(path)
    config_path = path / CONFIG
    config = read_json(config_path)
    section = entry(config, ADAPTER, config_path)
    with malformed(config_path, ADAPTER):
        recorded, sha = str(section["base"]), str(section["base_sha256"])
        net_config = net_config_from_dict(section["net"])
        channels = int(section["channels"])
    if isinstance(base.net, ControlledNet):
        raise CheckpointError(f"{base.path} already carries an adapter; give its base run")
    actual = weights_sha256(base.net)
    if actual != sha:
        raise CheckpointError(
            f"adapter {path} was trained on the base {recorded} (weights sha256 {sha[:12]}), "
            f"not on {base.path} (sha256 {actual[:12]}); give it its own base"
        )
    adapter = ControlAdapter(net_config, control_channels=channels)
    weights, _ = find_weights(path, ema)
    state, _ = read_tensors(weights)
    load_state_into(adapter, state, str(weights))
    device = next(base.net.parameters()).device
    adapter.to(device).eval().requires_grad_(False)
    net = ControlledNet(base.net, adapter)
    d = base.denoiser
    denoiser = Denoiser(
        net, d.schedule, d.prediction, sigma_data=d.sigma_data, learn_sigma=d.learn_sigma,
        self_condition=d.self_condition,
    )  # fmt: skip
    return LoadedModel(denoiser, net, {**base.config, ADAPTER: section}, base.class_names, path)


def load_run(
    path: str | Path,
    *,
    ema: bool = True,
    device: str | torch.device = "cpu",
    adapter: str | Path | None = None,
) -> LoadedModel:
    """A run as :func:`pixdiff.checkpoint.load` loads it, where an adapter run brings its base
    (from the path or shipped name it records; the base's EMA weights), and ``adapter`` (an
    adapter run directory) is attached to the run at ``path``."""
    if is_adapter_run(path):
        if adapter is not None:
            raise ValueError(f"{path} is an adapter run already; give its base with --adapter")
        section = read_json(Path(path) / CONFIG)[ADAPTER]
        base = load(base_path(str(section.get("base"))), device=device)
        return attach(base, path, ema=ema)
    model = load(path, ema=ema, device=device)
    return model if adapter is None else attach(model, adapter, ema=ema)
