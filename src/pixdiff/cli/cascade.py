"""``pixdiff sample --cascade BASE_RUN SR_RUN ...``: parse the per-stage flags, build the stages,
call :func:`pixdiff.pipelines.cascade.cascade`."""

from __future__ import annotations

from pixdiff.adapters import load_run
from pixdiff.checkpoint import LoadedModel
from pixdiff.cli import flags
from pixdiff.cli.control_flags import with_control
from pixdiff.cli.output import image_names, open_output, settings_of
from pixdiff.cli.steering_flags import steering
from pixdiff.pipelines.cascade import Stage, cascade
from pixdiff.samplers import SAMPLERS
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


def add_cascade_flags(p) -> None:
    """--cascade and its per-stage options (pixdiff.cli.cascade)."""
    g = p.add_argument_group("cascades (see docs/concepts.md, Super-resolution and cascades)")
    g.add_argument(
        "--cascade",
        nargs="*",
        default=None,
        metavar="RUN",
        help="sample a cascade instead of RUN: a base run, then super-resolution runs "
        "(trained with --sr-from), each upsampling the previous stage's images; with no runs, "
        "the shipped emoji cascade (32x32 text-to-image, then 32 -> 64)",
    )
    g.add_argument(
        "--stage-steps",
        type=flags.positive,
        nargs="+",
        default=None,
        metavar="N",
        help="sampler steps per stage, one value for all or one per stage; None: --steps",
    )
    g.add_argument(
        "--stage-sampler",
        nargs="+",
        default=None,
        choices=sorted(SAMPLERS),
        metavar="NAME",
        help="sampler per stage, one for all or one per stage; None: --sampler",
    )
    g.add_argument(
        "--stage-guidance",
        type=flags.finite,
        nargs="+",
        default=None,
        metavar="W",
        help="CFG scale per stage, one for all or one per stage; None: --guidance, else each "
        "run's own. Applies to the stages a class or prompt steers",
    )
    g.add_argument(
        "--aug-level",
        type=float,
        nargs="+",
        default=None,
        metavar="T",
        help="noise conditioning augmentation time in [0, 1] of the super-resolution stages' "
        "low-res input, one for all or one per SR stage; None: each run's sr.aug_level (0.2 "
        "unless trained otherwise). 0 trusts the previous stage exactly",
    )
    g.add_argument(
        "--save-stages",
        action="store_true",
        help="also write every stage's images to --out/stage1, stage2, ...",
    )


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
        "--adapter (give the adapter run as the base stage)": args.adapter is not None,
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
    models = [load_run(path, ema=not args.raw, device=args.device) for path in runs]
    stages = build_stages(args, models)
    settings = settings_of(
        args, runs=[str(m.path) for m in models], seed=args.seed, seeds=flags.seeds(args),
        stages=[{"sampler": s.sampling.sampler, "steps": s.sampling.steps} for s in stages],
    )  # fmt: skip
    n, nrow = flags.image_count(args), flags.several_prompts(args)  # a grid row per prompt
    names = [*image_names(n), *(f"stage{i}" for i in range(1, len(models) + 1))]
    with open_output(args, command="sample", settings=settings, names=names) as out:
        outputs = cascade(
            stages, with_control(args, models[0], steering(args)), n=n, seed=args.seed,
            batch_size=args.batch_size, device=args.device, progress=not args.no_progress,
        )  # fmt: skip
        grid = out.write_images(outputs[-1], nrow=nrow)
        if args.save_stages:
            for i, x in enumerate(outputs, 1):
                out.write_images(x, f"stage{i}", nrow=nrow)
        sizes = " -> ".join(f"{x.shape[-1]}x{x.shape[-2]}" for x in outputs)
        print(f"wrote {n} images ({len(models)} stages, {sizes}); grid: {grid}")
        if args.save_stages:
            print(f"every stage's images: {out.path}/stage1 .. stage{len(outputs)}")
    return 0
