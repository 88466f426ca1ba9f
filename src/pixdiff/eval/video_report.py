"""Score a video model (``pixdiff eval RUN --metrics fvd,motion,frame-fd,temporal``): draw clips
for the captions of held-out real clips, then score them with :mod:`pixdiff.eval.video`
against other held-out real clips.

The prompts are the captions of ``ClipSpec(split="test", seed=1)`` (object-motion pairs the
training split never shows), and the reference is ``seed=0`` of the same split, n clips each:
the same protocol as ``bench/video_metrics.py``, whose real and frame-shuffled scores are the
baselines these numbers compare with.
"""

from __future__ import annotations

from collections.abc import Sequence

from pixdiff.data import CLIP_DATASETS, ClipSet, ClipSpec, load_clips
from pixdiff.eval.report import SampleSpec
from pixdiff.eval.video import VIDEO_METRICS, evaluate_clips
from pixdiff.pipelines.generate import Generative, generate
from pixdiff.pipelines.steering import Steering
from pixdiff.sampling import Sampling

SCORED_SEED, REFERENCE_SEED = 1, 0


def held_out_specs(dataset: str, clip_shape: tuple[int, ...], n: int) -> tuple[ClipSpec, ClipSpec]:
    """(the clips whose captions are prompted, the reference clips) of a synthetic clip set
    (``fashion-clips``, ``emoji-clips``) at the model's (F, C, H, W)."""
    if dataset not in CLIP_DATASETS:
        raise ValueError(
            f"the video metrics score against the synthetic clips ({', '.join(CLIP_DATASETS)}), "
            f"whose motions they know; got --data {dataset!r}"
        )
    frames, _, size, _ = clip_shape
    spec = ClipSpec(source=CLIP_DATASETS[dataset], size=size, frames=frames, num_clips=n,
                    split="test", seed=REFERENCE_SEED)  # fmt: skip
    scored = ClipSpec(**{**spec.__dict__, "seed": SCORED_SEED})
    return scored, spec


def draw_clips(model: Generative, prompted: ClipSet, spec: SampleSpec):
    """Clips (N, F, C, H, W) in [-1, 1] for ``prompted``'s captions (a text-conditioned model)
    or unconditional ones."""
    text = getattr(model, "text_encoder", None) is not None
    steering = Steering(prompts=list(prompted.captions) if text else None, guidance=spec.guidance)
    sampling = Sampling(spec.sampler, spec.steps, spec.spacing, net_dtype=spec.net_dtype)
    x = generate(
        model, steering, sampling, n=len(prompted), seed=spec.seed, batch_size=spec.batch_size,
        device=spec.device, progress=spec.progress,
    )  # fmt: skip
    return x.clamp(-1, 1), text


def score_video_model(
    model: Generative, dataset: str, spec: SampleSpec, metrics: Sequence[str] = VIDEO_METRICS
) -> dict[str, float]:
    """The video metrics of ``spec.n`` clips of ``model`` (a video run: sample shape
    (F, C, H, W)) prompted with held-out captions; ``motion`` needs a text-conditioned model."""
    shape = tuple(model.image_shape)
    if len(shape) != 4:
        raise ValueError(
            f"metrics {', '.join(VIDEO_METRICS)} score clips, but the model makes images shaped "
            f"{shape}; use fd, kid, pr, is or acc for an image model"
        )
    scored, reference = held_out_specs(dataset, shape, spec.n)
    prompted = load_clips(scored, progress=False)
    clips, text = draw_clips(model, prompted, spec)
    if "motion" in metrics and not text:
        raise ValueError("metric 'motion' needs a text-conditioned video model (captions)")
    return evaluate_clips(
        clips, prompted.motions, reference, metrics=metrics, device=spec.device,
        batch_size=max(1, spec.batch_size // 4),
    )  # fmt: skip
