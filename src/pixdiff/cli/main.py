"""The ``pixdiff`` command: train, sample, demo, edit, inpaint, upscale, eval, bench. Errors a
user can cause print one line; so do warnings."""

from __future__ import annotations

import argparse
import os
import sys
import warnings

from pixdiff.checkpoint import CheckpointError
from pixdiff.cli import bench as bench_cmd
from pixdiff.cli import edit as edit_cmd
from pixdiff.cli import eval as eval_cmd
from pixdiff.cli import sample as sample_cmd
from pixdiff.cli import train as train_cmd
from pixdiff.cli import train_classifier as train_classifier_cmd
from pixdiff.samplers import SamplingError
from pixdiff.training.trainer import TrainingError

USER_ERRORS = (
    ValueError,
    FileNotFoundError,
    FileExistsError,
    CheckpointError,
    SamplingError,
    TrainingError,
    PermissionError,
    IsADirectoryError,
    NotADirectoryError,
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pixdiff",
        description="Pixel-space diffusion: train models, sample images and cascades, edit, "
        "inpaint and upscale images.",
        epilog="Set PIXDIFF_DEBUG=1 to see full tracebacks.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    train_cmd.add_parser(sub)
    sample_cmd.add_parser(sub)
    train_classifier_cmd.add_parser(sub)
    demo = sub.add_parser(
        "demo",
        help="sample the shipped models: Fashion-MNIST classes and emoji from prompts",
        description="Generate a grid of Fashion-MNIST items from the shipped model (one row "
        "per class), then emoji from eight prompts with the shipped text-to-image model "
        "(32x32) and its super-resolution stage (64x64), and print the grids' paths.",
    )
    demo.add_argument("--out", default="out/demo", help="output directory (default: out/demo)")
    demo.set_defaults(func=sample_cmd.run_demo)
    bench_cmd.add_parser(sub)
    eval_cmd.add_parser(sub)
    edit_cmd.add_parsers(sub)
    return parser


def _one_line_warning(message, category, filename, lineno, file=None, line=None) -> str:
    return f"pixdiff: warning: {message}\n"


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    warnings.formatwarning = _one_line_warning
    try:
        return args.func(args) or 0
    except USER_ERRORS as e:
        if os.environ.get("PIXDIFF_DEBUG"):
            raise
        print(f"pixdiff {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as e:
        print(
            f"pixdiff {args.command}: interrupted{': ' + str(e) if str(e) else ''}", file=sys.stderr
        )
        return 130


if __name__ == "__main__":
    sys.exit(main())
