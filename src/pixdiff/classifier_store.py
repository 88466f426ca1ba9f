"""Save and load a noise-conditional classifier: ``model.safetensors`` + ``config.json`` in a
folder (written by ``pixdiff train-classifier``, read by ``pixdiff sample --classifier``).

Loading needs only the network and the schedule, not the training code, and runs no code:
the config is JSON and the weights safetensors.
"""

from __future__ import annotations

from pathlib import Path

import torch

from pixdiff.checkpoint import (
    CONFIG,
    MODEL,
    CheckpointError,
    load_state_into,
    read_json,
    read_tensors,
    save_tensors,
    write_json,
)
from pixdiff.nets.checks import config_from_dict, config_to_dict
from pixdiff.nets.noisy_classifier import NoisyClassifier, NoisyClassifierConfig, NoisyClassifierNet
from pixdiff.schedule_registry import schedule_from_dict

FORMAT = "pixdiff.noisy_classifier/1"  # the on-disk format's name, kept as saved folders carry it


def check_out_dir(out: str | Path, *, overwrite: bool) -> Path:
    """Refuse to replace a saved classifier in ``out`` (its config or its weights) unless
    ``overwrite``."""
    out = Path(out)
    held = [name for name in (CONFIG, MODEL) if (out / name).exists()]
    if held and not overwrite:
        raise FileExistsError(
            f"{out} already holds {' and '.join(held)}; pass --overwrite to replace it"
        )
    return out


def save_noisy_classifier(
    classifier: NoisyClassifier, out: str | Path, *, metadata: dict | None = None
) -> Path:
    """Write ``model.safetensors`` then ``config.json`` (each atomically) into ``out``."""
    out = Path(out)
    save_tensors(out / MODEL, classifier.net.state_dict())
    write_json(
        out / CONFIG,
        {
            "format": FORMAT,
            "net": config_to_dict(classifier.net.config),
            "schedule": classifier.schedule.to_dict(),
            "class_names": classifier.class_names,
            "metadata": metadata or {},
        },
    )
    return out


def load_noisy_classifier(
    path: str | Path, *, device: str | torch.device = "cpu"
) -> NoisyClassifier:
    """Load a classifier saved by :func:`save_noisy_classifier` (eval mode, no grads; no code
    runs). Raises CheckpointError naming the file that is missing, corrupt or foreign."""
    path = Path(path)
    config = read_json(path / CONFIG)
    keys = {"format", "net", "schedule", "class_names", "metadata"}
    if not isinstance(config, dict) or config.get("format") != FORMAT or set(config) != keys:
        raise CheckpointError(
            f"{path / CONFIG} is not a noise-conditional classifier made by "
            "`pixdiff train-classifier`"
        )
    try:
        net = NoisyClassifierNet(config_from_dict(NoisyClassifierConfig, config["net"]))
        schedule = schedule_from_dict(config["schedule"])
    except (TypeError, ValueError) as e:
        raise CheckpointError(f"{path / CONFIG}: invalid classifier config ({e})") from None
    state, _ = read_tensors(path / MODEL)
    load_state_into(net, state, str(path / MODEL))
    classifier = NoisyClassifier(net, schedule, config["class_names"])
    return classifier.to(device).eval().requires_grad_(False)
