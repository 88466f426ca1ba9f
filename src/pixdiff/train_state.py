"""A training run's checkpoint: what the trainer writes into its run directory and what
``--resume`` reads back (the format is described in :mod:`pixdiff.checkpoint`).

``train_state.safetensors`` holds everything exact resume needs in one file: the network and
EMA weights (``model.*``, ``ema.*``), the optimizer's tensors (``opt.<param index>.<name>``),
the RNG states (``rng.torch`` for the global generator that dropout draws from, ``rng.noise``
for the loss's generator, ``rng.cuda`` when there is a GPU), and as metadata the step, the
optimizer's param_groups (JSON), fp16 training's loss-scaler state (``loss_scaler``, JSON:
scale, growth tracker and factors) and the pixdiff version. It is written after config.json,
model.safetensors and ema.safetensors, so whatever a kill or a full disk interrupts, resume
continues from the last complete checkpoint.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn

from pixdiff.checkpoint import (
    CONFIG,
    EMA,
    MODEL,
    TRAIN_STATE,
    CheckpointError,
    load_state_into,
    malformed,
    pixdiff_version,
    read_tensors,
    save_tensors,
    write_json,
)
from pixdiff.files import DiskFullError

_RNG_ENTRIES = ("rng.torch", "rng.noise")
_SCALER = "loss_scaler"


def save_checkpoint(
    run_dir: Path,
    *,
    net: nn.Module,
    ema: nn.Module,
    optimizer: torch.optim.Optimizer,
    generator: torch.Generator,
    step: int,
    config: dict,
    scaler: torch.amp.GradScaler | None = None,
) -> None:
    """Write config.json, model and EMA weights, then train_state.safetensors (what resume
    reads), with the loss ``scaler``'s state when there is one; a full disk raises
    DiskFullError saying the previous checkpoint is intact."""
    net_sd, ema_sd = net.state_dict(), ema.state_dict()
    opt_t, groups = _optimizer_tensors(optimizer)
    tensors = {
        **{f"model.{k}": v for k, v in net_sd.items()},
        **{f"ema.{k}": v for k, v in ema_sd.items()},
        **opt_t,
        "rng.torch": torch.get_rng_state(),
        "rng.noise": generator.get_state(),
    }
    if torch.cuda.is_available():
        tensors["rng.cuda"] = torch.cuda.get_rng_state()
    meta = {"step": str(step), "param_groups": groups, "pixdiff": pixdiff_version()}
    if scaler is not None:
        meta[_SCALER] = json.dumps(scaler.state_dict())
    try:
        write_json(run_dir / CONFIG, config)
        save_tensors(run_dir / MODEL, net_sd, {"step": str(step)})
        save_tensors(run_dir / EMA, ema_sd, {"step": str(step)})
        save_tensors(run_dir / TRAIN_STATE, tensors, meta)
    except DiskFullError as e:
        raise DiskFullError(e.path, "the previous checkpoint is intact") from e


def restore_checkpoint(
    run_dir: Path,
    *,
    net: nn.Module,
    ema: nn.Module,
    optimizer: torch.optim.Optimizer,
    generator: torch.Generator,
    scaler: torch.amp.GradScaler | None = None,
) -> int:
    """Load train_state.safetensors into the network, EMA copy, optimizer, RNGs and the loss
    ``scaler`` (a run saved without one, e.g. before fp16, leaves it fresh); returns the step.
    A missing, malformed or non-finite entry raises CheckpointError naming the file and the
    entry."""
    path = run_dir / TRAIN_STATE
    tensors, meta = read_tensors(path)

    def section(prefix: str) -> dict[str, torch.Tensor]:
        return {k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)}

    with malformed(path, "step"):
        step = int(meta["step"])
    rng = _rng_states(tensors, path)
    load_state_into(net, section("model."), f"{path} (model)")
    load_state_into(ema, section("ema."), f"{path} (ema)")
    _restore_optimizer(optimizer, section("opt."), meta, path)
    if scaler is not None and _SCALER in meta:
        _restore_scaler(scaler, meta[_SCALER], path)
    try:
        torch.set_rng_state(rng["rng.torch"])
        generator.set_state(rng["rng.noise"])
        if "rng.cuda" in rng and torch.cuda.is_available():
            torch.cuda.set_rng_state(rng["rng.cuda"])
    except RuntimeError as e:  # a state of the wrong size
        raise CheckpointError(f"{path}: missing or malformed entry rng ({e})") from e
    return step


def _optimizer_tensors(opt: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], str]:
    sd = opt.state_dict()
    tensors = {
        f"opt.{i}.{k}": torch.as_tensor(v) for i, s in sd["state"].items() for k, v in s.items()
    }
    return tensors, json.dumps(sd["param_groups"])


def _restore_optimizer(
    opt: torch.optim.Optimizer, tensors: dict[str, torch.Tensor], meta: dict, path: Path
) -> None:
    state: dict[int, dict[str, torch.Tensor]] = {}
    with malformed(path, "opt"):
        for key, v in tensors.items():
            i, name = key.split(".", 1)
            state.setdefault(int(i), {})[name] = v
    bad = [k for k, v in tensors.items() if v.is_floating_point() and not torch.isfinite(v).all()]
    if bad:
        raise CheckpointError(f"{path}: optimizer tensor opt.{bad[0]} holds NaN or infinity")
    with malformed(path, "param_groups"):
        groups = json.loads(meta["param_groups"])
        if not isinstance(groups, list):
            raise TypeError(f"expected a list, got {type(groups).__name__}")
    try:
        opt.load_state_dict({"state": state, "param_groups": groups})
    except (ValueError, KeyError, TypeError) as e:
        raise CheckpointError(f"{path}: optimizer state does not fit this model ({e})") from e


def _restore_scaler(scaler: torch.amp.GradScaler, text: str, path: Path) -> None:
    """The loss scaler's state from its JSON entry; CheckpointError if malformed."""
    with malformed(path, _SCALER):
        state = json.loads(text)
        scale, tracker = float(state["scale"]), int(state["_growth_tracker"])
        if not 0 < scale < float("inf") or tracker < 0:
            raise ValueError(f"scale {scale}, growth tracker {tracker}")
    scaler.load_state_dict(state)


def _rng_states(tensors: dict[str, torch.Tensor], path: Path) -> dict[str, torch.Tensor]:
    """The RNG entries, each a 1-D uint8 tensor (a generator's state), or CheckpointError."""
    for key in (*_RNG_ENTRIES, *(["rng.cuda"] if "rng.cuda" in tensors else [])):
        v = tensors.get(key)
        if v is None or v.dtype != torch.uint8 or v.dim() != 1:
            raise CheckpointError(f"{path}: missing or malformed entry {key}")
    return {k: v for k, v in tensors.items() if k.startswith("rng.")}
