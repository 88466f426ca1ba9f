"""Video metrics: scores of generated clips (N, F, C, H, W) against real clips (docs/video.md,
"Evaluation").

- ``fvd``: an FVD-style Frechet distance between clip features (Unterthiner et al. 2018,
  "Towards Accurate Generative Models of Video: A New Metric & Challenges", Sec. 3: the Frechet
  distance of Dowson & Landau 1982 between Gaussians fitted to clip embeddings). FVD embeds
  clips with an I3D network trained on Kinetics; here they are embedded by the shipped motion
  classifier (:mod:`pixdiff.eval.motion_classifier`), so the numbers are not FVDs: they
  compare only with numbers made with the same weights.
- ``motion``: motion accuracy, the share of clips whose motion, as the motion classifier
  predicts it, is the one their caption asked for (the video form of the classifier accuracy
  of class-conditional samples).
- ``frame-fd``: the Frechet distance between the features of every frame and those of every
  real frame, through the data's image extractor (the Fashion-MNIST classifier for grey clips,
  the emoji network for colour ones): the frame-level FID of video papers (e.g. Ho et al. 2022,
  "Video Diffusion Models", Sec. 4), which ignores motion.
- ``temporal``: temporal consistency, the mean over clips and consecutive frame pairs of
  ``|phi(x_{f+1}) - phi(x_f)|_2`` in the same image extractor's features, for the generated clips
  (``temporal``) and the real ones (``temporal_real``), with their ratio. It follows the frame
  consistency of Esser et al. 2023 ("Structure and Content-Guided Video Synthesis with Diffusion
  Models", Sec. 4.1: CLIP similarity of consecutive frames), in this data's own image features
  and as a distance. Flicker makes it larger than the real value, frozen frames smaller.

The real side (:func:`clip_reference`) is computed once per clip spec and extractor pair and
cached as a safetensors file, like the image references (:mod:`pixdiff.eval.reference`).
"""

from __future__ import annotations

import hashlib
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import Tensor

from pixdiff.checkpoint import CheckpointError, read_tensors, save_tensors
from pixdiff.data import ClipSpec, default_cache_dir, load_clips
from pixdiff.eval.classifier import EMOJI_DIR
from pixdiff.eval.features import DEFAULT_EXTRACTOR, FeatureExtractor, load_extractor
from pixdiff.eval.fid import FeatureStats, frechet_distance
from pixdiff.eval.motion_classifier import (
    MOTION_EXTRACTOR,
    ClipExtractor,
    check_clips,
    load_clip_extractor,
)

VIDEO_METRICS = ("fvd", "motion", "frame-fd", "temporal")
_FORMAT = "pixdiff.clip_reference/1"


def parse_video_metrics(text: str) -> list[str]:
    """'fvd,motion' -> ['fvd', 'motion'], refusing unknown names with the valid ones."""
    names = [m.strip().lower() for m in text.split(",") if m.strip()]
    unknown = [m for m in names if m not in VIDEO_METRICS]
    if unknown or not names:
        raise ValueError(
            f"unknown video metric(s) {unknown or [text]}; valid: {', '.join(VIDEO_METRICS)}"
        )
    return list(dict.fromkeys(names))


def frame_extractor_name(channels: int) -> str:
    """The image extractor of a clip's frames: the Fashion-MNIST classifier for grey clips,
    the emoji feature network for colour ones."""
    return DEFAULT_EXTRACTOR if channels == 1 else str(EMOJI_DIR)


@dataclass(frozen=True, eq=False)
class ClipReference:
    """The real clips' side of the video metrics.

    Attributes:
        clips: statistics of their motion-classifier features (for ``fvd``).
        frames: statistics of their frames' image features (for ``frame-fd``).
        temporal: each real clip's mean frame-to-frame feature change (N,) float64.
        clip_shape: (F, C, H, W) of the real clips; generated clips must match it.
    """

    clips: FeatureStats
    frames: FeatureStats
    temporal: Tensor
    clip_shape: tuple[int, int, int, int]


def frame_features(clips: Tensor, extractor: FeatureExtractor) -> Tensor:
    """Image features (N, F, D) float64 of every frame of clips (N, F, C, H, W)."""
    n, f = clips.shape[:2]
    return extractor.features(clips.flatten(0, 1)).unflatten(0, (n, f))


