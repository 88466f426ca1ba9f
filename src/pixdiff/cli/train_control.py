"""``pixdiff train-control BASE_RUN --control KIND --out RUN``: a ControlNet adapter for a
frozen base run (parse flags, build the settings, call
:func:`pixdiff.training.control_adapter.train_control`).

On ``--resume`` the run's saved settings are used, and a flag that would change what the
adapter learns is refused with one line (the run options, --steps among them, may change; not
--seed).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from pixdiff.cli import flags
from pixdiff.cli.train import NO_PROGRESS_HELP, add_logger_flag, stop_signals_interrupt
from pixdiff.config import OptimConfig, RunConfig, from_dict, parse_override, to_dict
from pixdiff.data import CONTROL_KINDS, ControlConfig

# an adapter's defaults: a short warm-up from the base's encoder, 5,000 steps of 32 images
OPTIM = OptimConfig(batch_size=32, lr=1e-4, warmup_steps=100)
RUN = RunConfig(steps=5000, log_every=50, sample_every=1000, checkpoint_every=500)
SECTIONS = ("control", "optim", "run", "adapter")


def add_parser(sub) -> None:
    p = sub.add_parser(
        "train-control",
        help="train a ControlNet adapter that steers a frozen run by a spatial map",
        description="Train a ControlNet adapter (Zhang et al. 2023) for the frozen run "
        "BASE_RUN into --out: a copy of the base U-Net's encoder, initialised from it, reads "
        "the map through zero-initialised convolutions and adds to the base's skip "
        "connections, so the untrained adapter leaves the base unchanged. It trains on the "
        "base's own data and loss; --out holds the adapter alone, loaded beside its base "
        "(`pixdiff sample ADAPTER_RUN --control-image MAP`). See docs/concepts.md, Spatial "
        "control.",
    )
    p.add_argument("base", metavar="BASE_RUN", help="the base: a run directory or shipped name")
    p.add_argument(
        "--control",
        required=True,
        metavar="KIND",
        help=f"the map: {', '.join(CONTROL_KINDS)}, or PATH, a folder of maps named as the "
        "base's data folder's images (the data folder itself: metadata.jsonl "
        "conditioning_image)",
    )
    p.add_argument("--out", required=True, help="run directory of the adapter (or to resume)")
    p.add_argument("--steps", type=flags.positive, default=None, help="steps (default 5000)")
    p.add_argument("--batch-size", type=flags.positive, default=None, help="batch (default 32)")
    p.add_argument("--lr", type=flags.float_in(0.0, 1.0), default=None, help="learning rate (1e-4)")
    p.add_argument(
        "--prompt-dropout",
        type=flags.float_in(0.0, 0.99),
        default=None,
        metavar="P",
        help="replace a prompt (or label) by the empty one with probability P (default 0.5, "
        "as ControlNet), so the adapter also reads the map alone",
    )
    p.add_argument("--seed", type=flags.seed, default=None, help="seed (default 0)")
    flags.add_device_flag(p, config="run.device")
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="set one option: control.layout_cells, optim.* or run.* (e.g. "
        "run.sample_every=500); values are JSON",
    )
    p.add_argument("--resume", action="store_true", help="continue the adapter run in --out")
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="replace the pixdiff run in --out (deleted once the new one has a checkpoint)",
    )
    p.add_argument("--print-config", action="store_true", help="print the settings and exit")
    p.add_argument("--no-progress", action="store_true", help=NO_PROGRESS_HELP)
    add_logger_flag(p)
    p.set_defaults(func=run)


def build_settings(args) -> tuple[str, dict]:
    """(base, {"control", "optim", "run", "adapter"} settings): the defaults or, on --resume,
    the run's saved ones, then the flags, then --set."""
    from pixdiff.adapters import base_path
    from pixdiff.training.control_adapter import PROMPT_DROPOUT, saved_settings

    control = args.control
    if control not in ("none", *CONTROL_KINDS):  # a map folder, from anywhere
        control = str(Path(control).expanduser().resolve())
    if args.resume:
        base, saved, optim, run, dropout = saved_settings(Path(args.out))
        if base_path(base).resolve() != base_path(args.base).resolve():
            raise ValueError(f"--resume: {args.out} is an adapter of {base}, not of {args.base}")
    else:
        base, saved, optim, run, dropout = args.base, ControlConfig(), OPTIM, RUN, PROMPT_DROPOUT
    d = {
        "control": to_dict(saved), "optim": to_dict(optim), "run": to_dict(run),
        "adapter": {"prompt_dropout": dropout},
    }  # fmt: skip
    given = {
        "control.kind": control,
        "run.steps": args.steps,
        "optim.batch_size": args.batch_size,
        "optim.lr": args.lr,
        "adapter.prompt_dropout": args.prompt_dropout,
        "run.seed": args.seed,
        "run.device": args.device,
        "run.logger": args.logger,
    }
    for key, value in given.items():
        if value is not None:
            _put(d, key, value, resume=args.resume)
    for text in args.overrides:
        path, value = parse_override(text)
        _put(d, ".".join(path), value, resume=False)
    return base, d


def _put(d: dict, key: str, value, *, resume: bool) -> None:
    """Set ``key`` ('section.name'); on resume a flag may not change what the adapter learns."""
    section, _, name = key.partition(".")
    if section not in SECTIONS or name not in d[section]:
        valid = [f"{s}.{k}" for s in SECTIONS for k in d[s]]
        raise ValueError(f"unknown setting {key!r}; valid: {', '.join(valid)}")
    old = d[section][name]
    free = key.startswith("run.") and key != "run.seed"  # what a resumed run may change
    if resume and old != value and not free:
        raise ValueError(
            f"--resume: the adapter was trained with {key}={old!r}, not {value!r}; a resumed "
            "run keeps its settings (--set changes them on purpose)"
        )
    d[section][name] = value


def run(args) -> int:
    from pixdiff.training.control_adapter import train_control

    base, d = build_settings(args)
    control = from_dict(ControlConfig, d["control"], "control")
    optim = from_dict(OptimConfig, d["optim"], "optim")
    run_cfg = from_dict(RunConfig, d["run"], "run")
    try:  # --set run.device=... is checked as --device is
        flags.device_spec(run_cfg.device)
    except argparse.ArgumentTypeError as e:
        raise ValueError(f"run.device: {e}") from None
    if args.print_config:
        print(json.dumps({"base": str(base), **d}, indent=2))
        return 0
    with stop_signals_interrupt():
        out = train_control(
            base, args.out, control, optim=optim, run=run_cfg,
            prompt_dropout=float(d["adapter"]["prompt_dropout"]), resume=args.resume,
            overwrite=args.overwrite, progress=not args.no_progress,
        )  # fmt: skip
    print(f"adapter saved in {out}; sample it with `pixdiff sample {out} --control-image MAP`")
    return 0
