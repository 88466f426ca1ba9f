"""``pixdiff sample --cascade BASE_RUN SR_RUN ...``: parse the per-stage flags, build the stages,
call :func:`pixdiff.pipelines.cascade.cascade`."""

from __future__ import annotations

import argparse
from pathlib import Path

from pixdiff.checkpoint import LoadedModel, load
from pixdiff.cli.sample import (
    SHIPPED_CASCADE,
    guidance_options,
    parse_class,
    sampler_options,
    shipped,
    write_samples,
)
from pixdiff.guidance import GuidanceOptions
from pixdiff.pipelines.cascade import Stage, cascade
from pixdiff.sampling import Sampling


def per_stage(values: list | None, k: int, flag: str, default, what: str = "stage") -> list:
    """One value per stage from a flag given once (for all) or k times; ``default`` if absent."""
    if values is None:
        return [default] * k
    if k == 0:
        raise ValueError(f"{flag} is for super-resolution stages; this cascade has none")
    if len(values) not in (1, k):
        raise ValueError(f"{flag} takes 1 value or {k} (one per {what}), got {len(values)}")
    return list(values) * (k // len(values))


def _check_flags(args) -> None:
    """One line for RUN given beside --cascade, or a flag a cascade cannot use."""
    if args.run is not None:
        raise ValueError("give either RUN or --cascade BASE_RUN SR_RUN ..., not both")
    unsupported = {
        "--trajectory": args.trajectory,
        "--nfe": args.nfe is not None,
        "--float64": args.float64,
        "--classifier": args.classifier is not None,
    }
    bad = [flag for flag, given in unsupported.items() if given]
    if bad:
        raise ValueError(f"{', '.join(bad)} cannot be used with --cascade")


def _check_conditions(args, models: list[LoadedModel]) -> None:
    """One line for a class or prompt flag that no stage of the cascade takes."""
    classes = any(m.num_classes for m in models)
    text = any(m.text_encoder is not None for m in models)
    for flag, value, ok in (
        ("--class", args.class_, classes),
        ("--negative-class", args.negative_class, classes),
        ("--prompt", args.prompt, text),
        ("--negative-prompt", args.negative_prompt, text),
    ):
        if value is not None and not ok:
            kind = "class" if "class" in flag else "text"
            raise ValueError(f"{flag} given, but no stage of the cascade is {kind}-conditional")
    steer = (args.class_, args.negative_class, args.prompt, args.negative_prompt)
    guided = args.guidance not in (None, 1.0) or args.stage_guidance is not None
    if guided and all(s is None for s in steer):
        raise ValueError(
            "--guidance / --stage-guidance steer towards a condition: pass --class or --prompt"
        )


def stage_options(args, model: LoadedModel) -> GuidanceOptions:
    """The guidance flags for one stage: negative class / prompt only where the stage takes
    them, and the other CFG flags only where a class or prompt steers it."""
    text = model.text_encoder is not None
    local = argparse.Namespace(**vars(args))
    local.negative_class = args.negative_class if model.num_classes else None
    local.negative_prompt = args.negative_prompt if text else None
    steered = (model.num_classes and (args.class_ or args.negative_class)) or (
        text and (args.prompt or args.negative_prompt)
    )
    if not steered:
        local.guidance_interval, local.cfg_rescale = None, 0.0
    return guidance_options(local, model)


def build_stages(args, models: list[LoadedModel]) -> list[Stage]:
    k = len(models)
    steps = per_stage(args.stage_steps, k, "--stage-steps", args.steps)
    samplers = per_stage(args.stage_sampler, k, "--stage-sampler", args.sampler)
    guidance = per_stage(args.stage_guidance, k, "--stage-guidance", args.guidance)
    aug = [None, *per_stage(args.aug_level, k - 1, "--aug-level", None, "SR stage")]
    return [
        Stage(
            m,
            sampling=Sampling(samplers[i], steps[i], args.grid, sampler_options(args)),
            guidance=guidance[i],
            aug_level=aug[i],
            guidance_options=stage_options(args, m),
        )  # fmt: skip
        for i, m in enumerate(models)
    ]


def run_cascade(args) -> int:
    _check_flags(args)
    runs = args.cascade or [shipped(path) for path in SHIPPED_CASCADE]
    models = [load(path, ema=not args.raw, device=args.device) for path in runs]
    _check_conditions(args, models)
    labels = None
    if args.class_ is not None:
        labels = parse_class(args.class_, next(m for m in models if m.num_classes), args.num)
    outputs = cascade(
        build_stages(args, models), n=args.num, labels=labels, prompts=args.prompt,
        seed=args.seed, batch_size=args.batch_size, device=args.device,
        progress=not args.no_progress,
    )  # fmt: skip
    out = Path(args.out)
    grid = write_samples(outputs[-1], out)[0]
    if args.save_stages:
        for i, x in enumerate(outputs, 1):
            write_samples(x, out / f"stage{i}")
    sizes = " -> ".join(f"{x.shape[-1]}x{x.shape[-2]}" for x in outputs)
    print(f"wrote {args.num} images ({len(models)} stages, {sizes}); grid: {grid}")
    if args.save_stages:
        print(f"every stage's images: {out}/stage1 .. stage{len(outputs)}")
    return 0