def temporal_change(feats: Tensor) -> Tensor:
    """Each clip's mean ``|phi(x_{f+1}) - phi(x_f)|_2`` over its F - 1 frame pairs: (N,) from
    frame features (N, F, D); 0 for a static clip."""
    return (feats[:, 1:] - feats[:, :-1]).norm(dim=-1).mean(dim=1)


def motion_accuracy(logits: Tensor, motions: Tensor) -> float:
    """Share of clips whose most likely motion (logits (N, K)) is their motion id (N,)."""
    if motions.shape != (len(logits),) or motions.dtype != torch.int64:
        raise ValueError(
            f"motion accuracy needs one int64 motion id per clip, shape ({len(logits)},), got "
            f"{motions.dtype} {tuple(motions.shape)}"
        )
    if len(motions) and not 0 <= int(motions.min()) <= int(motions.max()) < logits.shape[1]:
        raise ValueError(f"motion ids must be in 0..{logits.shape[1] - 1} (pixdiff.data.MOTIONS)")
    return (logits.argmax(1) == motions).double().mean().item()


def shuffle_frames(clips: Tensor, *, generator: torch.Generator) -> Tensor:
    """Every clip's frames in their own random order: the "frames shuffled in time" baseline
    of the FVD-style distance (each frame stays real; only the motion is destroyed)."""
    order = torch.stack([torch.randperm(clips.shape[1], generator=generator) for _ in clips])
    return clips[torch.arange(len(clips))[:, None], order]


def score_clips(
    clips: Tensor,
    motions: Tensor | None,
    reference: ClipReference,
    *,
    clip_extractor: ClipExtractor,
    frame_extractor: FeatureExtractor,
    metrics: Sequence[str] = VIDEO_METRICS,
) -> dict[str, float]:
    """The video metrics of ``clips`` (N, F, C, H, W) in [-1, 1] (or uint8) against real clips.

    Args:
        clips: the clips to score; (F, C, H, W) must be the reference's.
        motions: (N,) the motion id each clip was asked for (``motion`` only).
        reference: the real clips' side (:func:`clip_reference`).
        clip_extractor: the motion classifier (``fvd``, ``motion``).
        frame_extractor: the image extractor of the reference's frames (``frame-fd``,
            ``temporal``).
        metrics: any of :data:`VIDEO_METRICS`.
    """
    metrics = parse_video_metrics(",".join(metrics))
    check_clips(clips, who="the video metrics")
    if tuple(clips.shape[1:]) != reference.clip_shape:
        raise ValueError(
            f"the clips are shaped {tuple(clips.shape[1:])} (F, C, H, W) but the real reference "
            f"clips {reference.clip_shape}; score clips against real clips of their own shape"
        )
    if "motion" in metrics and motions is None:
        raise ValueError("metric 'motion' needs the motion id each clip was asked for")
    out: dict[str, float] = {"n": float(len(clips))}
    if "fvd" in metrics or "motion" in metrics:
        feats, logits = clip_extractor.embed(clips)
        if "fvd" in metrics:
            out["fvd"] = frechet_distance(FeatureStats.from_features(feats), reference.clips)
        if "motion" in metrics:
            out["motion_acc"] = motion_accuracy(logits, motions)
    if "frame-fd" in metrics or "temporal" in metrics:
        per_frame = frame_features(clips, frame_extractor)  # (N, F, D)
        if "frame-fd" in metrics:
            stats = FeatureStats.from_features(per_frame.flatten(0, 1))
            out["frame_fd"] = frechet_distance(stats, reference.frames)
        if "temporal" in metrics:
            out["temporal"] = temporal_change(per_frame).mean().item()
            out["temporal_real"] = reference.temporal.mean().item()
            out["temporal_ratio"] = out["temporal"] / max(out["temporal_real"], 1e-12)
    return out


def real_reference(
    clips: Tensor, *, clip_extractor: ClipExtractor, frame_extractor: FeatureExtractor
) -> ClipReference:
    """The :class:`ClipReference` of real clips (N, F, C, H, W), computed (not cached)."""
    check_clips(clips, who="the real reference")
    feats, _ = clip_extractor.embed(clips)
    per_frame = frame_features(clips, frame_extractor)
    return ClipReference(
        FeatureStats.from_features(feats), FeatureStats.from_features(per_frame.flatten(0, 1)),
        temporal_change(per_frame), tuple(clips.shape[1:]),
    )  # fmt: skip


