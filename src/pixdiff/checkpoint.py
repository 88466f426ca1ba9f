"""Run directories and checkpoints: safetensors + JSON, atomic writes, no pickle anywhere.

A run directory holds::

    .pixdiff-run             the marker: JSON {"format": "pixdiff-run", "version": 1,
                             "created": ISO time, "pixdiff": version}. Only pixdiff writes
                             it; ``train --overwrite`` replaces only a marked directory
    .lock                    advisory lock (flock) held by the one ``train`` process working
                             on the run; JSON {"pid", "since"} names it. The kernel drops
                             the lock when the process dies, so a stale file never blocks
    config.json              training config, resolved network config, class names,
                             whether the model is text-conditioned; an imported model's
                             ``sampling`` (x0 clip, default grid; formats/diffusers_scheduler)
    model.safetensors        raw weights (for users); a text-conditioned model's keys are
                             ``net.*`` and ``text_encoder.*`` (its trained part)
    ema.safetensors          EMA weights (what sampling uses by default)
    train_state.safetensors  everything resume needs in ONE file: model, EMA, optimizer,
                             step, RNG states; written last, so a killed run resumes from
                             the last complete checkpoint (:mod:`pixdiff.train_state`)
    log.csv, eval.csv        one row per logged step, each appended by one write(); on
                             resume rows past the checkpoint are dropped and a damaged log
                             is set aside as ``log.csv.damaged-N`` (a warning, not an error)
    samples/                 periodic sample grids

Every file is replaced atomically (:func:`pixdiff.files.atomic_write`), so a reader (``pixdiff
sample`` on a run being trained) sees the last complete version. Loading needs only
config.json and the weights: runs from before the marker, and the shipped ones, load as they
are. Creating, locking and replacing run directories is :mod:`pixdiff.rundir`.

Loading never executes code: safetensors holds only tensors and string metadata. A missing,
malformed or non-finite entry raises :class:`CheckpointError` naming the file and the entry.

Every safetensors and JSON file written here carries a SHA-256 of its content (the entry
``checksum``, "sha256:HEX"), verified on load, so a zeroed block or a flipped bit is refused
instead of loaded (a safetensors file: over its canonical header, less the checksum, then its
tensor bytes; a JSON file: over the canonical JSON of the rest, so reformatting it is harmless
and a changed value is refused until the user deletes the ``checksum`` entry, see
RELIABILITY.md). Files without one (written before checksums, the shipped models) load as
before.
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save
from torch import nn

from pixdiff.config import SRConfig, TextConfig, from_dict
from pixdiff.denoiser import Denoiser
from pixdiff.files import atomic_write
from pixdiff.nets import DiTConfig, UNetConfig, VideoDiTConfig, VideoUNetConfig, build_net
from pixdiff.nets.checks import state_mismatch
from pixdiff.nets.prompts import PromptEncoder
from pixdiff.nets.text import TextConditionedNet, text_encoder_of
from pixdiff.schedule_registry import schedule_from_dict

CONFIG, MODEL, EMA, TRAIN_STATE = (
    "config.json",
    "model.safetensors",
    "ema.safetensors",
    "train_state.safetensors",
)
_NET_TYPES = {
    "unet": UNetConfig,
    "dit": DiTConfig,
    "video-unet": VideoUNetConfig,
    "video-dit": VideoDiTConfig,
}
CHECKSUM = "checksum"  # "sha256:HEX" in a safetensors file's metadata and a JSON file


class CheckpointError(ValueError):
    """A checkpoint is missing, corrupt, or does not fit the network it is loaded into."""


def pixdiff_version() -> str:
    """The installed pixdiff's version, recorded in what a run writes."""
    try:
        return version("pixdiff")
    except PackageNotFoundError:  # run from a source tree that was never installed
        return "unknown"


# ----------------------------------------------------------------------------- files, checksums


def save_tensors(
    path: str | Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str] | None = None
) -> None:
    """Write a safetensors file atomically, the SHA-256 of its content in its metadata."""
    tensors = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}
    header, body = _split(st_save(tensors, metadata=metadata))
    header["__metadata__"] = {**(header.get("__metadata__") or {}), CHECKSUM: _digest(header, body)}
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)  # safetensors pads its header so the data stays aligned
    atomic_write(path, (len(text).to_bytes(8, "little") + text, body))


