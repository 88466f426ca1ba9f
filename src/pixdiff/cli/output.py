"""Where a generating command writes: a fresh directory per invocation, never a used one.

Without ``--out``, ``sample``, ``edit``, ``inpaint``, ``upscale`` and ``demo`` write into a new
directory ``out/COMMAND/YYYYmmdd-HHMMSS-SAMPLER-sSEED`` (a suffix ``-2``, ``-3``, ... if that
exists). An exact ``--out`` must be empty or not exist. A non-empty one needs
``--overwrite-out``, which removes only the files listed in the ``settings.json`` a previous
pixdiff invocation wrote there; any other file is kept, and one the new images would replace
is refused before anything is sampled.

``settings.json`` records the command, run, sampler, steps, grid, guidance, seeds, every flag
and the pixdiff version (so any image can be reproduced), and the files written (the
manifest). It is created first, exclusively and under an advisory lock, so two commands cannot
write into one directory at once.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

import torch

from pixdiff.files import DiskFullError, atomic_write
from pixdiff.images import save_images

SETTINGS = "settings.json"


class OutputDirError(ValueError):
    """An output directory cannot be used as asked; nothing in it was changed."""


class Output:
    """An output directory claimed by one invocation; it records every file written."""

    def __init__(self, path: Path, settings: dict, lock_fd: int):
        self.path, self.settings, self._fd = path, settings, lock_fd
        self.files: list[str] = []

    def write_images(
        self, x: torch.Tensor, sub: str = "", *, nrow: int | None = None, rows=None
    ) -> Path:
        """Write images (and their grid) into the directory or its ``sub`` folder; returns the
        grid's path. ``rows``: a key per image (class or prompt), one grid row per key."""
        paths = save_images(x, self.path / sub, nrow=nrow, rows=rows)
        self.add(*paths)
        return paths[0]

    def write_clips(self, x: torch.Tensor, *, fps: float = 8) -> Path:
        """Write clips (N, F, C, H, W): a GIF and an MP4 per clip (the MP4 skipped with a
        warning without imageio) and grid.png, one row of frames per clip; returns the grid's
        path (docs/video.md)."""
        from pixdiff.data.video_io import save_clip, write_frame_grid

        grid = write_frame_grid(x, self.path / "grid.png")
        self.add(grid)
        for i, clip in enumerate(x):
            self.add(*save_clip(clip, self.path / f"{i:06d}", fps=fps, formats=("gif", "mp4")))
        return grid

    def add(self, *paths: Path) -> None:
        """Record files written into the directory."""
        self.files += [str(p.relative_to(self.path)) for p in paths]

    def finish(self, *, complete: bool) -> None:
        record = {**self.settings, "complete": complete, "files": self.files}
        try:
            atomic_write(self.path / SETTINGS, (json.dumps(record, indent=2) + "\n").encode())
        finally:
            os.close(self._fd)


def add_output_flags(p, *, command: str) -> None:
    """--out and --overwrite-out."""
    p.add_argument(
        "--out",
        default=None,
        help=f"output directory, empty or new (default: a new out/{command}/DATE-TIME-... "
        "directory per invocation)",
    )
    p.add_argument(
        "--overwrite-out",
        action="store_true",
        help="reuse a non-empty --out: remove the files an earlier pixdiff command listed in "
        "its settings.json there (others are kept, never replaced)",
    )


@contextmanager
def open_output(args, *, command: str, settings: dict, names: list[str]) -> Iterator[Output]:
    """Claim the output directory of ``args`` (see the module docstring), yield it, and write
    its settings.json with the files written, also when the command fails.

    Args:
        names: the files and folders the command will write, checked before anything runs.
    """
    stem = f"{time.strftime('%Y%m%d-%H%M%S')}-{settings.get('sampler', command)}"
    stem += f"-s{settings['seed']}" if "seed" in settings else ""
    if args.out is None:
        path = _fresh(Path("out") / command / stem)
        fd = _claim(path)
    else:
        path = Path(args.out)
        with _directory_lock(path):  # no other command checks, cleans or claims it meanwhile
            _prepare(path, overwrite=args.overwrite_out, names=names)
            fd = _claim(path)
    out = Output(path, {"command": command, **settings}, fd)
    try:
        yield out
    except BaseException as e:
        with suppress(DiskFullError):  # then settings.json keeps saying complete: false
            out.finish(complete=False)
        if isinstance(e, DiskFullError):
            raise DiskFullError(e.path, f"{SETTINGS} marks the output incomplete") from e
        raise
    out.finish(complete=True)


def image_names(n: int) -> list[str]:
    """The files ``Output.write_images`` writes for n images."""
    return ["grid.png", *(f"{i:06d}.png" for i in range(n))]


def clip_names(n: int) -> list[str]:
    """The files ``Output.write_clips`` writes for n clips."""
    return ["grid.png", *(f"{i:06d}.{ext}" for i in range(n) for ext in ("gif", "mp4"))]


