"""The shipped motion classifier and clips seen through it: the feature network of the video
metrics (:mod:`pixdiff.eval.video`).

The network is :class:`pixdiff.nets.video_classifier.VideoClassifier`, a small (2+1)D CNN
trained on the 16 motion classes of the synthetic clips (``bench/train_motion_classifier.py``).
Its weights ship in ``pixdiff/assets/motion_classifier/`` as ``model.safetensors`` (float32)
and ``config.json``, read with the pickle-free helpers of :mod:`pixdiff.checkpoint`. It plays
for these clips the role I3D plays in FVD (Unterthiner et al. 2018): its distances compare only
between runs made with the same weights.

A :class:`ClipExtractor` maps clips (N, F, C, H, W) in [-1, 1] (or uint8) to features (N, D)
and motion logits (N, 16): grey frames are repeated to RGB and every frame is resized to the
network's side with the extractor resize of :mod:`pixdiff.eval.resize`.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor

from pixdiff.checkpoint import (
    CheckpointError,
    load_state_into,
    read_json,
    read_tensors,
    save_tensors,
    write_json,
)
from pixdiff.data import to_model_space
from pixdiff.eval.features import check_model_space, file_fingerprint
from pixdiff.eval.resize import fit_images
from pixdiff.nets.checks import config_from_dict, config_to_dict
from pixdiff.nets.video_classifier import VideoClassifier, VideoClassifierConfig

MOTION_EXTRACTOR = "motion-classifier"
MOTION_DIR = Path(__file__).resolve().parents[1] / "assets" / "motion_classifier"
WEIGHTS_NAME, CONFIG_NAME = "model.safetensors", "config.json"
FORMAT = "pixdiff.video_classifier/1"
_REBUILD = "restore the file, or rebuild it with `python bench/train_motion_classifier.py`"


def save_video_classifier(
    model: VideoClassifier, folder: str | Path, *, metadata: dict | None = None
) -> Path:
    """Write ``model.safetensors`` (float32) then ``config.json``, each atomically."""
    folder = Path(folder)
    save_tensors(folder / WEIGHTS_NAME, {k: v.float() if v.is_floating_point() else v
                                         for k, v in model.state_dict().items()})  # fmt: skip
    config = {"format": FORMAT, "model": config_to_dict(model.config), "metadata": metadata or {}}
    write_json(folder / CONFIG_NAME, config)
    return folder


def load_video_classifier(
    folder: str | Path | None = None, *, device: torch.device | str = "cpu"
) -> VideoClassifier:
    """Load a classifier written by :func:`save_video_classifier` (default: the shipped one),
    in eval mode; a missing, corrupt or foreign file raises one CheckpointError naming it."""
    folder = Path(folder) if folder is not None else MOTION_DIR
    config_path, weights_path = folder / CONFIG_NAME, folder / WEIGHTS_NAME
    try:
        config = read_json(config_path)
        if not isinstance(config, dict) or set(config) != {"format", "model", "metadata"}:
            raise CheckpointError(f"{config_path}: not a pixdiff video classifier ({FORMAT})")
        if config["format"] != FORMAT:
            raise CheckpointError(f"{config_path}: not a pixdiff video classifier ({FORMAT})")
        try:
            model = VideoClassifier(config_from_dict(VideoClassifierConfig, config["model"]))
        except (TypeError, ValueError) as err:
            raise CheckpointError(f"{config_path}: invalid model config ({err})") from None
        state, _ = read_tensors(weights_path)
        load_state_into(model, state, str(weights_path))
    except CheckpointError as err:
        raise CheckpointError(f"{err}; {_REBUILD}") from None
    return model.to(device).eval().requires_grad_(False)


def check_clips(clips: object, *, who: str) -> Tensor:
    """``clips`` as a (N, F, C, H, W) tensor with C in {1, 3}, in [-1, 1] or uint8; else one
    ValueError line naming ``who``."""
    if not isinstance(clips, Tensor) or clips.ndim != 5 or clips.shape[2] not in (1, 3):
        got = tuple(clips.shape) if isinstance(clips, Tensor) else type(clips).__name__
        raise ValueError(
            f"{who} takes clips shaped (N, F, C, H, W) with C = 1 or 3, got {got}; "
            f"an image batch (N, C, H, W) needs the image metrics (fd, kid, ...)"
        )
    if clips.shape[1] < 2:
        raise ValueError(f"{who} needs clips of at least 2 frames, got {tuple(clips.shape)}")
    check_model_space(clips.flatten(0, 1), None, who=who)
    return clips


class ClipExtractor:
    """A video classifier seen as ``clips -> (features (N, D), logits (N, K))``, float64 on
    the CPU, in batches without grad.

    Args:
        model: the classifier (eval mode).
        name: short name, used in cache keys and reports.
        fingerprint: identifies the weights (a file hash), so caches never mix them.
        batch_size: clips per forward pass.
    """

    def __init__(
        self, model: VideoClassifier, *, name: str, fingerprint: str = "", batch_size: int = 64
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.model = model.eval()
        self.name, self.fingerprint, self.batch_size = name, fingerprint, batch_size
        cfg = model.config
        self.frame_shape = (cfg.in_channels, cfg.image_size, cfg.image_size)
        self.feature_dim, self.num_classes = cfg.feature_dim, cfg.num_classes
        self.device = next(model.parameters()).device

    def __repr__(self) -> str:
        return f"ClipExtractor(name={self.name!r}, frame_shape={self.frame_shape})"

    def prepare(self, clips: Tensor) -> Tensor:
        """Float clips (B, F, C, H, W) -> (B, F, *frame_shape): grey to RGB, frames resized."""
        b, f = clips.shape[:2]
        frames = fit_images(clips.flatten(0, 1), self.frame_shape, who=f"extractor {self.name!r}")
        return frames.unflatten(0, (b, f))

    @torch.no_grad()
    def embed(self, clips: Tensor) -> tuple[Tensor, Tensor]:
        """Features (N, D) and logits (N, K) of clips (N, F, C, H, W) in [-1, 1] or uint8."""
        check_clips(clips, who=f"extractor {self.name!r}")
        feats, logits = [], []
        for start in range(0, len(clips), self.batch_size):
            x = clips[start : start + self.batch_size].to(self.device)
            x = to_model_space(x) if x.dtype == torch.uint8 else x.float()
            f = self.model.features(self.prepare(x))
            feats.append(f.double().cpu())
            logits.append(self.model.head(f).double().cpu())
        if not feats:
            return torch.empty(0, self.feature_dim, dtype=torch.float64), torch.empty(
                0, self.num_classes, dtype=torch.float64
            )
        return torch.cat(feats), torch.cat(logits)


def load_clip_extractor(
    spec: str = MOTION_EXTRACTOR, *, batch_size: int = 64, device: torch.device | str = "cpu"
) -> ClipExtractor:
    """``"motion-classifier"`` (the shipped weights) or a folder written by
    :func:`save_video_classifier`, as a :class:`ClipExtractor`. Local files only."""
    folder = MOTION_DIR if spec == MOTION_EXTRACTOR else Path(spec).expanduser()
    if not folder.is_dir():
        raise FileNotFoundError(
            f"unknown clip extractor {spec!r}: neither {MOTION_EXTRACTOR!r} nor a folder "
            f"written by save_video_classifier ({folder.resolve()})"
        )
    model = load_video_classifier(folder, device=device)
    name = MOTION_EXTRACTOR if spec == MOTION_EXTRACTOR else f"video-classifier-{folder.name}"
    fingerprint = file_fingerprint(folder / WEIGHTS_NAME)
    return ClipExtractor(model, name=name, fingerprint=fingerprint, batch_size=batch_size)
