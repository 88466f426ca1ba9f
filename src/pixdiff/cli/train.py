"""``pixdiff train``: parse flags, build the config, call ``pixdiff.training.train``."""

from __future__ import annotations

import json
from pathlib import Path

from pixdiff.checkpoint import CONFIG, read_json
from pixdiff.config import (
    FORMULATIONS,
    TrainConfig,
    apply_overrides,
    from_dict,
    load_config,
    to_dict,
    with_formulation,
)
from pixdiff.nets import PRESETS


def add_parser(sub) -> None:
    p = sub.add_parser(
        "train",
        help="train a diffusion model",
        description="Train a diffusion model into a run directory (config.json, model/ema/"
        "train_state .safetensors, log.csv, samples/). Run under `torchrun --nproc_per_node=K "
        "-m pixdiff.cli.main train ...` for data-parallel training. Values not given come "
        "from the config (see --print-config).",
    )
    p.add_argument(
        "--data",
        default=None,
        help="fashion-mnist | emoji | PATH to an image folder (optional "
        "metadata.jsonl); default fashion-mnist. Captioned data (emoji, metadata.jsonl "
        "'text') trains a text-conditioned model, labelled data a class-conditional one "
        "(data.conditional=false: neither)",
    )
    p.add_argument(
        "--text-encoder",
        default=None,
        metavar="PATH",
        help="frozen Hugging Face text encoder (T5 encoder or CLIP text model with its "
        "tokenizer, safetensors) in a local folder, instead of the builtin byte-level "
        "encoder trained with the model (text.encoder); needs transformers",
    )
    p.add_argument("--out", required=True, help="run directory to create (or resume)")
    p.add_argument("--preset", default=None, help=f"network preset: {', '.join(sorted(PRESETS))}")
    p.add_argument(
        "--formulation",
        default=None,
        choices=sorted(FORMULATIONS),
        help="diffusion formulation preset (schedule, prediction, loss, t-sampling)",
    )
    p.add_argument("--config", default=None, help="JSON config file (any subset of sections)")
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override one config value, e.g. optim.lr=1e-4, run.steps=5000, "
        "model.overrides.model_channels=64 (repeatable; values are JSON)",
    )
    p.add_argument("--steps", type=int, default=None, help="training steps (run.steps)")
    p.add_argument("--batch-size", type=int, default=None, help="global batch (optim.batch_size)")
    p.add_argument("--image-size", type=int, default=None, help="image size (data.image_size)")
    p.add_argument(
        "--sr-from",
        type=int,
        default=None,
        metavar="SIZE",
        help="train a super-resolution model from SIZE x SIZE to --image-size (sr.low_res_size): "
        "conditioned on the area-downsampled image, noised by conditioning augmentation at a "
        "time uniform in [0, sr.aug_max] of sr.aug_schedule (see docs/concepts.md)",
    )
    p.add_argument("--seed", type=int, default=None, help="seed (run.seed)")
    p.add_argument(
        "--eval-every",
        type=int,
        default=None,
        metavar="K",
        help="every K steps score run.eval_n EMA samples (run.eval_metrics, default "
        "fd,kid,acc, against the dataset's test split) into eval.csv (run.eval_every)",
    )
    p.add_argument("--device", default=None, help="auto | cpu | cuda | cuda:N (run.device)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out")
    p.add_argument("--overwrite", action="store_true", help="replace an existing run in --out")
    p.add_argument(
        "--skip-bad-images",
        action="store_true",
        help="skip unreadable images in a folder dataset (reports how many)",
    )
    p.add_argument("--print-config", action="store_true", help="print the config and exit")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def build_config(args) -> TrainConfig:
    """Defaults (or, with --resume, the run's saved config) < --config file < --formulation
    < named flags < --set overrides."""
    if args.resume and not args.config:
        saved = read_json(Path(args.out) / CONFIG)
        cfg = from_dict(TrainConfig, saved["train"], where=str(Path(args.out) / CONFIG))
    else:
        cfg = load_config(args.config) if args.config else TrainConfig()
    if args.formulation:
        cfg = with_formulation(cfg, args.formulation)
    named = {
        "data.name": args.data,
        "model.preset": args.preset,
        "run.steps": args.steps,
        "optim.batch_size": args.batch_size,
        "data.image_size": args.image_size,
        "sr.low_res_size": args.sr_from,
        "run.seed": args.seed,
        "run.eval_every": args.eval_every,
        "run.device": args.device,
        "data.skip_bad_images": True if args.skip_bad_images else None,
        # absolute, so the run loads from any working directory
        "text.encoder": _absolute(args.text_encoder),
    }
    sets = [f"{k}={json.dumps(v)}" for k, v in named.items() if v is not None]
    return apply_overrides(cfg, sets + args.overrides)


def _absolute(path: str | None) -> str | None:
    return None if path is None else str(Path(path).expanduser().resolve())


def run(args) -> int:
    from pixdiff.training.trainer import train

    cfg = build_config(args)
    if args.print_config:
        print(json.dumps(to_dict(cfg), indent=2))
        return 0
    out = train(
        cfg, args.out, resume=args.resume, overwrite=args.overwrite, progress=not args.no_progress
    )
    print(f"run saved in {out}")
    return 0
