"""Flags that several commands share, and what they build: the run to load and a
:class:`~pixdiff.sampling.Sampling` (the conditioning and guidance flags, and the
:class:`~pixdiff.pipelines.steering.Steering` they build, are :mod:`pixdiff.cli.steering_flags`);
the help formatter of every command; the flag values' types."""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

from pixdiff.checkpoint import LoadedModel
from pixdiff.cli import output
from pixdiff.cli.parallel import picard
from pixdiff.formats.diffusers_import import load_model as load_model_files
from pixdiff.precision import NET_DTYPES
from pixdiff.samplers import SAMPLERS, parse_options
from pixdiff.sampling import Sampling, steps_for_nfe
from pixdiff.shipped import shipped_run
from pixdiff.timesteps import SPACINGS
from pixdiff.tuned_grids import TUNED, grids_path, run_sampling


class HelpFormatter(argparse.HelpFormatter):
    """Every command's --help: an option's default is shown once, as "(default: X)", unless
    its help already says what the default is or there is none to show (None, off, empty)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text, default = action.help or "", action.default
        nothing = default is None or default is False or default is argparse.SUPPRESS
        said = "default" in text.lower()
        positional = not action.option_strings and action.nargs not in ("?", "*")
        if nothing or said or positional or default == []:
            return text
        return text + " (default: %(default)s)"


class DeprecatedAlias(argparse.Action):
    """An old spelling of a flag that still works, hidden from --help, with a one-line
    warning naming the new one (``replacement``)."""

    def __init__(self, *args, replacement: str, **kwargs):
        super().__init__(*args, **kwargs)
        self.replacement = replacement

    def __call__(self, parser, namespace, values, option_string=None):
        print(
            f"{parser.prog}: warning: {option_string} is deprecated; use {self.replacement}",
            file=sys.stderr,
        )
        setattr(namespace, self.dest, values)


def add_num_flag(p, *, default: int, help: str, type=None, old_n: bool = False) -> None:
    """-n/--num, the number of images of every command; ``old_n`` keeps ``--n``, the old
    spelling of eval and tune-grid, working (hidden, with a warning)."""
    type = type or count
    p.add_argument("-n", "--num", type=type, default=default, help=help)
    if old_n:
        p.add_argument(
            "--n", dest="num", type=type, default=argparse.SUPPRESS, help=argparse.SUPPRESS,
            action=DeprecatedAlias, replacement="-n/--num",
        )  # fmt: skip


def add_run_argument(p: argparse.ArgumentParser, *, text: bool = False) -> None:
    """The optional RUN positional that sample, eval and bench share; ``text``: the command
    has --prompt, which picks the shipped text-to-image model."""
    prompt = "; with --prompt, the shipped emoji text-to-image model" if text else ""
    p.add_argument(
        "run",
        nargs="?",
        default=None,
        help=f"run directory or .safetensors checkpoint (default: the shipped Fashion-MNIST "
        f"model{prompt})",
    )


DTYPE_HELP = (
    "precision the network runs in while sampling; the sampler's state stays float32. bf16 "
    "halves memory and speeds up GPUs from Ampere on; it also works on the CPU but is slower "
    "than fp32 on many CPUs. fp16 is for GPUs without bf16 (before Ampere)"
)


def add_dtype_flag(p) -> None:
    """--dtype: the network's precision while sampling (pixdiff.precision)."""
    p.add_argument("--dtype", default="fp32", choices=NET_DTYPES, help=DTYPE_HELP)


def add_sampler_option_flag(p, *, sweep: bool = False) -> None:
    """--sampler-option KEY=VALUE (repeatable): the sampler's own options (``sweep``: of every
    sampler a benchmark sweeps)."""
    every = "; every swept sampler gets it and must take it" if sweep else ""
    p.add_argument(
        "--sampler-option",
        dest="sampler_options",
        type=key_value,
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="an option of the sampler, e.g. s_churn=0.5 for heun, eta=0.3 for ddim, "
        "variance=large for ddpm, corrector_steps=2 for sde-pc (repeatable; an unknown key "
        f"lists the sampler's options{every})",
    )


def key_value(text: str) -> tuple[str, str]:
    """An argparse type: KEY=VALUE as (KEY, VALUE)."""
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    return key.strip(), value.strip()


def sampler_options(args, sampler: str) -> dict | None:
    """--sampler-option KEY=VALUE and --eta (where the command has them) as the options of
    ``sampler``, checked against them; None when none are given."""
    pairs = getattr(args, "sampler_options", None) or []
    keys = [key for key, _ in pairs]
    twice = sorted({key for key in keys if keys.count(key) > 1})
    if twice:
        raise ValueError(f"--sampler-option {twice[0]} is given more than once")
    options = parse_options(sampler, dict(pairs))
    if getattr(args, "eta", None) is not None:
        if "eta" in options:
            raise ValueError("give eta once: --eta or --sampler-option eta=VALUE")
        options["eta"] = args.eta
    return options or None


def add_sampler_flags(p, *, run_defaults: bool = False) -> None:
    """--sampler, --steps, --grid, --eta, --sampler-option, --dtype: how each image is
    sampled; with ``run_defaults`` --sampler and --steps default to None (the caller fills in
    the run's own)."""
    own = " (default: the run's own, {} unless it says otherwise)" if run_defaults else ""
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
    add_sampler_option_flag(p)
    add_dtype_flag(p)


def add_output_flags(p, *, command: str) -> None:
    """--seed, --out, --overwrite-out, --raw, --device, --no-progress."""
    p.add_argument("--seed", type=seed, default=0, help="seed; image i uses seed + i")
    output.add_output_flags(p, command=command)
    p.add_argument("--raw", action="store_true", help="use the raw (non-EMA) weights")
    add_device_flag(p)
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


