"""``pixdiff sample --cascade BASE_RUN SR_RUN ...``: parse the per-stage flags, build the stages,
call :func:`pixdiff.pipelines.cascade.cascade`."""

from __future__ import annotations

from pixdiff.checkpoint import LoadedModel, load
from pixdiff.cli import flags
from pixdiff.cli.output import image_names, open_output, settings_of
from pixdiff.pipelines.cascade import Stage, cascade
from pixdiff.shipped import shipped_cascade


def per_stage(values: list | None, k: int, flag: str, default, what: str = "stage") -> list:
    """One value per stage from a flag given once (for all) or k times; ``default`` if absent."""
    if values is None:
        return [default] * k
    if k == 0:
        raise ValueError(f"{flag} is for super-resolution stages; this cascade has none")
    if len(values) not in (1, k):
        raise ValueError(f"{flag} takes 1 value or {k} (one per {what}), got {len(values)}")
    return list(values) * (k // len(values))


def check_no_cascade_flags(args) -> None:
    """One line for a per-stage flag given without --cascade."""
    given = [
        flag
        for flag, value in (
            ("--stage-steps", args.stage_steps),
            ("--stage-sampler", args.stage_sampler),
            ("--stage-guidance", args.stage_guidance),
            ("--aug-level", args.aug_level),
            ("--save-stages", args.save_stages or None),
        )
        if value is not None
    ]
    if given:
        raise ValueError(f"{', '.join(given)} need(s) --cascade BASE_RUN SR_RUN ...")


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


def build_stages(args, models: list[LoadedModel]) -> list[Stage]:
    k = len(models)
    steps = per_stage(args.stage_steps, k, "--stage-steps", args.steps)
    samplers = per_stage(args.stage_sampler, k, "--stage-sampler", args.sampler)
    guidance = per_stage(args.stage_guidance, k, "--stage-guidance", None)
    aug = [None, *per_stage(args.aug_level, k - 1, "--aug-level", None, "SR stage")]
    return [
        Stage(
            m,
            sampling=flags.sampling(args, sampler=samplers[i], steps=steps[i]),
            guidance=guidance[i],
            aug_level=aug[i],
        )
        for i, m in enumerate(models)
    ]


def run_cascade(args) -> int:
    _check_flags(args)
    runs = args.cascade or shipped_cascade()
    models = [load(path, ema=not args.raw, device=args.device) for path in runs]
    stages = build_stages(args, models)
    settings = settings_of(
        args, runs=[str(m.path) for m in models], seed=args.seed, seeds=flags.seeds(args),
        stages=[{"sampler": s.sampling.sampler, "steps": s.sampling.steps} for s in stages],
    )  # fmt: skip
    names = [*image_names(args.num), *(f"stage{i}" for i in range(1, len(models) + 1))]
    with open_output(args, command="sample", settings=settings, names=names) as out:
        outputs = cascade(
            stages, flags.steering(args), n=args.num, seed=args.seed,
            batch_size=args.batch_size, device=args.device, progress=not args.no_progress,
        )  # fmt: skip
        grid = out.write_images(outputs[-1])
        if args.save_stages:
            for i, x in enumerate(outputs, 1):
                out.write_images(x, f"stage{i}")
        sizes = " -> ".join(f"{x.shape[-1]}x{x.shape[-2]}" for x in outputs)
        print(f"wrote {args.num} images ({len(models)} stages, {sizes}); grid: {grid}")
        if args.save_stages:
            print(f"every stage's images: {out.path}/stage1 .. stage{len(outputs)}")
    return 0
