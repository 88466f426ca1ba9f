"""The ``pixdiff`` command: train, sample, demo, edit, inpaint, upscale, eval, bench, serve.
Errors a user can cause print one line; so do warnings."""

from __future__ import annotations

import argparse
import os
import sys
import warnings

from pixdiff.checkpoint import CheckpointError
from pixdiff.cli import bench as bench_cmd
from pixdiff.cli import demo as demo_cmd
from pixdiff.cli import distill as distill_cmd
from pixdiff.cli import edit as edit_cmd
from pixdiff.cli import eval as eval_cmd
from pixdiff.cli import sample as sample_cmd
from pixdiff.cli import serve as serve_cmd
from pixdiff.cli import train as train_cmd
from pixdiff.cli import train_classifier as train_classifier_cmd
from pixdiff.cli import tune_grid as tune_grid_cmd
from pixdiff.files import DiskFullError
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
    DiskFullError,
    OSError,  # any other failure of the system (a disk full outside pixdiff's writers): one line
)


class OneLineParser(argparse.ArgumentParser):
    """argparse whose usage errors are one line, like every other error (``--help`` shows the
    usage); subcommand parsers inherit it."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog="pixdiff",
        description="Pixel-space diffusion: train models, sample images and cascades, edit, "
        "inpaint and upscale images.",
        epilog="Set PIXDIFF_DEBUG=1 to see full tracebacks.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    train_cmd.add_parser(sub)
    distill_cmd.add_parser(sub)
    sample_cmd.add_parser(sub)
    train_classifier_cmd.add_parser(sub)
    demo_cmd.add_parser(sub)
    bench_cmd.add_parser(sub)
    tune_grid_cmd.add_parser(sub)
    eval_cmd.add_parser(sub)
    edit_cmd.add_parsers(sub)
    serve_cmd.add_parser(sub)
    return parser


def _one_line_warning(message, category, filename, lineno, file=None, line=None) -> str:
    return f"pixdiff: warning: {message}\n"


def main(argv: list[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as e:  # --help (0) or a usage error (2, one line already printed)
        return e.code if isinstance(e.code, int) else 2
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