def read_tensors(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Read a safetensors file and its metadata (less the checksum, verified when present),
    raising CheckpointError that names the file on any problem."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError as e:
        raise CheckpointError(f"checkpoint file {path} does not exist") from e
    try:
        tensors = st_load(data)
        header, body = _split(data)
    except (SafetensorError, ValueError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{path} is corrupt or not a safetensors file ({e})") from e
    metadata = dict(header.get("__metadata__") or {})
    if CHECKSUM in metadata and metadata.pop(CHECKSUM) != _digest(header, body):
        raise CheckpointError(
            f"{path}: checksum mismatch, the file is damaged; restore it from a copy or make "
            "it again (train the run again)"
        )
    return tensors, metadata


def _split(data: bytes) -> tuple[dict, memoryview]:
    """A safetensors file's parsed JSON header and its tensor bytes."""
    n = int.from_bytes(data[:8], "little")
    return json.loads(data[8 : 8 + n]), memoryview(data)[8 + n :]


def _digest(header: dict, body: memoryview) -> str:
    """SHA-256 of a safetensors file's content: its canonical header (names, dtypes, shapes,
    offsets, metadata less the checksum), then its tensor bytes."""
    meta = {k: v for k, v in (header.get("__metadata__") or {}).items() if k != CHECKSUM}
    digest = hashlib.sha256(_canonical({**header, "__metadata__": meta}))
    digest.update(body)
    return f"sha256:{digest.hexdigest()}"


def _canonical(obj: dict) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()


def _json_digest(obj: dict) -> str:
    return f"sha256:{hashlib.sha256(_canonical(obj)).hexdigest()}"


def write_json(path: str | Path, obj: dict) -> None:
    """Write a JSON object atomically, indented, its checksum in a last ``checksum`` entry."""
    plain = json.loads(json.dumps(obj))  # what a reader will see (tuples as lists, keys as str)
    plain.pop(CHECKSUM, None)
    doc = {**plain, CHECKSUM: _json_digest(plain)}
    atomic_write(path, (json.dumps(doc, indent=2) + "\n").encode())


def read_json(path: str | Path) -> dict:
    """Read a JSON object (less its checksum, verified when present), raising CheckpointError
    that names the file if it is not one, is damaged or was edited by hand."""
    path = Path(path)
    try:
        obj = json.loads(path.read_bytes())
    except FileNotFoundError as e:
        raise CheckpointError(f"{path} does not exist") from e
    except ValueError as e:  # JSONDecodeError, or bytes that are no text at all
        raise CheckpointError(f"{path} is not valid JSON ({e})") from e
    if not isinstance(obj, dict):
        raise CheckpointError(f"{path} is not valid JSON for pixdiff: expected an object")
    if CHECKSUM in obj and obj.pop(CHECKSUM) != _json_digest(obj):
        raise CheckpointError(
            f"{path}: checksum mismatch, the file is damaged or was edited by hand; to keep "
            f'your edits delete its "{CHECKSUM}" entry, else restore the file from a copy'
        )
    return obj


# ----------------------------------------------------------------------------- entries


def entry(d: dict, key: str, source: str | Path) -> Any:
    """``d[a][b]...`` for ``key`` 'a.b...'; CheckpointError "SOURCE: missing or malformed entry
    KEY" when a part is absent or not a mapping."""
    node: Any = d
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            raise CheckpointError(f"{source}: missing or malformed entry {key}")
        node = node[part]
    return node


@contextmanager
def malformed(source: str | Path, key: str) -> Iterator[None]:
    """Turn the KeyError/TypeError/ValueError of reading entry ``key`` into one CheckpointError
    line naming ``source`` and the entry (a missing sub-key is appended to ``key``)."""
    try:
        yield
    except CheckpointError:
        raise
    except KeyError as e:
        sub = f".{e.args[0]}" if e.args and isinstance(e.args[0], str) else ""
        raise CheckpointError(f"{source}: missing or malformed entry {key}{sub}") from e
    except (TypeError, ValueError) as e:
        raise CheckpointError(f"{source}: missing or malformed entry {key} ({e})") from e


# ----------------------------------------------------------------------------- network configs


def net_config_to_dict(config: UNetConfig | DiTConfig) -> dict:
    # the exact type: a video config is a subclass of its image config
    kind = next(k for k, v in _NET_TYPES.items() if type(config) is v)
    return {"type": kind, **config.to_dict()}


def net_config_from_dict(d: dict) -> UNetConfig | DiTConfig:
    d = dict(d)
    kind = d.pop("type", None)
    if kind not in _NET_TYPES:
        raise CheckpointError(f"unknown network type {kind!r}; valid: {sorted(_NET_TYPES)}")
    return _NET_TYPES[kind].from_dict(d)


def load_state_into(module: nn.Module, state: dict[str, torch.Tensor], source: str) -> None:
    """Copy ``state`` into ``module``, naming missing, unexpected, mis-shaped, non-float and
    non-finite tensors."""
    own = module.state_dict()
    mismatch = state_mismatch(own, state, theirs="checkpoint", ours="network")
    if mismatch:
        raise CheckpointError(
            f"{source} does not fit this network (another architecture?): {mismatch}"
        )
    check_values(state, own, source)
    module.load_state_dict({k: v.to(own[k].dtype) for k, v in state.items()})


def check_values(state: dict[str, torch.Tensor], own: dict[str, torch.Tensor], source: str) -> None:
    """Refuse a tensor that is not floating point where the network's is (a cast would hide
    it) and one holding NaN or infinity (a diverged or damaged run)."""
    for k, v in state.items():
        if own[k].is_floating_point() and not v.is_floating_point():
            raise CheckpointError(
                f"{source}: tensor {k} is {v.dtype}, not floating point; the file was not "
                "written by pixdiff or is damaged"
            )
        if v.is_floating_point() and not torch.isfinite(v).all():
            raise CheckpointError(
                f"{source}: tensor {k} holds NaN or infinite values; the run diverged or the "
                "file is damaged (resume from an earlier copy)"
            )


# ----------------------------------------------------------------------------- loading a model


@dataclass
class LoadedModel:
    """A trained model ready to sample: its denoiser, network and what it was trained on."""

    denoiser: Denoiser
    net: nn.Module
    config: dict
    class_names: list[str] | None
    path: Path
    frames: int | None = None  # a video model's clip length when sampling; None: num_frames

    @property
    def image_shape(self) -> tuple[int, ...]:
        """A sample's shape: (C, H, W) for an image model, (F, C, H, W) for a video model."""
        c = self.net.config
        image = (c.in_channels, c.image_size, c.image_size)
        if not hasattr(c, "num_frames"):
            return image
        return (c.sample_frames(self.frames), *image)

    def with_frames(self, frames: int | None) -> LoadedModel:
        """This video model sampling clips of ``frames`` frames (None: its ``num_frames``);
        one line beyond the frames it was trained on, or for an image model."""
        if frames is not None and not hasattr(self.net.config, "num_frames"):
            raise ValueError(f"--frames {frames}: {self.path} is an image model, not a video one")
        if frames is not None:
            self.net.config.sample_frames(frames)
        return replace(self, frames=frames)

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
    """(weights file, config file) for a run directory or a .safetensors file beside config.json;
    a run without ema.safetensors warns that its raw weights are used."""
    if path.is_dir():
        if not (path / CONFIG).exists():  # before the EMA warning, which would mislead
            raise CheckpointError(f"{path / CONFIG} does not exist: {path} is not a pixdiff run")
        if ema and not (path / EMA).exists():
            warnings.warn(
                f"{path} has no {EMA}; sampling from the raw weights {MODEL}", stacklevel=2
            )
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
    net = build_run_net(config, config_path)
    state, _ = read_tensors(weights)
    load_state_into(net, state, str(weights))
    net.to(device).eval().requires_grad_(False)
    denoiser = run_denoiser(net, config, config_path)
    return LoadedModel(denoiser, net, config, config.get("class_names"), Path(path))


def build_run_net(config: dict, source: str | Path) -> nn.Module:
    """A fresh network as a run's config.json describes it (with its text encoder, whose weights
    are in the same file, when the run is text-conditioned)."""
    entry(config, "train", source)
    with malformed(source, "net"):
        net = build_net(net_config_from_dict(entry(config, "net", source)))
    if config.get("text_conditioned"):
        with malformed(source, "train.text"):
            text = from_dict(TextConfig, config["train"].get("text", {}), f"{source}: train.text")
        text = encoder_in_run(text, Path(source).parent)
        if text.encoder != "builtin" and not Path(text.encoder).is_dir():
            raise CheckpointError(
                f"{source}: text encoder folder {text.encoder} not found (train.text.encoder "
                "is relative to the run directory); copy the encoder's folder there, or set "
                f"train.text.encoder in {source} to its path on this machine and delete that "
                "file's checksum entry (RELIABILITY.md)"
            )
        net = TextConditionedNet(net, text.build_encoder())
    return net


def encoder_in_run(text: TextConfig, run_dir: Path) -> TextConfig:
    """``text`` with its Hugging Face encoder folder, which a run stores relative to its
    directory (runs from before, as an absolute path), as a path from here; the builtin
    encoder unchanged. The path is joined lexically (``..`` against the run's path as given),
    so it holds before the run directory exists."""
    if text.encoder == "builtin":
        return text
    folder = os.path.abspath(Path(run_dir).expanduser() / Path(text.encoder).expanduser())
    return replace(text, encoder=folder)


def run_denoiser(net: nn.Module, config: dict, source: str | Path) -> Denoiser:
    diff = entry(config, "train.diffusion", source)
    with malformed(source, "train.diffusion"):
        # runs from before diffusion.learn_sigma existed: the network config alone says it
        if diff.get("learn_sigma", net.config.learn_sigma) != net.config.learn_sigma:
            raise CheckpointError(
                f"{source}: diffusion.learn_sigma={diff['learn_sigma']} but the network has "
                f"learn_sigma={net.config.learn_sigma}; the config was edited or is corrupt"
            )
        return Denoiser(
            net,
            schedule_from_dict(diff["schedule"]),
            diff["prediction"],
            sigma_data=diff["sigma_data"],
            learn_sigma=net.config.learn_sigma,
            clip_x0=config.get("sampling", {}).get("clip_x0"),
        )