DEVICE_HELP = "auto (cuda when available, else mps, else cpu) | cpu | cuda | cuda:N | mps"


def add_device_flag(p, *, config: str | None = None) -> None:
    """--device of every command, default auto. With ``config`` (the training commands'
    run.device) auto is kept for each process to resolve (torchrun) and a flag not given
    leaves the config's value."""
    if config is None:
        p.add_argument("--device", type=device, default="auto", help=DEVICE_HELP)
    else:
        help_ = f"{DEVICE_HELP} ({config}; default auto)"
        p.add_argument("--device", type=device_spec, default=None, help=help_)


def several_prompts(args) -> int | None:
    """-n when more than one prompt is given (the images per prompt, a grid row each), else
    None."""
    prompts = getattr(args, "prompt", None)
    return args.num if isinstance(prompts, list) and len(prompts) > 1 else None


def image_count(args) -> int:
    """The images a command makes: -n, times the prompts when several are given."""
    prompts = args.prompt if several_prompts(args) else [None]
    total = args.num * len(prompts)
    if total > MAX_IMAGES:
        raise ValueError(
            f"-n {args.num} for each of {len(prompts)} prompts is {total} images, over the "
            f"limit of {MAX_IMAGES} per call"
        )
    return total


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
    """[first, last] seed of the command's images (:func:`image_count`) from ``args.seed``;
    one line if the last one passes MAX_SEED."""
    n = image_count(args)
    last = args.seed + n - 1
    if last > MAX_SEED:
        each = f" for each of {n // args.num} prompts" if n != args.num else ""
        raise ValueError(
            f"--seed {args.seed} with -n {args.num}{each} would use seeds up to {last}, over "
            f"the largest seed {MAX_SEED}; use --seed {MAX_SEED - n + 1} or lower"
        )
    return [args.seed, last]


def device(text: str) -> str:
    """An argparse type: cpu, cuda, cuda:N, mps or auto (resolved to cuda, else mps, else
    cpu), checked against this machine."""
    import torch

    text = device_spec(text)
    if text == "auto":
        if torch.cuda.is_available():
            return "cuda"
        return "mps" if torch.backends.mps.is_available() else "cpu"
    return text


def device_spec(text: str) -> str:
    """An argparse type: like :func:`device`, but ``auto`` is kept (``train`` resolves it per
    process, for torchrun)."""
    import torch

    if text == "auto":
        return text
    kind, _, index = text.partition(":")
    if kind not in ("cpu", "cuda", "mps") or (index and not index.isdigit()):
        raise argparse.ArgumentTypeError(
            f"unknown device {text!r}; use auto, cpu, cuda, cuda:N or mps"
        )
    if kind == "cuda" and not torch.cuda.is_available():
        raise argparse.ArgumentTypeError("CUDA is not available on this machine; use --device cpu")
    if kind == "cuda" and index and int(index) >= torch.cuda.device_count():
        raise argparse.ArgumentTypeError(
            f"no {text} here: this machine has {torch.cuda.device_count()} CUDA device(s)"
        )
    if kind == "mps" and not torch.backends.mps.is_available():
        raise argparse.ArgumentTypeError("MPS is not available on this machine; use --device cpu")
    return text


def sampling(
    args, *, sampler: str | None = None, steps: int | None = None, run: Path | None = None
) -> Sampling:
    """--sampler, --steps (or --nfe where the command has it), --grid, --eta,
    --sampler-option and --dtype as a Sampling; ``sampler`` and ``steps`` override the flags
    (a cascade's per-stage values; the options are checked against each stage's sampler). With
    ``run``,
    its tuned grid for the sampler and budget is used where it has one, or asked for by --grid
    tuned (see :func:`pixdiff.tuned_grids.run_sampling`)."""
    sampler = sampler or args.sampler
    options = sampler_options(args, sampler)
    nfe = getattr(args, "nfe", None) if steps is None else None
    if steps is None:
        steps = steps_for_nfe(sampler, nfe_budget(nfe), options) if nfe is not None else args.steps
    chosen, tuned = run_sampling(run, sampler, steps, nfe=nfe, grid=args.grid, options=options)
    if tuned is not None:
        print(f"grid: tuned for {sampler} at {tuned.nfe} NFE ({grids_path(run)})", flush=True)
    return replace(chosen, parallel=picard(args), net_dtype=getattr(args, "dtype", "fp32"))


def load_model(
    path: str | None, *, ema: bool, device: str, text: bool = False, allow_pickle: bool = False
) -> LoadedModel:
    """The run (or diffusers folder, docs/interop.md) at ``path``; None: the shipped
    Fashion-MNIST model, or with ``text`` the shipped emoji text-to-image model."""
    if path is None:
        path = shipped_run("emoji" if text else "fashion")
    return load_model_files(path, ema=ema, device=device, allow_pickle=allow_pickle)


def add_allow_pickle_flag(p: argparse.ArgumentParser) -> None:
    """--allow-pickle: a diffusers folder's .bin weights may load (docs/interop.md)."""
    p.add_argument(
        "--allow-pickle",
        action="store_true",
        help="also read a diffusers folder's .bin weights (a pickle) when it has no "
        "safetensors; only for files whose source you trust",
    )


def add_resample_flag(p) -> None:
    """``--resample R``: RePaint's resampling (inpainting, a clip's known frames)."""
    p.add_argument(
        "--resample",
        type=int,
        default=1,
        metavar="R",
        help="RePaint resampling: redo each step R times, jumping back by the forward process "
        "(1 = plain replacement; NFE ~ steps x R)",
    )
