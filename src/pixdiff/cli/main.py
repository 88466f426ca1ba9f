"""The ``pixdiff`` command: train, sample, demo, edit, inpaint, upscale, eval, bench, serve,
export, import.
Errors a user can cause print one line; so do warnings.

This module imports only the standard library at the top: the commands (and torch, about a
second) are imported inside :func:`main` while a Ctrl-C ends the process at once with one line
and exit 130 (nothing has been written by then), so a stop at any moment is one line.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
import warnings
from collections.abc import Iterator
from contextlib import contextmanager


def user_errors() -> tuple[type[BaseException], ...]:
    """The exceptions that are a user's to fix: printed as one line, exit 2."""
    from pixdiff.checkpoint import CheckpointError
    from pixdiff.files import DiskFullError
    from pixdiff.samplers import SamplingError
    from pixdiff.training.trainer import TrainingError

    return (
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
        OSError,  # any other failure of the system (a disk full outside pixdiff's writers)
    )


class OneLineParser(argparse.ArgumentParser):
    """argparse whose usage errors are one line, like every other error (``--help`` shows the
    usage), and whose help shows each default once (:class:`pixdiff.cli.flags.HelpFormatter`);
    subcommand parsers inherit it."""

    def __init__(self, *args, formatter_class=None, **kwargs):
        if formatter_class is None:  # imported with the commands, in build_parser
            from pixdiff.cli.flags import HelpFormatter

            formatter_class = HelpFormatter
        super().__init__(*args, formatter_class=formatter_class, **kwargs)

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    from pixdiff.cli import bench as bench_cmd
    from pixdiff.cli import convert_inception as convert_inception_cmd
    from pixdiff.cli import demo as demo_cmd
    from pixdiff.cli import distill as distill_cmd
    from pixdiff.cli import edit as edit_cmd
    from pixdiff.cli import eval as eval_cmd
    from pixdiff.cli import export as export_cmd
    from pixdiff.cli import finetune as finetune_cmd
    from pixdiff.cli import sample as sample_cmd
    from pixdiff.cli import serve as serve_cmd
    from pixdiff.cli import train as train_cmd
    from pixdiff.cli import train_classifier as train_classifier_cmd
    from pixdiff.cli import train_control as train_control_cmd
    from pixdiff.cli import tune_grid as tune_grid_cmd

    parser = OneLineParser(
        prog="pixdiff",
        description="Pixel-space diffusion: train models, sample images and cascades, edit, "
        "inpaint and upscale images.",
        epilog="Set PIXDIFF_DEBUG=1 to see full tracebacks.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    train_cmd.add_parser(sub)
    train_control_cmd.add_parser(sub)
    finetune_cmd.add_parsers(sub)
    distill_cmd.add_parser(sub)
    sample_cmd.add_parser(sub)
    train_classifier_cmd.add_parser(sub)
    demo_cmd.add_parser(sub)
    bench_cmd.add_parser(sub)
    tune_grid_cmd.add_parser(sub)
    eval_cmd.add_parser(sub)
    convert_inception_cmd.add_parser(sub)
    edit_cmd.add_parsers(sub)
    serve_cmd.add_parser(sub)
    export_cmd.add_parsers(sub)
    return parser


def _one_line_warning(message, category, filename, lineno, file=None, line=None) -> str:
    return f"pixdiff: warning: {message}\n"


def main(argv: list[str] | None = None) -> int:
    command = _command_named(sys.argv[1:] if argv is None else argv)
    try:
        with _ctrl_c_ends_at_once(command):  # importing the commands and parsing write nothing
            parser, errors = build_parser(), user_errors()
            try:
                args = parser.parse_args(argv)
            except SystemExit as e:  # --help (0) or a usage error (2, one line already printed)
                return e.code if isinstance(e.code, int) else 2
        command = f"pixdiff {args.command}"
        warnings.formatwarning = _one_line_warning
        try:
            return args.func(args) or 0
        except errors as e:
            if os.environ.get("PIXDIFF_DEBUG"):
                raise
            print(f"{command}: error: {e}", file=sys.stderr)
            return 2
    except KeyboardInterrupt as e:
        print(f"{command}: interrupted{': ' + str(e) if str(e) else ''}", file=sys.stderr)
        return 130


def _command_named(argv: list[str]) -> str:
    """The name "pixdiff COMMAND" for the lines printed before the flags are parsed."""
    first = str(argv[0]) if argv else ""
    word = first.replace("-", "").isalnum() and first.isascii() and not first.startswith("-")
    return f"pixdiff {first}" if word else "pixdiff"


@contextmanager
def _ctrl_c_ends_at_once(command: str) -> Iterator[None]:
    """While pixdiff starts (imports torch, parses flags), SIGINT or SIGTERM prints one line
    and exits 130 at once, wherever inside an import it lands; an ignored signal stays
    ignored."""
    if threading.current_thread() is not threading.main_thread():
        yield  # signal handlers can only be set from the main thread
        return

    def exit_interrupted(signum: int, frame: object) -> None:
        sys.stderr.write(f"{command}: interrupted while starting; nothing was written\n")
        sys.stderr.flush()
        os._exit(130)  # nothing to clean up; raising inside an import would print a traceback

    old = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    caught = [sig for sig, handler in old.items() if handler is not signal.SIG_IGN]
    for sig in caught:
        signal.signal(sig, exit_interrupted)
    try:
        yield
    finally:
        for sig in caught:  # None: a handler set outside Python, which cannot be put back
            default = signal.default_int_handler if sig == signal.SIGINT else signal.SIG_DFL
            signal.signal(sig, default if old[sig] is None else old[sig])


if __name__ == "__main__":
    sys.exit(main())
