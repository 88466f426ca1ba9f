"""``pixdiff distill``: parse flags, build the settings, call ``pixdiff.training.distill``.

On ``--resume`` the run's saved settings are used, and a flag that would change what the run
learns is refused with one line (the run options --device, --no-progress and ``--set run.*``
may change).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from pixdiff.cli import flags
from pixdiff.cli.train import NO_PROGRESS_HELP, add_logger_flag, stop_signals_interrupt
from pixdiff.config import OptimConfig, RunConfig, from_dict, parse_override, to_dict
from pixdiff.training.distill_config import MAX_CONSISTENCY_STEPS, MAX_ITERS, DistillConfig

# distillation defaults that differ from training's: no warm-up (the student starts trained),
# a short log and checkpoint period
OPTIM = OptimConfig(lr=1e-4, warmup_steps=0)
RUN = RunConfig(log_every=25, sample_every=0, checkpoint_every=250)
SECTIONS = ("distilled", "optim", "run")


def add_parser(sub) -> None:
    p = sub.add_parser(
        "distill",
        help="distil a trained run into a run that samples in 1, 2 or 4 steps",
        description="Distil the trained run RUN into a new run directory --out that samples in "
        "a few steps: progressive distillation (Salimans & Ho 2022: each phase halves the DDIM "
        "steps) or consistency tuning (ECT, Geng et al. 2024; sample with --sampler "
        "consistency). Classes, prompts and classifier-free guidance survive: the guided "
        "teacher is distilled at the scales --guidance / --guidance-range, which become an "
        "input of the student (Meng et al. 2023). See docs/concepts.md, Few-step models.",
    )
    p.add_argument(
        "run", metavar="RUN", help="the teacher: a run directory or a shipped model's name"
    )
    p.add_argument("--method", choices=("progressive", "consistency"), required=True)
    p.add_argument("--out", required=True, help="run directory of the student (or to resume)")
    p.add_argument(
        "--steps",
        type=flags.positive,
        default=None,
        help="the student's sampling steps (default 2): progressive distils down to them; a "
        f"consistency model samples in any of 1 to {MAX_CONSISTENCY_STEPS}",
    )
    p.add_argument(
        "--teacher-steps",
        type=flags.positive,
        default=None,
        metavar="M",
        help="progressive: DDIM steps of the first phase's teacher, --steps times a power of "
        "two (default 64; a distilled teacher's own steps)",
    )
    p.add_argument(
        "--iters",
        type=flags.int_in(1, MAX_ITERS),
        default=None,
        help="optimizer steps per phase (progressive) or in all (consistency); default 1000",
    )
    g = p.add_mutually_exclusive_group()
    g.add_argument(
        "--guidance",
        type=flags.non_negative,
        default=None,
        metavar="W",
        help="distil classifier-free guidance at scale W (default: the teacher's sample scale)",
    )
    g.add_argument(
        "--guidance-range",
        type=flags.non_negative,
        nargs=2,
        default=None,
        metavar=("LO", "HI"),
        help="distil every scale in [LO, HI] (each sample draws one); sample at any of them",
    )
    p.add_argument("--batch-size", type=flags.positive, default=None, help="batch (default 64)")
    p.add_argument(
        "--lr", type=flags.float_in(0.0, 1.0), default=None, help="learning rate in (0, 1] (1e-4)"
    )
    p.add_argument("--seed", type=flags.seed, default=None, help="seed (default 0)")
    flags.add_device_flag(p, config="run.device")
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="set one option: distilled.* (e.g. distilled.weighting=snr+1, distilled.gap_k=8), "
        "optim.* or run.* (e.g. run.checkpoint_every=100); values are JSON",
    )
    p.add_argument(
        "--resume",
        action="store_true",
        help="continue the distillation in --out with its saved settings",
    )
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="replace the pixdiff run in --out (deleted once the new one has a checkpoint)",
    )
    p.add_argument("--print-config", action="store_true", help="print the settings and exit")
    p.add_argument("--no-progress", action="store_true", help=NO_PROGRESS_HELP)
    add_logger_flag(p)
    p.set_defaults(func=run)


def build_settings(args) -> tuple[str | Path, dict]:
    """(teacher, {"distilled", "optim", "run"} settings): the defaults or, on --resume, the
    run's saved settings, then the flags, then --set."""
    from pixdiff.training.distill import saved_settings, teacher_dir

    if args.resume:
        teacher, cfg, optim, run = saved_settings(Path(args.out))
        if teacher_dir(args.run).resolve() != teacher:
            raise ValueError(
                f"--resume: {args.out} is distilled from {teacher}, not from {args.run}"
            )
    else:
        teacher, cfg, optim, run = args.run, DistillConfig(method=args.method), OPTIM, RUN
    d = {"distilled": to_dict(cfg), "optim": to_dict(optim), "run": to_dict(run)}
    given = {
        "distilled.method": args.method,
        "distilled.steps": args.steps,
        "distilled.teacher_steps": args.teacher_steps,
        "distilled.iters": args.iters,
        "distilled.guidance": [args.guidance] * 2 if args.guidance is not None else None,
        "optim.batch_size": args.batch_size,
        "optim.lr": args.lr,
        "run.seed": args.seed,
        "run.device": args.device,
        "run.logger": args.logger,
    }
    if args.guidance_range is not None:
        given["distilled.guidance"] = list(args.guidance_range)
    for key, value in given.items():
        if value is not None:
            _put(d, key, value, resume=args.resume)
    for text in args.overrides:
        path, value = parse_override(text)
        _put(d, ".".join(path), value, resume=False)
    return teacher, d


def _put(d: dict, key: str, value, *, resume: bool) -> None:
    """Set ``key`` ('section.name'); on resume a flag may not change what the run learns."""
    section, _, name = key.partition(".")
    if section not in SECTIONS or name not in d[section]:
        valid = [f"{s}.{k}" for s in SECTIONS for k in d[s]]
        raise ValueError(f"unknown setting {key!r}; valid: {', '.join(valid)}")
    old = d[section][name]
    if resume and old != value and key not in ("run.device", "run.logger"):
        raise ValueError(
            f"--resume: the run was distilled with {key}={old!r}, not {value!r}; a resumed "
            "run keeps its settings (--set changes them on purpose)"
        )
    d[section][name] = value


def run(args) -> int:
    from pixdiff.training.distill import distill

    teacher, d = build_settings(args)
    cfg = from_dict(DistillConfig, d["distilled"], "distilled")
    optim = from_dict(OptimConfig, d["optim"], "optim")
    run_cfg = from_dict(RunConfig, d["run"], "run")
    try:  # --set run.device=... is checked as --device is
        flags.device_spec(run_cfg.device)
    except argparse.ArgumentTypeError as e:
        raise ValueError(f"run.device: {e}") from None
    if args.print_config:
        print(json.dumps({"teacher": str(teacher), **d}, indent=2))
        return 0
    with stop_signals_interrupt():
        out = distill(
            teacher, args.out, cfg, optim=optim, run=run_cfg, resume=args.resume,
            overwrite=args.overwrite, progress=not args.no_progress,
        )  # fmt: skip
    print(f"distilled run saved in {out}; sample it with `pixdiff sample {out}`")
    return 0
