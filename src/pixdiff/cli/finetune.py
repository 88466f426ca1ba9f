"""``pixdiff finetune``, ``pixdiff align`` and ``pixdiff lora merge``: adapt a trained run by LoRA
or in full, teach it a subject (DreamBooth), align it with preference pairs (Diffusion-DPO), and
fold LoRAs into its weights (parse flags, build the settings, make one library call).

On ``--resume`` the run's saved settings are used; only --steps and the run options may change.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from pixdiff.cli import flags
from pixdiff.cli.train import NO_PROGRESS_HELP, add_logger_flag, stop_signals_interrupt
from pixdiff.config import OptimConfig, RunConfig, from_dict, to_dict

LORA_RANK_HELP = (
    "train rank-R LoRA adapters (Hu et al. 2021) on the frozen base, saved alone with the "
    "base's identity (lora.safetensors); R in [1, the layer's width]"
)
# LoRA: lr 1e-4 (DreamBooth-LoRA practice); full: 10x lower (Ruiz et al. use 5e-6 on SD)
OPTIM = OptimConfig(batch_size=8, lr=1e-4, warmup_steps=20, ema_decay=0.99)
FULL_LR = 1e-5
RUN = RunConfig(steps=500, log_every=20, sample_every=100, checkpoint_every=100)


def add_parsers(sub) -> None:
    _finetune_parser(sub)
    _align_parser(sub)
    _lora_parser(sub)
    _pairs_parser(sub)


def _common(p, *, what: str) -> None:
    """The base, --out, the LoRA or --full choice, the optimizer and run flags, resume."""
    p.add_argument("base", metavar="RUN", help="the base: a run directory or a shipped name")
    p.add_argument("--out", required=True, help=f"run directory of the {what} (never the base)")
    p.add_argument(
        "--lora-rank",
        type=flags.positive,
        default=None,
        metavar="R",
        help=LORA_RANK_HELP + " (default 8 unless --full)",
    )
    p.add_argument(
        "--full",
        action="store_true",
        help="fine-tune every weight instead (lower LR, 1e-5, and EMA)",
    )
    p.add_argument(
        "--lora-alpha",
        type=flags.float_in(0.0),
        default=None,
        metavar="A",
        help="LoRA's alpha: the update is scaled by A / R (default R: scale 1)",
    )
    p.add_argument(
        "--lora-dropout",
        type=flags.float_in(0.0, 0.99),
        default=0.0,
        metavar="P",
        help="dropout on the adapters' input",
    )
    p.add_argument(
        "--lora-targets",
        default="attn",
        metavar="LIST",
        help="comma-separated modules to adapt: presets attn (self- and cross-attention "
        "projections), mlp, conv, or fnmatch patterns of module names (an unknown one lists "
        "them)",
    )
    p.add_argument("--steps", type=flags.positive, default=None, help="steps (default 500)")
    p.add_argument("--batch-size", type=flags.positive, default=None, help="batch (default 8)")
    p.add_argument(
        "--lr",
        type=flags.float_in(0.0, 1.0),
        default=None,
        help="learning rate (default 1e-4 for LoRA, 1e-5 with --full)",
    )
    p.add_argument(
        "--sample-every",
        type=flags.int_in(0),
        default=None,
        help="fixed-prompt sample grid every K steps, and at the end (default 100; "
        "0: none; step 0 is the base)",
    )
    p.add_argument("--seed", type=flags.seed, default=None, help="seed (default 0)")
    flags.add_device_flag(p, config="run.device")
    p.add_argument("--resume", action="store_true", help="continue the run in --out")
    p.add_argument("--overwrite", action="store_true", help="replace the pixdiff run in --out")
    p.add_argument("--no-progress", action="store_true", help=NO_PROGRESS_HELP)
    add_logger_flag(p)


def _finetune_parser(sub) -> None:
    p = sub.add_parser(
        "finetune",
        help="fine-tune a run on a folder of images (LoRA or full; DreamBooth)",
        description="Fine-tune the run RUN on the images in --data into --out: LoRA adapters "
        "(--lora-rank, the default) or every weight (--full). With --instance-prompt and "
        "--class-prompt, DreamBooth (Ruiz et al. 2023): the subject under a rare identifier, "
        "with prior-preservation images of the class sampled from the base once and cached "
        "in the run. See docs/finetuning.md.",
    )
    _common(p, what="fine-tuned model")
    p.add_argument(
        "--data",
        default=None,
        metavar="FOLDER",
        help="the images (metadata.jsonl text/label as in train)",
    )
    p.add_argument(
        "--instance-prompt",
        default=None,
        metavar="TEXT",
        help='the prompt of every image, e.g. "a sks emoji" (default: captions)',
    )
    p.add_argument(
        "--class-prompt",
        default=None,
        metavar="TEXT",
        help='the class, e.g. "an emoji": turns on prior preservation',
    )
    p.add_argument(
        "--prior-share",
        type=flags.float_in(0.0, 0.99),
        default=0.5,
        metavar="S",
        help="share of each batch that is class (prior) images",
    )
    p.add_argument(
        "--prior-images",
        type=flags.positive,
        default=16,
        metavar="N",
        help="class images sampled from the base at the start",
    )
    p.set_defaults(func=run_finetune)


def _align_parser(sub) -> None:
    from pixdiff.training.preference import BETA

    p = sub.add_parser(
        "align",
        help="align a run with preference pairs (Diffusion-DPO)",
        description="Fine-tune RUN on preference pairs with Diffusion-DPO (Wallace et al. "
        "2024), the frozen RUN as the reference. PAIRS.jsonl: one JSON object a line, "
        '{"prompt" or "class": ..., "chosen": IMAGE, "rejected": IMAGE}, paths relative to '
        "the file (pixdiff make-pairs writes one). See docs/finetuning.md.",
    )
    _common(p, what="aligned model")
    p.add_argument("--pairs", default=None, metavar="PAIRS.jsonl", help="the preference pairs")
    p.add_argument(
        "--beta",
        type=flags.float_in(0.0),
        default=BETA,
        help="DPO's beta (the KL weight; T w(t) folded in, errors per pixel)",
    )
    p.set_defaults(func=run_align)


def _lora_parser(sub) -> None:
    p = sub.add_parser("lora", help="LoRA files: merge them into their base")
    lsub = p.add_subparsers(dest="lora_command", required=True, metavar="COMMAND")
    m = lsub.add_parser(
        "merge",
        help="write a run whose weights are the base plus LoRAs",
        description="Fold LoRAs (files or LoRA runs) into their base's weights, W + s B A "
        "each, and write the result as an ordinary run (no LoRA needed to sample it).",
    )
    m.add_argument("loras", nargs="+", metavar="LORA", help="LoRA files or LoRA run dirs")
    m.add_argument("--out", required=True, help="the merged run's directory (new or empty)")
    m.add_argument(
        "--base",
        default=None,
        metavar="RUN",
        help="the base (default: the one the first LoRA names)",
    )
    m.add_argument(
        "--lora-scale",
        type=float,
        action="append",
        default=None,
        metavar="S",
        help="strength of each LoRA, once per LORA in order (default 1)",
    )
    flags.add_device_flag(m)
    m.set_defaults(func=run_merge)


def _pairs_parser(sub) -> None:
    p = sub.add_parser(
        "make-pairs",
        help="build preference pairs offline: sample k images per condition, rank by a scorer",
        description="For each class of RUN (or each --prompt of a text model) sample -k images, "
        "rank them by --scorer and pair the best with the worst (k // 2 pairs each), into --out "
        "(PNG images and pairs.jsonl for `pixdiff align`). See docs/finetuning.md.",
    )
    p.add_argument("base", metavar="RUN", help="the run to sample: a run directory or shipped name")
    p.add_argument(
        "--scorer",
        required=True,
        metavar="SCORER",
        help="classifier (the shipped classifier's confidence in the class), emoji-features "
        "(similarity to the prompt's real emoji), or FILE.pt, a TorchScript module images -> "
        "(N,) scores",
    )
    p.add_argument("-k", type=flags.int_in(2), default=4, help="images per condition")
    p.add_argument("--out", required=True, help="a new folder for the images and pairs.jsonl")
    p.add_argument(
        "--prompt", action="append", default=[], metavar="TEXT", help="a prompt (repeat)"
    )
    p.add_argument("--steps", type=flags.positive, default=25, help="sampler steps")
    p.add_argument("--seed", type=flags.seed, default=0, help="seed of the first image")
    flags.add_device_flag(p)
    p.set_defaults(func=run_make_pairs)


def run_make_pairs(args) -> int:
    from pixdiff.adapters import base_path
    from pixdiff.formats.diffusers_import import load_model
    from pixdiff.training.make_pairs import make_pairs

    model = load_model(base_path(args.base), device=args.device)
    path = make_pairs(
        model, args.out, scorer=args.scorer, k=args.k, prompts=args.prompt, steps=args.steps,
        seed=args.seed, device=args.device,
    )  # fmt: skip
    print(f"wrote {sum(1 for _ in path.open())} pairs to {path}")
    return 0


def settings(args, *, method: str) -> tuple[str, OptimConfig, RunConfig, object, dict]:
    """(base, optimizer, run options, LoRA config or None, the method's saved settings): the
    defaults or the resumed run's, then the flags."""
    from pixdiff.checkpoint import CONFIG, read_json
    from pixdiff.nets.lora import LoRAConfig
    from pixdiff.training.finetune import FINETUNE, lora_config

    if args.resume:
        path = Path(args.out) / CONFIG
        if not path.is_file():
            raise ValueError(f"cannot resume: {path} does not exist")
        saved = read_json(path)
        if saved.get(FINETUNE, {}).get("method") != method:
            raise ValueError(f"{args.out} is not a `pixdiff {args.command}` run")
        optim = from_dict(OptimConfig, saved["train"]["optim"], f"{path}: train.optim")
        run = from_dict(RunConfig, saved["train"]["run"], f"{path}: train.run")
        return args.base, optim, run, lora_config(saved[FINETUNE]["lora"]), saved[FINETUNE]
    if args.full and args.lora_rank is not None:
        raise ValueError("--full trains every weight; drop --lora-rank (or --full)")
    lora = None
    if not args.full:
        targets = tuple(t.strip() for t in args.lora_targets.split(",") if t.strip())
        lora = LoRAConfig(
            rank=args.lora_rank or 8,
            alpha=args.lora_alpha,
            dropout=args.lora_dropout,
            targets=targets,
        )
    optim = replace(OPTIM, lr=FULL_LR) if args.full else OPTIM
    return args.base, optim, RUN, lora, {}


def _with_flags(args, optim: OptimConfig, run: RunConfig) -> tuple[OptimConfig, RunConfig]:
    if not args.resume:
        o = {"batch_size": args.batch_size, "lr": args.lr}
        optim = replace(optim, **{k: v for k, v in o.items() if v is not None})
        if args.seed is not None:
            run = replace(run, seed=args.seed)
    r = {"steps": args.steps, "sample_every": args.sample_every, "device": args.device,
         "logger": args.logger}  # fmt: skip
    run = replace(run, **{k: v for k, v in r.items() if v is not None})
    return optim, from_dict(RunConfig, to_dict(run), "run")


def run_finetune(args) -> int:
    from pixdiff.training.dreambooth import finetune

    base, optim, run, lora, saved = settings(args, method="finetune")
    optim, run = _with_flags(args, optim, run)
    data = saved.get("data", args.data)
    if data is None:
        raise ValueError("give the images with --data FOLDER")
    keep = {k: saved.get(k, getattr(args, k)) for k in
            ("instance_prompt", "class_prompt", "prior_share", "prior_images")}  # fmt: skip
    with stop_signals_interrupt():
        out = finetune(
            base,
            args.out,
            data=data,
            optim=optim,
            run=run,
            lora=lora,
            **keep,
            resume=args.resume,
            overwrite=args.overwrite,
            progress=not args.no_progress,
        )
    print(f"fine-tuned model saved in {out}; sample it with `pixdiff sample {out}`")
    return 0


def run_align(args) -> int:
    from pixdiff.training.align import align

    base, optim, run, lora, saved = settings(args, method="dpo")
    optim, run = _with_flags(args, optim, run)
    pairs = saved.get("pairs", args.pairs)
    if pairs is None:
        raise ValueError("give the preference pairs with --pairs PAIRS.jsonl")
    with stop_signals_interrupt():
        out = align(
            base,
            args.out,
            pairs=pairs,
            optim=optim,
            run=run,
            lora=lora,
            beta=float(saved.get("beta", args.beta)),
            resume=args.resume,
            overwrite=args.overwrite,
            progress=not args.no_progress,
        )
    print(f"aligned model saved in {out}; sample it with `pixdiff sample {out}`")
    return 0


def run_merge(args) -> int:
    import json

    from pixdiff.adapters import base_path
    from pixdiff.checkpoint import load, read_tensors
    from pixdiff.loras import LORA, lora_file, merge_loras
    from pixdiff.pipelines.model import Model

    name = args.base
    if name is None:
        meta = read_tensors(lora_file(args.loras[0]))[1]
        if LORA not in meta:
            raise ValueError(f"{lora_file(args.loras[0])} is not a LoRA file")
        name = json.loads(meta[LORA])["base"]
    model = merge_loras(load(base_path(name), device=args.device), args.loras, args.lora_scale)
    merged = Model(model.denoiser, model.net, model.config, model.class_names, model.path)
    out = merged.save(args.out)
    print(f"merged run saved in {out}")
    return 0


__all__ = ["add_parsers"]
