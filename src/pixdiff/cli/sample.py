"""``pixdiff sample`` and ``pixdiff demo``: draw images from a run or the shipped model."""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from pixdiff.checkpoint import LoadedModel, load
from pixdiff.guidance import DEFAULT_PERCENTILE, THRESHOLDS, GuidanceOptions
from pixdiff.images import make_grid, save_gif, save_png
from pixdiff.noisy_classifier import load_noisy_classifier
from pixdiff.pipelines.cascade import Stage, cascade
from pixdiff.pipelines.generate import TrajectoryRecorder, class_grid, generate
from pixdiff.samplers import SAMPLERS
from pixdiff.sampling import Sampling, steps_for_nfe
from pixdiff.timesteps import SPACINGS

ASSETS = Path(__file__).resolve().parents[1] / "assets"
SHIPPED_MODEL = ASSETS / "fashion_unet"
# with --prompt and no RUN: the emoji text-to-image model; --cascade with no runs: the emoji
# cascade (that model, then its 32 -> 64 super-resolution stage)
SHIPPED_TEXT_MODEL = ASSETS / "emoji_unet"
SHIPPED_CASCADE = (SHIPPED_TEXT_MODEL, ASSETS / "emoji_sr")


def add_run_argument(p: argparse.ArgumentParser) -> None:
    """The optional RUN positional that sample, eval and bench share."""
    p.add_argument(
        "run",
        nargs="?",
        default=None,
        help="run directory or .safetensors checkpoint (default: the shipped Fashion-MNIST "
        "model; with --prompt, the shipped emoji text-to-image model)",
    )


