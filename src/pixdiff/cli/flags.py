"""Flags that several commands share, and what they build: the run to load, a
:class:`~pixdiff.pipelines.steering.Steering` and a :class:`~pixdiff.sampling.Sampling`."""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

from pixdiff.checkpoint import LoadedModel, load
from pixdiff.classifier_store import load_noisy_classifier
from pixdiff.cli import output
from pixdiff.cli.parallel import picard
from pixdiff.guidance import DEFAULT_PERCENTILE, THRESHOLDS, GuidanceOptions
from pixdiff.pipelines.model import Request
from pixdiff.pipelines.steering import Steering
from pixdiff.samplers import SAMPLERS
from pixdiff.sampling import Sampling, steps_for_nfe
from pixdiff.shipped import shipped_run
from pixdiff.timesteps import SPACINGS
from pixdiff.tuned_grids import TUNED, grids_path, run_sampling


def add_run_argument(p: argparse.ArgumentParser) -> None:
    """The optional RUN positional that sample, eval and bench share."""
    p.add_argument(
        "run",
        nargs="?",
        default=None,
        help="run directory or .safetensors checkpoint (default: the shipped Fashion-MNIST "
        "model; with --prompt, the shipped emoji text-to-image model)",
    )


def add_sampler_flags(p, *, run_defaults: bool = False) -> None:
    """--sampler, --steps, --grid, --eta: how each image is sampled; with ``run_defaults``
    --sampler and --steps default to None (the caller fills in the run's own)."""
    own = " (%(default)s: the run's own, {} unless it says otherwise)" if run_defaults else ""
    sampler, steps = (None, None) if run_defaults else ("ddim", 50)
    names = sorted(SAMPLERS)
    p.add_argument("--sampler", default=sampler, choices=names, help="sampler" + own.format("ddim"))
    p.add_argument("--steps", type=positive, default=steps, help="sampler steps" + own.format(50))
    p.add_argument(
        "--grid",
        default=None,
        choices=(*SPACINGS, TUNED),
        help="time grid; 'tuned': the run's own for the sampler and budget (made by `pixdiff "
        "tune-grid`). Default: the run's tuned grid where it has one for them, else trailing "
        "for discrete schedules, karras for EDM",
    )
    p.add_argument("--eta", type=non_negative, default=None, help="DDIM eta (0 deterministic .. 1)")


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
        type=finite,
        default=None,
        help="classifier-free guidance scale w (1 = conditional; default from the run)",
    )
    add_guidance_flags(p)


def add_output_flags(p, *, command: str) -> None:
    """--seed, --out, --overwrite-out, --raw, --device, --no-progress."""
    p.add_argument("--seed", type=seed, default=0, help="seed; image i uses seed + i")
    output.add_output_flags(p, command=command)
    p.add_argument("--raw", action="store_true", help="use the raw (non-EMA) weights")
    add_device_flag(p)
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def add_device_flag(p) -> None:
    p.add_argument(
        "--device",
        type=device,
        default="cpu",
        help="cpu | cuda | cuda:N | auto (cuda when available, else cpu)",
    )


# ----------------------------------------------------------------------------- flag values

MAX_IMAGES = 100_000  # per invocation: the images are kept in memory until written
MAX_NFE = 100_000  # network evaluations per image; the steps that fit a budget are counted
# one seed range for every command, run.seed's: seeds seed .. seed + n - 1 stay below 2**32,
# where a cascade's augmentation noise streams start (pixdiff.low_res.AUG_SEED_OFFSET)
MAX_SEED = 2**32 - 1


