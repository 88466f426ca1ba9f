"""The conditioning and guidance flags that sample, cascades and the editing commands share,
and the :class:`~pixdiff.pipelines.steering.Steering` they build."""

from __future__ import annotations

from pathlib import Path

from pixdiff.checkpoint import load
from pixdiff.classifier_store import load_noisy_classifier
from pixdiff.cli.flags import finite
from pixdiff.guidance import DEFAULT_PERCENTILE, THRESHOLDS, GuidanceOptions
from pixdiff.pipelines.model import Request
from pixdiff.pipelines.steering import Steering


def add_conditioning_flags(p, *, several_prompts: bool = False) -> None:
    """--class, --prompt, --guidance and the guidance group; with ``several_prompts``,
    --prompt is repeatable and --prompts FILE reads them (-n images for each)."""
    p.add_argument(
        "--class",
        dest="class_",
        default=None,
        metavar="NAME_OR_ID",
        help="class name or id for every image; 'all' cycles through the classes",
    )
    what = "for a text-conditioned model (trained on captioned data)"
    if not several_prompts:
        p.add_argument("--prompt", default=None, metavar="TEXT", help=f"prompt {what}")
    else:
        given = p.add_mutually_exclusive_group()
        given.add_argument(
            "--prompt",
            action="append",
            default=None,
            metavar="TEXT",
            help=f"prompt {what}; repeatable: -n images for each prompt, one grid row each",
        )
        given.add_argument(
            "--prompts",
            default=None,
            metavar="FILE",
            help="prompts, one per line (blank lines and lines starting with # are skipped): "
            "-n images for each, one grid row each",
        )
    p.add_argument(
        "--guidance",
        type=finite,
        default=None,
        help="classifier-free guidance scale w (1 = conditional; default from the run)",
    )
    add_guidance_flags(p)


def read_prompt_flags(args) -> None:
    """Put the prompts of --prompt (once or more) or --prompts FILE into ``args.prompt``: a
    list, or None for none."""
    if getattr(args, "prompts", None) is not None:
        args.prompt = read_prompts(args.prompts)
    elif isinstance(args.prompt, str):
        args.prompt = [args.prompt]


def read_prompts(path: str) -> list[str]:
    """The prompts of a --prompts file: one per line, blank lines and #-comment lines
    skipped; one-line errors for a missing, unreadable or empty file."""
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        raise FileNotFoundError(f"--prompts {path}: no such file") from None
    except UnicodeDecodeError:
        raise ValueError(f"--prompts {path} is not UTF-8 text") from None
    prompts = [line.strip() for line in lines]
    prompts = [line for line in prompts if line and not line.startswith("#")]
    if not prompts:
        raise ValueError(f"--prompts {path} holds no prompts (blank and # lines are skipped)")
    return prompts


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
    prompts = args.prompt
    if isinstance(prompts, list):  # -n images for each prompt, prompt by prompt
        prompts = [p for p in prompts for _ in range(args.num)] if len(prompts) > 1 else prompts[0]
    return Request(
        classes=args.class_,
        prompts=prompts,
        negative_class=args.negative_class,
        negative_prompt=args.negative_prompt,
        guidance=args.guidance,
        options=options,
        guide_with=guide,
    ).steering()