def _reference_file(spec: ClipSpec, extractors: tuple, cache_dir: Path) -> Path:
    """Cache file of a spec's reference through two extractors (names and weights hashes)."""
    key = repr((sorted(asdict(spec).items()), [(e.name, e.fingerprint) for e in extractors]))
    digest = hashlib.sha256(key.encode()).hexdigest()[:16]
    name = f"clips-{spec.source}-{spec.split}-{spec.size}px-{spec.frames}f-n{spec.num_clips}"
    return cache_dir / f"{name}-{digest}.safetensors"


def _read(path: Path) -> ClipReference | None:
    """The cached reference at ``path``; None (warning if unreadable) when absent."""
    if not path.is_file():
        return None
    try:
        t, meta = read_tensors(path)
        shape = tuple(int(s) for s in meta["clip_shape"].split("x"))
        return ClipReference(
            FeatureStats(t["clip_mu"], t["clip_sigma"], int(meta["clip_n"])),
            FeatureStats(t["frame_mu"], t["frame_sigma"], int(meta["frame_n"])),
            t["temporal"].double(), shape,
        )  # fmt: skip
    except (CheckpointError, KeyError, ValueError) as err:
        warnings.warn(
            f"ignoring unreadable clip reference {path} ({err}); recomputing", stacklevel=3
        )
        return None


def clip_reference(
    spec: ClipSpec,
    *,
    clip_extractor: ClipExtractor,
    frame_extractor: FeatureExtractor,
    cache_dir: str | Path | None = None,
) -> ClipReference:
    """The reference of the real clips ``load_clips(spec)``, computed once, then read from a
    cache file (``default_cache_dir() / "reference-stats"``), keyed by every field of the spec
    and both extractors' names and weights hashes, and written atomically."""
    folder = Path(cache_dir).expanduser() if cache_dir else default_cache_dir() / "reference-stats"
    path = _reference_file(spec, (clip_extractor, frame_extractor), folder)
    cached = _read(path)
    if cached is not None:
        return cached
    ref = real_reference(
        load_clips(spec, progress=False).clips, clip_extractor=clip_extractor,
        frame_extractor=frame_extractor,
    )  # fmt: skip
    tensors = {"clip_mu": ref.clips.mu, "clip_sigma": ref.clips.sigma, "frame_mu": ref.frames.mu,
               "frame_sigma": ref.frames.sigma, "temporal": ref.temporal}  # fmt: skip
    meta = {"format": _FORMAT, "clip_n": str(ref.clips.n), "frame_n": str(ref.frames.n),
            "clip_shape": "x".join(map(str, ref.clip_shape))}  # fmt: skip
    try:
        save_tensors(path, tensors, meta)
    except OSError as err:  # a read-only home must not stop an evaluation
        warnings.warn(f"could not cache the clip reference to {path} ({err})", stacklevel=2)
    return ref


def evaluate_clips(
    clips: Tensor,
    motions: Tensor | None,
    reference: ClipSpec,
    *,
    metrics: Sequence[str] = VIDEO_METRICS,
    clip_extractor: str = MOTION_EXTRACTOR,
    frame_extractor: str | None = None,
    batch_size: int = 64,
    device: str = "cpu",
) -> dict[str, float]:
    """Score generated clips against the real clips of ``reference`` (the call of
    ``pixdiff eval`` for a video run): loads both extractors, the cached reference, then
    :func:`score_clips`.

    Args:
        clips: (N, F, C, H, W) in [-1, 1] or uint8, shaped like the reference's clips.
        motions: (N,) motion ids (indices into ``pixdiff.data.MOTIONS``) asked for.
        reference: the real clips (e.g. the held-out split of the run's clip spec).
        metrics: any of :data:`VIDEO_METRICS`.
        clip_extractor: ``"motion-classifier"`` or a saved video classifier's folder.
        frame_extractor: an image extractor (:func:`load_extractor`); default by channels
            (:func:`frame_extractor_name`).
        batch_size: clips (frames) per forward pass of the clip (image) extractor.
        device: where the networks run.
    """
    metrics = parse_video_metrics(",".join(metrics))
    check_clips(clips, who="the video metrics")
    videos = load_clip_extractor(clip_extractor, batch_size=batch_size, device=device)
    frames = load_extractor(
        frame_extractor or frame_extractor_name(reference.channels),
        batch_size=batch_size * 16, device=device,
    )  # fmt: skip
    ref = clip_reference(reference, clip_extractor=videos, frame_extractor=frames)
    return score_clips(
        clips, motions, ref, clip_extractor=videos, frame_extractor=frames, metrics=metrics
    )