def int_in(lo: int, hi: int | None = None) -> Callable[[str], int]:
    """An argparse type: an integer in [lo, hi] (hi None: no upper bound)."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
        if value < lo or (hi is not None and value > hi):
            bound = f"[{lo}, {hi}]" if hi is not None else f">= {lo}"
            raise argparse.ArgumentTypeError(f"must be {bound}, got {value}")
        return value

    return parse


def float_in(lo: float | None = None, hi: float | None = None) -> Callable[[str], float]:
    """An argparse type: a finite number in [lo, hi] (None: unbounded on that side)."""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
        if not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"must be a finite number, got {text!r}")
        if (lo is not None and value < lo) or (hi is not None and value > hi):
            bound = f"[{lo if lo is not None else '-inf'}, {hi if hi is not None else 'inf'}]"
            raise argparse.ArgumentTypeError(f"must be in {bound}, got {value:g}")
        return value

    return parse


count = int_in(1, MAX_IMAGES)
positive = int_in(1)
seed = int_in(0, MAX_SEED)
finite = float_in()
non_negative = float_in(0.0)


def nfe_budget(nfe: int) -> int:
    """``nfe``, refused (ValueError) over MAX_NFE, so that counting the steps that fit ends."""
    if nfe > MAX_NFE:
        raise ValueError(f"--nfe {nfe} is over the limit of {MAX_NFE} network evaluations")
    return nfe


def seeds(args) -> list[int]:
    """[first, last] seed of ``args.num`` images from ``args.seed``; one line if the last one
    passes MAX_SEED."""
    last = args.seed + args.num - 1
    if last > MAX_SEED:
        raise ValueError(
            f"--seed {args.seed} with -n {args.num} would use seeds up to {last}, over the "
            f"largest seed {MAX_SEED}; use --seed {MAX_SEED - args.num + 1} or lower"
        )
    return [args.seed, last]


def device(text: str) -> str:
    """An argparse type: cpu, cuda, cuda:N, mps or auto (resolved to cuda or cpu), checked
    against this machine."""
    import torch

    text = device_spec(text)
    if text == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return text


def device_spec(text: str) -> str:
    """An argparse type: like :func:`device`, but ``auto`` is kept (``train`` resolves it per
    process, for torchrun)."""
    import torch

    if text == "auto":
        return text
    kind, _, index = text.partition(":")
    if kind not in ("cpu", "cuda", "mps") or (index and not index.isdigit()):
        raise argparse.ArgumentTypeError(f"unknown device {text!r}; use cpu, cuda, cuda:N or auto")
    if kind == "cuda" and not torch.cuda.is_available():
        raise argparse.ArgumentTypeError("CUDA is not available on this machine; use --device cpu")
    if kind == "cuda" and index and int(index) >= torch.cuda.device_count():
        raise argparse.ArgumentTypeError(
            f"no {text} here: this machine has {torch.cuda.device_count()} CUDA device(s)"
        )
    if kind == "mps" and not torch.backends.mps.is_available():
        raise argparse.ArgumentTypeError("MPS is not available on this machine; use --device cpu")
    return text


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
        type=positive,
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
        type=finite,
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


def add_guidance_flags(p) -> None:
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
        type=finite,
        nargs=2,
        default=None,
        metavar=("LO", "HI"),
        help="apply classifier-free guidance only for times t in [LO, HI] (t = 1 is noise; "
        "Kynkaanniemi et al. 2024); default: everywhere",
    )
    g.add_argument(
        "--cfg-rescale",
        type=finite,
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
        type=finite,
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
        "--guide-with",
        default=None,
        metavar="RUN",
        help="autoguidance (Karras et al. 2024): guide by this weaker run of the same image "
        "shape, schedule and conditioning (an early checkpoint, a smaller run) instead of the "
        "unconditional branch; --guidance is then its scale. Works for unconditional models",
    )
    g.add_argument(
        "--classifier-scale",
        type=finite,
        default=None,
        metavar="S",
        help="classifier guidance scale s (Dhariwal & Nichol 2021; "
        f"default {GuidanceOptions().classifier_scale:g})",
    )


def steering(args) -> Steering:
    """The conditioning and guidance flags as a Steering (checked against the model when it
    is resolved)."""
    if args.classifier_scale is not None and args.classifier is None:
        raise ValueError("--classifier-scale needs --classifier DIR")
    if args.threshold_percentile is not None and args.threshold != "dynamic":
        raise ValueError("--threshold-percentile needs --threshold dynamic")
    classifier = None
    if args.classifier is not None:
        classifier = load_noisy_classifier(args.classifier, device=args.device)
    given = {"percentile": args.threshold_percentile, "classifier_scale": args.classifier_scale}
    options = GuidanceOptions(
        interval=tuple(args.guidance_interval) if args.guidance_interval else None,
        rescale=args.cfg_rescale,
        threshold=args.threshold,
        classifier=classifier,
        **{name: value for name, value in given.items() if value is not None},
    )
    guide = None
    if args.guide_with is not None:
        guide = load(args.guide_with, ema=not args.raw, device=args.device)
    return Request(
        classes=args.class_,
        prompts=args.prompt,
        negative_class=args.negative_class,
        negative_prompt=args.negative_prompt,
        guidance=args.guidance,
        options=options,
        guide_with=guide,
    ).steering()


def sampling(
    args, *, sampler: str | None = None, steps: int | None = None, run: Path | None = None
) -> Sampling:
    """--sampler, --steps (or --nfe where the command has it), --grid and --eta as a Sampling;
    ``sampler`` and ``steps`` override the flags (a cascade's per-stage values). With ``run``,
    its tuned grid for the sampler and budget is used where it has one, or asked for by --grid
    tuned (see :func:`pixdiff.tuned_grids.run_sampling`)."""
    sampler = sampler or args.sampler
    nfe = getattr(args, "nfe", None) if steps is None else None
    if steps is None:
        steps = steps_for_nfe(sampler, nfe_budget(nfe)) if nfe is not None else args.steps
    options = {"eta": args.eta} if args.eta is not None else None
    chosen, tuned = run_sampling(run, sampler, steps, nfe=nfe, grid=args.grid, options=options)
    if tuned is not None:
        print(f"grid: tuned for {sampler} at {tuned.nfe} NFE ({grids_path(run)})", flush=True)
    return replace(chosen, parallel=picard(args))


def load_model(path: str | None, *, ema: bool, device: str, text: bool = False) -> LoadedModel:
    """The run at ``path``; None: the shipped Fashion-MNIST model, or with ``text`` the shipped
    emoji text-to-image model."""
    if path is None:
        path = shipped_run("emoji" if text else "fashion")
    return load(path, ema=ema, device=device)
