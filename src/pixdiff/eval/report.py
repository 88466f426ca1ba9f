"""Score a model's samples: the metrics of ``pixdiff eval`` and of ``--eval-every`` in training.

Samples are drawn class-balanced from a class-conditional model (labels cycle through the
classes) and scored against real data of the same dataset, through one feature extractor.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from pixdiff.eval.features import FeatureExtractor, load_extractor
from pixdiff.eval.fid import FeatureStats, frechet_distance, inception_score, kid, precision_recall
from pixdiff.eval.reference import Reference, reference_stats
from pixdiff.guidance import GuidanceOptions
from pixdiff.pipelines.generate import Generative, generate
from pixdiff.pipelines.steering import Steering
from pixdiff.samplers import SAMPLERS
from pixdiff.sampling import Sampling

SAMPLE_METRICS = ("fd", "kid", "pr", "is", "acc")
LIKELIHOOD_METRICS = ("bpd",)
METRICS = SAMPLE_METRICS + LIKELIHOOD_METRICS
# the columns score_images can fill (eval.csv in training)
EVAL_FIELDS = ["fd", "kid", "kid_std", "precision", "recall", "is", "is_std", "acc"]


def parse_metrics(text: str) -> list[str]:
    """'fd,kid' -> ['fd', 'kid'], refusing unknown names with the valid ones."""
    names = [m.strip().lower() for m in text.split(",") if m.strip()]
    unknown = [m for m in names if m not in METRICS]
    if unknown or not names:
        raise ValueError(f"unknown metric(s) {unknown or [text]}; valid: {', '.join(METRICS)}")
    return list(dict.fromkeys(names))


@dataclass(frozen=True)
class SampleSpec:
    """How to draw the samples that are scored."""

    n: int = 10000
    sampler: str = "ddim"
    steps: int = 50
    guidance: float | None = 1.0  # None: the run's sample.guidance
    seed: int = 0
    batch_size: int = 250
    device: str = "cpu"
    progress: bool = False
    options: GuidanceOptions | None = None  # thresholding, CFG-rescale, ... (pixdiff.guidance)
    spacing: str | None = None  # the time grid (None: the schedule's default)
    net_dtype: str = "fp32"  # the network's precision (pixdiff.precision)


def balanced_labels(n: int, num_classes: int) -> Tensor | None:
    """Labels 0, 1, ..., K-1, 0, 1, ... for n samples (None for an unconditional model)."""
    return torch.arange(n) % num_classes if num_classes else None


def draw_samples(
    model: Generative, spec: SampleSpec, *, clip: bool = True
) -> tuple[Tensor, Tensor | None]:
    """spec.n samples (clipped to [-1, 1] unless ``clip`` is False) and their labels,
    class-balanced when the model is conditional."""
    labels = balanced_labels(spec.n, model.num_classes)
    options = spec.options or GuidanceOptions()
    steering = Steering(classes=labels, guidance=spec.guidance, options=options)
    sampling = Sampling(spec.sampler, spec.steps, spec.spacing, net_dtype=spec.net_dtype)
    x = generate(
        model, steering, sampling, n=spec.n, seed=spec.seed, batch_size=spec.batch_size,
        device=spec.device, progress=spec.progress,
    )  # fmt: skip
    return (x.clamp(-1, 1) if clip else x), labels


def score_images(
    images: Tensor,
    labels: Tensor | None,
    reference: Reference,
    extractor: FeatureExtractor,
    metrics: Sequence[str],
    *,
    seed: int = 0,
) -> dict[str, float]:
    """The sample metrics of ``images`` (N, C, H, W) in [-1, 1] against real ``reference``.

    fd: Frechet distance; kid, kid_std: KID and its std over subsets;
    precision, recall; is, is_std: Inception-Score-style score of the extractor's classes;
    acc: fraction of images the extractor classifies as their label.
    """
    feats, logits = extractor.embed(images)
    out: dict[str, float] = {"n": float(len(images))}
    if "fd" in metrics:
        out["fd"] = frechet_distance(FeatureStats.from_features(feats), reference.stats)
    if "kid" in metrics:
        gen = torch.Generator().manual_seed(seed)
        out["kid"], out["kid_std"] = kid(feats, reference.features.double(), generator=gen)
    if "pr" in metrics:
        out["precision"], out["recall"] = precision_recall(reference.features.double(), feats)
    if "is" in metrics or "acc" in metrics:
        if logits is None:
            raise ValueError(
                f"metrics 'is' and 'acc' need class logits; extractor {extractor.name!r} has none"
            )
        if "is" in metrics:
            # IS splits are contiguous: shuffle the class-ordered samples first
            order = torch.randperm(len(logits), generator=torch.Generator().manual_seed(seed))
            out["is"], out["is_std"] = inception_score(logits[order])
        if "acc" in metrics:
            out["acc"] = _accuracy(logits, labels, extractor)
    return out


def _accuracy(logits: Tensor, labels: Tensor | None, extractor: FeatureExtractor) -> float:
    if labels is None:
        raise ValueError("metric 'acc' needs a class-conditional model")
    if logits.shape[1] < int(labels.max()) + 1:
        raise ValueError(
            f"extractor {extractor.name!r} knows {logits.shape[1]} classes, fewer than the model"
        )
    return (logits.argmax(1).cpu() == labels).double().mean().item()


# how format_table names a metric whose scale needs saying: KID is MMD^2 (Binkowski et al.
# 2018) in the extractor's own feature units; papers print Inception KID multiplied by 1e3
SHOWN_AS = {"kid": "kid (MMD^2, unscaled: not x1e3)", "kid_std": "kid_std (spread, unscaled)"}


def eval_header(results: dict) -> str:
    """The line above ``pixdiff eval``'s tables: what was scored (run, sampler, steps and NFE,
    grid, guidance, extractor, n, seed), from its results record."""
    nfe = SAMPLERS[results["sampler"]].total_nfe(results["steps"])
    guidance = results.get("guidance")
    parts = [
        f"run {results['run']}",
        f"{results['sampler']} {results['steps']} steps ({nfe} NFE), {results['grid']} grid",
        "unguided" if guidance is None else f"guidance {guidance:g}",
        f"extractor {results['extractor']}",
        f"n {results['n']}",
        f"seed {results['seed']}",
    ]
    if results.get("dtype", "fp32") != "fp32":
        parts.append(results["dtype"])
    return "scored: " + " | ".join(parts)


def format_table(results: dict[str, float]) -> str:
    """Two aligned columns, metric (KID with its scale, ``SHOWN_AS``) and value."""
    rows = [
        (SHOWN_AS.get(k, k), v)
        for k, v in results.items()
        if not (isinstance(v, float) and math.isnan(v))
    ]
    width = max(len(k) for k, _ in rows)
    return "\n".join(
        f"{k:<{width}}  {v:.6g}" if isinstance(v, float) else f"{k:<{width}}  {v}" for k, v in rows
    )


class PeriodicEval:
    """The metrics of ``--eval-every`` in training: the real statistics and the extractor are
    loaded once; each call scores fresh samples of the current (EMA) denoiser."""

    def __init__(self, dataset: str, extractor: str, metrics: str, image_shape, device):
        self.metrics = [m for m in parse_metrics(metrics) if m in SAMPLE_METRICS]
        if not self.metrics:
            raise ValueError(f"run.eval_metrics: none of {metrics!r} is one of {SAMPLE_METRICS}")
        self.extractor = load_extractor(extractor, device=str(device))
        self.extractor.check_convertible(  # any size is resized; channels only 1 -> 3
            image_shape, who=f"run.eval_extractor {extractor!r}",
            fix="set run.eval_extractor to an extractor for this data",
        )  # fmt: skip
        split = "test" if dataset == "fashion-mnist" else "train"
        self.reference = reference_stats(dataset, split, self.extractor, image_shape=image_shape)
        self.image_shape = tuple(image_shape)

    def __call__(self, model: Generative, spec: SampleSpec) -> dict[str, float]:
        x, labels = draw_samples(model, spec)
        return score_images(x, labels, self.reference, self.extractor, self.metrics)