def settings_of(args, **resolved) -> dict:
    """What settings.json records: the pixdiff version, every flag, and ``resolved`` values
    (the run's path, steps after --nfe, the guidance scale in force, ...)."""
    from pixdiff import __version__

    flags = {
        k: v
        for k, v in vars(args).items()
        if k != "func" and isinstance(v, (str, int, float, bool, list, type(None)))
    }
    return {"pixdiff": __version__, **resolved, "flags": flags}


def _fresh(path: Path) -> Path:
    """A new directory at ``path``, or at ``path-2``, ``path-3``, ... if it exists."""
    for k in range(1, 1000):
        candidate = path if k == 1 else path.with_name(f"{path.name}-{k}")
        try:
            candidate.mkdir(parents=True)
            return candidate
        except FileExistsError:
            continue
    raise OutputDirError(f"could not make a new output directory beside {path}")


@contextmanager
def _directory_lock(path: Path) -> Iterator[None]:
    """Create the directory ``path`` if needed and hold an exclusive lock (flock) on it; a
    refusal if another command holds it."""
    if path.exists() and not path.is_dir():
        raise OutputDirError(f"--out {path} is a file, not a directory")
    path.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        _flock(fd, path, fcntl.LOCK_EX, then="choose another --out")
        yield
    finally:
        os.close(fd)


def _flock(fd, path: Path, mode: int, *, then: str) -> None:
    """flock ``fd`` (LOCK_EX or LOCK_SH) without waiting; a refusal if another command holds
    it (``then``: what the user may do)."""
    try:
        fcntl.flock(fd, mode | fcntl.LOCK_NB)
    except BlockingIOError:
        raise OutputDirError(
            f"--out {path} is being written by another pixdiff command; {then}"
        ) from None


def _prepare(path: Path, *, overwrite: bool, names: list[str]) -> None:
    """Check that the directory ``path`` is empty; with ``overwrite``, remove what an earlier
    invocation listed in its settings.json and refuse if the new files would replace others."""
    entries = sorted(p.name for p in path.iterdir())
    if not entries:
        return
    if not overwrite:
        shown = ", ".join(entries[:5]) + (", ..." if len(entries) > 5 else "")
        raise OutputDirError(
            f"--out {path} is not empty ({shown}); choose a new directory, omit --out "
            "for a fresh one, or add --overwrite-out to replace an earlier pixdiff output there"
        )
    listed = _manifest(path)
    for name in listed:
        target = path / name
        if target.is_file():
            target.unlink()
    _remove_empty_dirs(path, listed)
    (path / SETTINGS).unlink(missing_ok=True)
    clash = sorted(n for n in names if (path / n).exists())
    if clash:
        raise OutputDirError(
            f"--out {path} holds {', '.join(clash[:5])}, which pixdiff did not write; "
            "the new images would replace them. Choose another --out"
        )


def _manifest(path: Path) -> list[str]:
    """The files an earlier invocation listed in path/settings.json; a refusal if it has none."""
    settings = path / SETTINGS
    try:
        with settings.open() as f:
            _flock(f, path, fcntl.LOCK_SH, then="nothing was removed")
            record = json.loads(f.read())
        files = record["files"]
        if not all(isinstance(f, str) for f in files):
            raise TypeError
    except OutputDirError:  # being written by another command (a ValueError too)
        raise
    except FileNotFoundError:
        raise OutputDirError(
            f"--overwrite-out: {path} has no {SETTINGS}, so pixdiff did not write it; nothing "
            "was removed. Choose another --out"
        ) from None
    except (OSError, ValueError, KeyError, TypeError):
        raise OutputDirError(
            f"--overwrite-out: {settings} is damaged (no list of files); nothing was removed"
        ) from None
    # only plain relative names inside the directory: a damaged manifest cannot reach outside
    return [f for f in files if not Path(f).is_absolute() and ".." not in Path(f).parts]


def _remove_empty_dirs(path: Path, listed: list[str]) -> None:
    """Remove the sub-folders of listed files once they are empty (deepest first)."""
    parents = {p for f in listed for p in Path(f).parents if p != Path(".")}
    for sub in sorted(parents, key=lambda p: len(p.parts), reverse=True):
        folder = path / sub
        if folder.is_dir() and not any(folder.iterdir()):
            folder.rmdir()


def _claim(path: Path) -> int:
    """Create path/settings.json exclusively and lock it; a refusal if another command has."""
    try:
        fd = os.open(path / SETTINGS, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
        raise OutputDirError(
            f"--out {path} is being written by another pixdiff command; choose another --out"
        ) from None
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    try:
        os.write(fd, b'{"complete": false, "files": []}\n')
    except OSError as e:
        os.close(fd)
        (path / SETTINGS).unlink()
        if e.errno == errno.ENOSPC:
            raise DiskFullError(path / SETTINGS, "nothing was written") from e
        raise
    return fd