def add_parser(sub) -> None:
    p = sub.add_parser(
        "sample",
        help="generate images from a trained model or a cascade",
        description="Generate images; writes grid.png and one PNG per image into --out. "
        "With --cascade BASE_RUN SR_RUN..., a base model's images are super-resolved by each "
        "SR run in turn (see docs/concepts.md, Super-resolution and cascades).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    add_run_argument(p)
    p.add_argument("-n", "--num", type=int, default=64, help="number of images")
    add_sampler_flags(p)
    p.add_argument(
        "--nfe",
        type=int,
        default=None,
        metavar="BUDGET",
        help="network-evaluation budget: use the most steps of --sampler that fit "
        "(overrides --steps)",
    )
    p.add_argument(
        "--float64",
        action="store_true",
        help="keep the sampler state in float64 (reference solutions)",
    )
    add_conditioning_flags(p)
    add_cascade_flags(p)
    p.add_argument("--batch-size", type=int, default=64, help="images per sampler batch")
    p.add_argument(
        "--trajectory",
        action="store_true",
        help="also save trajectory.gif: x_t beside the predicted x0 at every step",
    )
    add_output_flags(p, default_out="out/samples")
    p.set_defaults(func=run)


def add_sampler_flags(p) -> None:
    """--sampler, --steps, --grid, --eta: how each image is sampled."""
    p.add_argument("--sampler", default="ddim", choices=sorted(SAMPLERS), help="sampler")
    p.add_argument("--steps", type=int, default=50, help="sampler steps")
    p.add_argument(
        "--grid",
        default=None,
        choices=SPACINGS,
        help="time grid (default: trailing for discrete schedules, karras for EDM)",
    )
    p.add_argument("--eta", type=float, default=None, help="DDIM eta (0 deterministic .. 1)")


def add_conditioning_flags(p) -> None:
    """--class, --prompt, --guidance and the guidance group."""
    p.add_argument(
        "--class",
        dest="class_",
        default=None,
        metavar="NAME_OR_ID",
        help="class name or id for every image; 'all' cycles through the classes",
    )
    p.add_argument(
        "--prompt",
        default=None,
        metavar="TEXT",
        help="prompt for every image, for a text-conditioned model (trained on captioned data)",
    )
    p.add_argument(
        "--guidance",
        type=float,
        default=None,
        help="classifier-free guidance scale w (1 = conditional; default from the run)",
    )
    _add_guidance_flags(p)


def add_output_flags(p, *, default_out: str) -> None:
    """--seed, --out, --raw, --device, --no-progress."""
    p.add_argument("--seed", type=int, default=0, help="seed; image i uses seed + i")
    p.add_argument("--out", default=default_out, help="output directory")
    p.add_argument("--raw", action="store_true", help="use the raw (non-EMA) weights")
    p.add_argument("--device", default="cpu", help="cpu | cuda | cuda:N")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


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
        type=int,
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
        type=float,
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


def _add_guidance_flags(p) -> None:
    g = p.add_argument_group("guidance (see docs/concepts.md, Guidance)")
    g.add_argument(
        "--negative-class",
        default=None,
        metavar="NAME_OR_ID",
        help="steer away from this class: classifier-free guidance's second branch uses it "
        "instead of the null label (works without --class too)",
    )
    g.add_argument(
        "--negative-prompt",
        default=None,
        metavar="TEXT",
        help="steer away from this prompt: classifier-free guidance's second branch uses it "
        "instead of the empty prompt (text-conditioned models; works without --prompt too)",
    )
    g.add_argument(
        "--guidance-interval",
        type=float,
        nargs=2,
        default=None,
        metavar=("LO", "HI"),
        help="apply classifier-free guidance only for times t in [LO, HI] (t = 1 is noise; "
        "Kynkaanniemi et al. 2024); default: everywhere",
    )
    g.add_argument(
        "--cfg-rescale",
        type=float,
        default=0.0,
        metavar="PHI",
        help="CFG-rescale phi in [0, 1] against over-exposure (Lin et al. 2023 use 0.7)",
    )
    g.add_argument(
        "--threshold",
        default="none",
        choices=THRESHOLDS,
        help="clip the predicted x0: static to [-1, 1], or dynamic (Imagen, Saharia et al. 2022)",
    )
    g.add_argument(
        "--threshold-percentile",
        type=float,
        default=None,
        metavar="P",
        help="percentile p in (0, 1] of |x0| for --threshold dynamic "
        f"(default {DEFAULT_PERCENTILE})",
    )
    g.add_argument(
        "--classifier",
        default=None,
        metavar="DIR",
        help="classifier guidance with a noise-conditional classifier from "
        "`pixdiff train-classifier` (needs --class; works for unconditional models too)",
    )
    g.add_argument(
        "--classifier-scale",
        type=float,
        default=None,
        metavar="S",
        help="classifier guidance scale s (Dhariwal & Nichol 2021; "
        f"default {GuidanceOptions().classifier_scale:g})",
    )


def class_id(text: str, names: list[str], flag: str = "--class") -> int:
    """A class name (case-insensitive) or id -> its id."""
    lookup = {name.lower(): i for i, name in enumerate(names)}
    if text.lower() in lookup:
        return lookup[text.lower()]
    if text.isdigit() and int(text) < len(names):
        return int(text)
    raise ValueError(
        f"unknown class {text!r} for {flag}; valid: {names} or ids 0..{len(names) - 1}"
        + (", or 'all'" if flag == "--class" else "")
    )


def class_names(model: LoadedModel, classifier=None) -> list[str]:
    """The class names to pick from: the model's, else a guiding classifier's, else none."""
    if model.num_classes:
        return model.class_names or [str(i) for i in range(model.num_classes)]
    if classifier is not None:
        return classifier.class_names or [str(i) for i in range(classifier.num_classes)]
    return []


def parse_class(
    text: str | None, model: LoadedModel, n: int, classifier=None
) -> torch.Tensor | None:
    """'all' cycles the classes; a name (case-insensitive) or an id selects one."""
    if text is None:
        return None
    names = class_names(model, classifier)
    if not names:
        raise ValueError("--class given, but this model is unconditional (add --classifier DIR)")
    if text == "all":
        return torch.arange(n) % len(names)
    return torch.full((n,), class_id(text, names))


def guidance_options(args, model: LoadedModel) -> GuidanceOptions:
    """The guidance flags as GuidanceOptions (validated there)."""
    if args.classifier_scale is not None and args.classifier is None:
        raise ValueError("--classifier-scale needs --classifier DIR")
    if args.threshold_percentile is not None and args.threshold != "dynamic":
        raise ValueError("--threshold-percentile needs --threshold dynamic")
    negative = None
    if args.negative_class is not None:
        if not model.num_classes:
            raise ValueError("--negative-class needs a class-conditional model; this one is not")
        negative = class_id(args.negative_class, class_names(model), "--negative-class")
    classifier = None
    if args.classifier is not None:
        classifier = load_noisy_classifier(args.classifier, device=args.device)
    given = {"percentile": args.threshold_percentile, "classifier_scale": args.classifier_scale}
    return GuidanceOptions(
        negative_label=negative,
        negative_prompt=args.negative_prompt,
        interval=tuple(args.guidance_interval) if args.guidance_interval else None,
        rescale=args.cfg_rescale,
        threshold=args.threshold,
        classifier=classifier,
        **{name: value for name, value in given.items() if value is not None},
    )


def check_conditioning_flags(args, model: LoadedModel) -> None:
    """One clear line for a class flag on a text model or a prompt flag on any other."""
    given = {
        "--class": args.class_,
        "--negative-class": args.negative_class,
        "--prompt": args.prompt,
        "--negative-prompt": args.negative_prompt,
    }
    classes = [f for f in ("--class", "--negative-class") if given[f] is not None]
    prompts = [f for f in ("--prompt", "--negative-prompt") if given[f] is not None]
    if model.text_encoder is not None and classes:
        raise ValueError(
            f"{' and '.join(classes)} given, but this model is text-conditioned: "
            "use --prompt TEXT (and --negative-prompt TEXT)"
        )
    if model.text_encoder is None and prompts:
        kind = "class-conditional (use --class)" if model.num_classes else "unconditional"
        raise ValueError(
            f"{' and '.join(prompts)} need(s) a text-conditioned model (trained on captioned "
            f"data); this one is {kind}"
        )


def cfg_scale(args, model: LoadedModel, *, steer: bool) -> float:
    """--guidance, else the run's default when there is a class or prompt to steer by (or away
    from)."""
    shaped = args.guidance_interval is not None or args.cfg_rescale != 0
    conditional = model.num_classes or model.text_encoder is not None
    if conditional and not steer and (shaped or args.guidance not in (None, 1.0)):
        how = (
            "--prompt TEXT or --negative-prompt TEXT"
            if model.text_encoder is not None
            else "--class NAME_OR_ID (or 'all') or --negative-class"
        )
        raise ValueError(
            "classifier-free guidance (--guidance, --guidance-interval, --cfg-rescale) steers "
            f"towards a condition: pass {how}"
        )
    if args.guidance is not None:
        return args.guidance
    return model.config["train"]["sample"]["guidance"] if steer and conditional else 1.0


def shipped(path: Path) -> Path:
    """A shipped model's folder, or a FileNotFoundError saying to pass a run instead."""
    if not (path / "config.json").exists():
        raise FileNotFoundError(f"the shipped model is missing from {path}; pass a run directory")
    return path


def load_model(path: str | None, *, ema: bool, device: str, text: bool = False) -> LoadedModel:
    """The run at ``path``; None: the shipped Fashion-MNIST model, or with ``text`` the shipped
    emoji text-to-image model."""
    if path is None:
        path = shipped(SHIPPED_TEXT_MODEL if text else SHIPPED_MODEL)
    return load(path, ema=ema, device=device)


def steering(
    args, model: LoadedModel, n: int
) -> tuple[torch.Tensor | None, float, GuidanceOptions]:
    """The conditioning flags checked against ``model``: (labels, CFG scale, guidance options)
    for n images."""
    check_conditioning_flags(args, model)
    options = guidance_options(args, model)
    labels = parse_class(args.class_, model, n, options.classifier)
    steer = [labels, args.negative_class, args.prompt, args.negative_prompt]
    return labels, cfg_scale(args, model, steer=any(s is not None for s in steer)), options


def sampler_options(args) -> dict | None:
    """The sampler's own options given as flags (--eta)."""
    return {"eta": args.eta} if args.eta is not None else None


def run(args) -> int:
    if args.cascade is not None:
        from pixdiff.cli.cascade import run_cascade  # it imports this module's helpers

        return run_cascade(args)
    check_no_cascade_flags(args)
    text = args.prompt is not None or args.negative_prompt is not None
    model = load_model(args.run, ema=not args.raw, device=args.device, text=text)
    if model.sr is not None:
        raise ValueError(
            f"{model.path} is a super-resolution model ({model.sr.low_res_size} -> "
            f"{model.image_shape[-1]}): use `pixdiff upscale RUN --input IMAGE` or "
            "`pixdiff sample --cascade BASE_RUN RUN`"
        )
    labels, guidance, options = steering(args, model, args.num)
    recorder = TrajectoryRecorder(model.denoiser) if args.trajectory else None
    steps = steps_for_nfe(args.sampler, args.nfe) if args.nfe is not None else args.steps
    x = generate(
        model.denoiser,
        model.image_shape,
        n=args.num,
        labels=labels,
        prompts=args.prompt,
        num_classes=model.num_classes,
        guidance=guidance,
        sampler=args.sampler,
        steps=steps,
        seed=args.seed,
        batch_size=args.batch_size,
        options=sampler_options(args),
        device=args.device,
        progress=not args.no_progress,
        recorder=recorder,
        dtype=torch.float64 if args.float64 else torch.float32,
        spacing=args.grid,
        guidance_options=options,
    )
    paths = write_samples(x, Path(args.out), nrow=_row_length(labels, model, args.num))
    if recorder is not None:
        frames = [
            make_grid(torch.cat([xt[:8], x0[:8]]).clamp(-1, 1), nrow=min(8, len(xt)))
            for xt, x0 in recorder.frames
        ]
        paths.append(save_gif(frames, Path(args.out) / "trajectory.gif", scale=3))
    print(f"wrote {args.num} images ({args.sampler}, {steps} steps); grid: {paths[0]}")
    for extra in paths[1:]:
        print(f"also wrote {extra}")
    return 0


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


def _row_length(labels, model: LoadedModel, n: int) -> int | None:
    if labels is not None and model.num_classes and n % model.num_classes == 0:
        return n // model.num_classes if bool((labels[1:] != labels[:-1]).any()) else None
    return None


def write_samples(x: torch.Tensor, out: Path, *, nrow: int | None = None) -> list[Path]:
    """grid.png plus 000000.png, 000001.png, ... (clipped to [-1, 1])."""
    x = x.clamp(-1, 1)
    out.mkdir(parents=True, exist_ok=True)
    for i, img in enumerate(x):
        save_png(img, out / f"{i:06d}.png")
    return [save_png(make_grid(x, nrow=nrow), out / "grid.png", scale=2)]


# the emoji demo's prompts: captions of the train split
DEMO_PROMPTS = ("red apple", "cat face", "grinning face", "rocket", "sun with face", "snowman",
                "fire", "ghost")  # fmt: skip
DEMO_PER_PROMPT = 4


def run_demo(args) -> int:
    """The shipped models: one row per Fashion-MNIST class (guided, 50 DDIM steps), then emoji
    drawn from prompts at 32x32 and super-resolved to 64x64 by the shipped cascade."""
    model = load_model(None, ema=True, device="cpu")
    k, per_class = model.num_classes, 8
    x = class_grid(
        model.denoiser,
        model.image_shape,
        num_classes=k,
        per_row=per_class,
        max_rows=k,
        guidance=model.config["train"]["sample"]["guidance"],
        progress=True,
    )
    grid = write_samples(x, Path(args.out), nrow=per_class)[0]
    names = ", ".join(model.class_names or [])
    print(f"rows (top to bottom): {names}")
    print(f"demo grid: {grid}")
    stages = [Stage(load(shipped(path)), Sampling("dpmpp-2m", 25)) for path in SHIPPED_CASCADE]
    prompts = [p for p in DEMO_PROMPTS for _ in range(DEMO_PER_PROMPT)]
    low, high = cascade(stages, n=len(prompts), prompts=prompts, progress=True)
    emoji = Path(args.out) / "emoji"
    write_samples(low, emoji / "32px", nrow=2 * DEMO_PER_PROMPT)
    grid = write_samples(high, emoji / "64px", nrow=2 * DEMO_PER_PROMPT)[0]
    print(f"emoji prompts (two per row, {DEMO_PER_PROMPT} samples each): {', '.join(DEMO_PROMPTS)}")
    print(f"emoji grids: {emoji / '32px' / 'grid.png'} (base), {grid} (after 32 -> 64)")
    return 0
