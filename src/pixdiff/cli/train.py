"""``pixdiff train``: parse flags, build the config, call ``pixdiff.training.train``.

On ``--resume`` the run's saved config is the starting point, and a flag, ``--config`` or
``--formulation`` that would change what the run trains (anything but the ``run.*`` options
other than ``run.seed``, and ``sample.*``) is refused with one line naming the setting, so a
stray ``--image-size`` cannot silently continue a different run; ``--set KEY=VALUE`` changes
any setting on purpose.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import get_args, get_type_hints

from pixdiff.checkpoint import CONFIG, entry, malformed, read_json
from pixdiff.cli import flags
from pixdiff.config import (
    FORMULATIONS,
    RunConfig,
    TrainConfig,
    apply_overrides,
    describe,
    from_dict,
    interval_of,
    load_config,
    to_dict,
    with_formulation,
)
from pixdiff.data import CONTROL_KINDS
from pixdiff.nets import PRESETS

# the config key each named flag sets
NAMED_FLAGS = {
    "--data": "data.name",
    "--preset": "model.preset",
    "--steps": "run.steps",
    "--batch-size": "optim.batch_size",
    "--lr": "optim.lr",
    "--image-size": "data.image_size",
    "--sr-from": "sr.low_res_size",
    "--seed": "run.seed",
    "--eval-every": "run.eval_every",
    "--device": "run.device",
    "--precision": "run.precision",
    "--skip-bad-images": "data.skip_bad_images",
    "--text-encoder": "text.encoder",
    "--logger": "run.logger",
    "--control": "control.kind",
    "--frames": "data.frames",
    "--init-from": "model.init_from",
}


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
        "metadata.jsonl) | fashion-clips | emoji-clips | PATH to a clip folder with --frames "
        "(docs/video.md); default fashion-mnist. Captioned data (emoji, metadata.jsonl "
        "'text') trains a text-conditioned model, labelled data a class-conditional one "
        "(data.conditional=false: neither)",
    )
    p.add_argument(
        "--text-encoder",
        default=None,
        metavar="PATH",
        help="frozen Hugging Face text encoder (T5 encoder or CLIP text model with its "
        "tokenizer, safetensors) in a local folder, instead of the builtin byte-level "
        "encoder trained with the model; needs transformers. The run stores the folder's path "
        "relative to the run directory, so the two can move together "
        f"({config_default('text.encoder')})",
    )
    p.add_argument(
        "--control",
        default=None,
        metavar="KIND",
        help="steer the model by a spatial map concatenated to x_t (control.kind): edges "
        "(Canny), sketch (blurred edges), mask (silhouette), layout (8x8 colours, "
        "control.layout_cells), or PATH, a folder of maps named as the --data folder's images "
        "(the data folder itself: its metadata.jsonl conditioning_image column). Maps are "
        "dropped with control.dropout (0.1) for --control-guidance; see docs/concepts.md",
    )
    p.add_argument(
        "--frames",
        type=integer("data.frames"),
        default=None,
        help="frames per clip of clip data (fashion-clips, emoji-clips, or a clip folder, which "
        "is read as images without it); a video preset (video-unet-tiny, video-dit-tiny) "
        "trains on them; see docs/video.md (data.frames; default 0: 16 for the clip sets)",
    )
    p.add_argument(
        "--init-from",
        default=None,
        metavar="RUN",
        help="start a video run's spatial layers from the image run RUN (its network config "
        "fixes theirs; its text encoder too), so it starts as that model on every frame "
        f"({config_default('model.init_from')})",
    )
    p.add_argument("--out", required=True, help="run directory to create (or resume)")
    p.add_argument(
        "--preset",
        default=None,
        help=f"network preset: {', '.join(sorted(PRESETS))} ({config_default('model.preset')})",
    )
    p.add_argument(
        "--formulation",
        default=None,
        choices=sorted(FORMULATIONS),
        help="diffusion formulation preset (schedule, prediction, loss, t-sampling); default: "
        "the config's diffusion section (ddpm unless it says otherwise)",
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
    p.add_argument(
        "--steps",
        type=integer("run.steps"),
        default=None,
        help=f"training steps ({config_default('run.steps')})",
    )
    p.add_argument(
        "--batch-size",
        type=integer("optim.batch_size"),
        default=None,
        help=f"global batch ({config_default('optim.batch_size')})",
    )
    p.add_argument(
        "--lr",
        type=flags.finite,
        default=None,
        help=f"learning rate, after warm-up ({config_default('optim.lr')})",
    )
    p.add_argument(
        "--image-size",
        type=integer("data.image_size"),
        default=None,
        help=f"image size ({config_default('data.image_size')})",
    )
    p.add_argument(
        "--sr-from",
        type=integer("sr.low_res_size"),
        default=None,
        metavar="SIZE",
        help="train a super-resolution model from SIZE x SIZE to --image-size: conditioned on "
        "the area-downsampled image, noised by conditioning augmentation at a time uniform in "
        "[0, sr.aug_max] of sr.aug_schedule (see docs/concepts.md) (sr.low_res_size; default "
        "0: not super-resolution)",
    )
    seed_help = f"seed ({config_default('run.seed')})"
    p.add_argument("--seed", type=integer("run.seed"), default=None, help=seed_help)
    p.add_argument(
        "--eval-every",
        type=integer("run.eval_every"),
        default=None,
        metavar="K",
        help="every K steps score run.eval_n EMA samples (in run.eval_metrics, fd,kid,acc "
        "unless set, against the dataset's test split) into eval.csv (run.eval_every; default "
        "0: never)",
    )
    flags.add_device_flag(p, config="run.device")
    p.add_argument(
        "--precision",
        default=None,
        choices=get_args(get_type_hints(RunConfig)["precision"]),
        help="training precision: fp32; bf16 autocast (GPUs from Ampere on; slower on many "
        "CPUs); fp16 autocast with loss scaling (torch.amp.GradScaler), for GPUs without bf16 "
        f"({config_default('run.precision')})",
    )
    p.add_argument(
        "--resume",
        action="store_true",
        help="continue the run in --out with its saved settings; a flag that would change what "
        "it trains is refused (only run.* options and --set KEY=VALUE may change it)",
    )
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="replace the pixdiff run in --out (only a directory pixdiff marked as a run; the "
        "old run is deleted once the new one has its first checkpoint)",
    )
    p.add_argument(
        "--force-classes",
        action="store_true",
        help="train with more than 10,000 classes (usually a stray label id in metadata.jsonl)",
    )
    p.add_argument(
        "--skip-bad-images",
        action="store_true",
        help="skip unreadable images in a folder dataset (reports how many)",
    )
    p.add_argument("--print-config", action="store_true", help="print the config and exit")
    p.add_argument("--no-progress", action="store_true", help=NO_PROGRESS_HELP)
    add_logger_flag(p)
    p.set_defaults(func=run)


NO_PROGRESS_HELP = (
    "no progress bar: print a one-line log every run.log_every steps instead (also printed "
    "when stdout is not a terminal)"
)


def add_logger_flag(p) -> None:
    """``--logger`` of the training commands (run.logger)."""
    p.add_argument(
        "--logger",
        default=None,
        choices=get_args(get_type_hints(RunConfig)["logger"]),
        help="where the training numbers go besides log.csv and the one-line log: csv (nowhere "
        "else) or tensorboard (losses, lr, throughput, grad norm, sample grids, eval metrics "
        "as event files in RUN/tensorboard; needs `pip install tensorboard`) "
        f"({config_default('run.logger')})",
    )


def build_config(args) -> TrainConfig:
    """Defaults (or, with --resume, the run's saved config) < --config file < --formulation
    < named flags < --set overrides; on --resume a change of what the run trains is refused
    unless it comes from --set (see the module docstring)."""
    saved = saved_config(Path(args.out)) if args.resume else None
    cfg = load_config(args.config) if args.config else saved or TrainConfig()
    if args.formulation:
        cfg = with_formulation(cfg, args.formulation)
    for flag, key in NAMED_FLAGS.items():
        value = getattr(args, flag[2:].replace("-", "_"))
        if flag == "--skip-bad-images":
            value = True if value else None
        elif flag == "--text-encoder":  # relative to the run, so the two can move together
            value = _relative_to_run(value, Path(args.out))
        elif flag == "--init-from" and value is not None:
            value = str(Path(value).expanduser().resolve())
        elif flag == "--control" and value not in (None, "none", *CONTROL_KINDS):
            value = str(Path(value).expanduser().resolve())  # a map folder, from anywhere
        if value is not None:
            try:
                cfg = apply_overrides(cfg, [f"{key}={json.dumps(value)}"])
            except ValueError as e:
                raise ValueError(f"{flag}: {e}") from None
    if saved is not None:
        refuse_changes(saved, cfg, Path(args.out))
    given = cfg.text.encoder
    cfg = apply_overrides(cfg, args.overrides)
    if cfg.text.encoder not in (given, "builtin"):  # --set text.encoder=PATH, as --text-encoder
        text = replace(cfg.text, encoder=_relative_to_run(cfg.text.encoder, Path(args.out)))
        cfg = replace(cfg, text=text)
    try:  # --set run.device=... and config files are checked as --device is
        flags.device_spec(cfg.run.device)
    except argparse.ArgumentTypeError as e:
        raise ValueError(f"run.device: {e}") from None
    return cfg


def saved_config(out: Path) -> TrainConfig:
    """The training config of the run in ``out``, for --resume."""
    path = out / CONFIG
    if not path.is_file():
        raise ValueError(f"cannot resume: {path} does not exist")
    saved = read_json(path)
    for section in ("data", "model", "diffusion"):  # a default here would change the run
        entry(saved, f"train.{section}", path)
    with malformed(path, "train"):
        return from_dict(TrainConfig, saved["train"], where=str(path))


def refuse_changes(saved: TrainConfig, cfg: TrainConfig, out: Path) -> None:
    """One line for the first setting ``cfg`` changes of ``saved`` that --resume may not change
    without --set: anything but ``run.*`` (other than run.seed) and ``sample.*``."""
    old, new = _flat(to_dict(saved)), _flat(to_dict(cfg))
    for key in sorted(old.keys() | new.keys()):
        may = key.startswith(("run.", "sample.")) and key != "run.seed"
        if old.get(key) != new.get(key) and not may:
            source = next((f for f, k in NAMED_FLAGS.items() if k == key), "--config/--formulation")
            raise ValueError(
                f"--resume: {source} would change {key} of run {out} from {old.get(key)!r} to "
                f"{new.get(key)!r}; a resumed run keeps its settings (--set {key}=VALUE "
                "changes it on purpose)"
            )


def _flat(d: dict, prefix: str = "") -> dict[str, object]:
    """{'a': {'b': 1}} -> {'a.b': 1}."""
    flat = {}
    for k, v in d.items():
        if isinstance(v, dict) and v:
            flat.update(_flat(v, f"{prefix}{k}."))
        else:
            flat[f"{prefix}{k}"] = v
    return flat


def integer(key: str):
    """An argparse type for the int flag of config ``key``: a non-integer is an error that
    names the valid values."""

    def parse(text: str) -> int:
        try:
            return int(text)
        except ValueError:
            interval = interval_of(key)
            valid = f" {describe(interval)}" if interval else ""
            raise argparse.ArgumentTypeError(f"expected an integer{valid}, got {text!r}") from None

    return parse


def _relative_to_run(path: str | None, out: Path) -> str | None:
    """A folder given from the working directory as a path relative to the run directory
    ``out``, as the run stores it (:func:`pixdiff.checkpoint.encoder_in_run`)."""
    if path is None or path == "builtin":
        return path
    return os.path.relpath(
        os.path.abspath(Path(path).expanduser()), os.path.abspath(out.expanduser())
    )


def config_default(key: str) -> str:
    """A named flag's config key and the value it has unless the flag, --config or --set give
    another ("run.steps; default 10000"), for its --help."""
    value = _flat(to_dict(TrainConfig()))[key]
    return f"{key}; default {value}"


def run(args) -> int:
    from pixdiff.training.trainer import train

    with stop_signals_interrupt():  # from the first moment the command runs
        cfg = build_config(args)
        if args.print_config:
            print(json.dumps(to_dict(cfg), indent=2))
            return 0
        out = train(
            cfg,
            args.out,
            resume=args.resume,
            overwrite=args.overwrite,
            progress=not args.no_progress,
            force_classes=args.force_classes,
        )
    print(f"run saved in {out}")
    return 0


@contextmanager
def stop_signals_interrupt() -> Iterator[None]:
    """The first SIGINT or SIGTERM raises KeyboardInterrupt (so a starting run is put back and
    the command ends with one line, exit 130); later ones are ignored until the process exits,
    so that they cannot cut that clean-up short. The training loop answers them with a
    checkpoint instead (pixdiff.training.runtime.StopRequest)."""
    stopping = False

    def handle(signum, frame):
        nonlocal stopping
        if not stopping:
            stopping = True
            raise KeyboardInterrupt(f"stopped by {signal.Signals(signum).name}")

    old = {sig: signal.signal(sig, handle) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    except KeyboardInterrupt:
        stopping = True
        raise
    finally:
        for sig, handler in old.items():
            signal.signal(sig, signal.SIG_IGN if stopping else handler)
