"""LoRA adapters on disk (:mod:`pixdiff.nets.lora`), saved apart from their base and applied
at load time.

A LoRA file is a small safetensors file holding the adapters' tensors alone
(``layers.<module name with "." as "__">.{down,up}.weight``) and, as its ``lora`` metadata, a
JSON object naming its base and the base's identity (the same SHA-256 of the base network's
weights that ControlNet adapters use, :func:`pixdiff.adapters.weights_sha256`):

    {"rank": r, "alpha": alpha, "dropout": p, "targets": [...], "modules": [...],
     "base": PATH or a shipped name, "base_sha256": "..."}

A LoRA run directory (``pixdiff finetune --lora-rank``) is a run directory whose weights are
the adapters' (model, EMA and train state, for resume), whose config.json has a ``lora``
section of the same form, and which holds the EMA adapters as ``lora.safetensors``. Loading a
LoRA beside another base is refused with one line naming both. Loading never executes code.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import torch

from pixdiff.adapters import base_path, weights_sha256
from pixdiff.checkpoint import (
    CONFIG,
    MODEL,
    CheckpointError,
    LoadedModel,
    load,
    load_state_into,
    malformed,
    read_json,
    read_tensors,
    save_tensors,
)
from pixdiff.nets.lora import LoRAConfig, LoRASet

LORA = "lora"  # the config.json section of a LoRA run, and the metadata key of a LoRA file
LORA_FILE = "lora.safetensors"


def lora_section(lora: LoRASet, base: str, base_sha256: str) -> dict:
    """What a LoRA records about itself and its base (the module doc's JSON)."""
    return {
        **asdict(lora.config), "targets": list(lora.config.targets),
        "modules": lora.module_names, "base": base, "base_sha256": base_sha256,
    }  # fmt: skip


def save_lora(path: str | Path, lora: LoRASet, section: dict) -> Path:
    """Write ``lora``'s tensors with ``section`` (:func:`lora_section`) as one safetensors file."""
    save_tensors(path, lora.state_dict(), {LORA: json.dumps(section)})
    return Path(path)


def is_lora_run(path: str | Path) -> bool:
    """Whether ``path`` is a LoRA run directory."""
    config = Path(path) / CONFIG
    return config.is_file() and LORA in read_json(config)


def lora_file(path: str | Path) -> Path:
    """The LoRA file of a LoRA run directory, or ``path`` itself."""
    path = Path(path)
    return path / LORA_FILE if path.is_dir() else path


def read_lora(path: str | Path, net: torch.nn.Module) -> tuple[LoRASet, dict]:
    """The LoRA at ``path`` (a file or LoRA run) built for ``net`` (not applied), and its
    section; one line naming the file when it is no LoRA or does not fit."""
    path = lora_file(path)
    tensors, meta = read_tensors(path)
    if LORA not in meta:
        raise CheckpointError(f"{path} is not a LoRA file (no '{LORA}' metadata)")
    with malformed(path, LORA):
        section = json.loads(meta[LORA])
    return lora_from(section, tensors, net, path), section


def lora_from(section: dict, tensors: dict, net: torch.nn.Module, source: Path) -> LoRASet:
    """The LoRA a section describes, for ``net``, with ``tensors`` loaded into it."""
    with malformed(source, LORA):
        config = LoRAConfig(
            rank=int(section["rank"]), alpha=section["alpha"], dropout=float(section["dropout"]),
            targets=tuple(section["targets"]),
        )  # fmt: skip
        modules = [str(m) for m in section["modules"]]
        str(section["base"]), str(section["base_sha256"])
    try:
        lora = LoRASet(net, config, modules)
    except AttributeError as e:  # a module name the network does not have
        raise CheckpointError(f"{source} does not fit this network ({e})") from e
    load_state_into(lora, tensors, str(source))
    return lora


def check_base(section: dict, base: LoadedModel, source: str | Path, *, sha: str | None = None):
    """Refuse (one line naming both) a LoRA trained on another base than ``base``."""
    actual = sha or weights_sha256(base.net)
    if actual != section["base_sha256"]:
        raise CheckpointError(
            f"LoRA {source} was trained on the base {section['base']} (weights sha256 "
            f"{section['base_sha256'][:12]}), not on {base.path} (sha256 {actual[:12]}); give "
            "it its own base"
        )


def apply_loras(
    base: LoadedModel, paths: list[str | Path], *, scales: list[float] | None = None
) -> list[LoRASet]:
    """Apply each LoRA (file or run) in ``paths`` to ``base``'s network, stacked, each at its
    scale (default 1); refuses a LoRA of another base. Returns the applied sets."""
    scales = scales or [1.0] * len(paths)
    if len(scales) != len(paths):
        raise ValueError(f"{len(paths)} LoRAs but {len(scales)} --lora-scale values")
    sha = weights_sha256(base.net)
    device = next(base.net.parameters()).device
    sets = []
    for path, scale in zip(paths, scales, strict=True):
        lora, section = read_lora(path, base.net)
        check_base(section, base, lora_file(path), sha=sha)
        lora.to(device).eval().requires_grad_(False)
        lora.scale = float(scale)
        lora.attach(base.net)
        sets.append(lora)
    return sets


def merge_loras(base: LoadedModel, paths: list[str | Path], scales: list[float] | None = None):
    """``base`` with each LoRA folded into its weights (W + scale B A, in place); its config
    records what was merged. Returns ``base``."""
    scales = scales or [1.0] * len(paths)
    if len(scales) != len(paths):
        raise ValueError(f"{len(paths)} LoRAs but {len(scales)} --lora-scale values")
    sha = weights_sha256(base.net)
    merged = []
    for path, scale in zip(paths, scales, strict=True):
        lora, section = read_lora(path, base.net)
        check_base(section, base, lora_file(path), sha=sha)
        lora.to(next(base.net.parameters()).device).scale = float(scale)
        lora.merge_into(base.net)
        merged.append({"file": str(lora_file(path)), "scale": float(scale), **section})
    base.config = {**base.config, "merged_loras": merged}
    return base


def load_lora_run(
    path: str | Path, *, ema: bool = True, device: str | torch.device = "cpu", scale: float = 1.0
) -> LoadedModel:
    """A LoRA run loaded with its base (the base's EMA weights) and its adapters applied at
    ``scale``: the EMA adapters (lora.safetensors), or with ``ema=False`` the raw ones."""
    path = Path(path)
    section = read_json(path / CONFIG)[LORA]
    base = load(base_path(str(section.get("base"))), device=device)
    check_base(section, base, path)
    if ema:
        lora, _ = read_lora(path / LORA_FILE, base.net)
    else:
        lora = lora_from(section, read_tensors(path / MODEL)[0], base.net, path / MODEL)
    lora.to(next(base.net.parameters()).device).eval().requires_grad_(False)
    lora.scale = float(scale)
    lora.attach(base.net)
    return LoadedModel(
        base.denoiser, base.net, {**base.config, LORA: section}, base.class_names, path
    )


__all__ = [
    "LORA", "LORA_FILE", "apply_loras", "is_lora_run", "load_lora_run", "lora_section",
    "lora_from", "merge_loras", "read_lora", "save_lora",
]  # fmt: skip
