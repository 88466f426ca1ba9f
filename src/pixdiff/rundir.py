"""Run directories that nothing can lose: recognised by a marker, locked while trained, and
replaced only once the replacement has its first checkpoint (the format is described in
:mod:`pixdiff.checkpoint`).

``claim`` checks a run directory for what ``train`` was asked to do and locks it, changing
nothing else; the caller then validates everything it can (config, data, network, a dry
batch) and only then calls :meth:`RunDir.open`, which creates the directory or, for
``--overwrite``, renames the old run to ``NAME.replaced-PID`` beside it. :meth:`RunDir.commit`
(after the first checkpoint) deletes the old run; an error or interrupt before that removes
the half-made run and puts the old one back. Used as a context manager, a RunDir commits on
success, rolls back on an error before the commit, and always releases its locks.
"""

from __future__ import annotations

import csv
import errno
import fcntl
import glob
import io
import json
import os
import shutil
import time
import warnings
from pathlib import Path
from typing import Literal

from pixdiff.checkpoint import (
    CONFIG,
    TRAIN_STATE,
    CheckpointError,
    pixdiff_version,
    read_json,
    write_json,
)
from pixdiff.files import (
    DiskFullError,
    append_line,
    atomic_write,
    is_orphaned_temp,
    remove_orphaned_temps,
)

MARKER, LOCK = ".pixdiff-run", ".lock"
FORMAT, VERSION = "pixdiff-run", 1
Mode = Literal["new", "resume", "overwrite"]


class RunDirError(ValueError):
    """A run directory cannot be used as asked; nothing in it was changed."""


class LockError(RunDirError):
    """Another process holds the run's lock (it is being trained)."""


def is_run(path: Path) -> bool:
    """Whether ``path`` carries pixdiff's run marker (written only by pixdiff)."""
    try:
        return read_json(path / MARKER).get("format") == FORMAT
    except (CheckpointError, OSError):
        return False


def write_marker(path: Path) -> None:
    created = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    write_json(
        path / MARKER,
        {"format": FORMAT, "version": VERSION, "created": created, "pixdiff": pixdiff_version()},
    )


class RunLock:
    """An exclusive advisory lock (flock) on ``RUN/.lock``, recording the holder's pid and start
    time in the file. The kernel drops the lock when the process dies, however it dies."""

    def __init__(self, run: Path):
        path = run / LOCK
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
        except OSError as e:
            raise _lock_failure(e, path) from e
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise LockError(f"run {run} is being trained by {_holder(path)}") from None
        since = time.strftime("%Y-%m-%d %H:%M:%S")
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, json.dumps({"pid": os.getpid(), "since": since}).encode(), 0)
        except OSError as e:
            os.close(fd)
            raise _lock_failure(e, path) from e
        self.fd: int | None = fd

    def release(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


def _lock_failure(error: OSError, path: Path) -> OSError:
    """The error of taking the lock ``path``, naming it (a full disk: DiskFullError)."""
    if error.errno == errno.ENOSPC:
        return DiskFullError(path, "nothing in the run was changed")
    return type(error)(error.errno, error.strerror, str(path))  # the same kind, named


def _holder(lock: Path) -> str:
    try:
        info = json.loads(lock.read_text())
        return f"process {int(info['pid'])} (since {info['since']})"
    except (OSError, ValueError, KeyError, TypeError):
        return "another process"


class RunDir:
    """A claimed run directory: see the module docstring for its life cycle."""

    def __init__(self, path: Path, mode: Mode, lock: RunLock | None):
        self.path, self.mode = path, mode
        self._locks = [lock] if lock else []
        self._aside: Path | None = None  # the old run, while --overwrite replaces it
        self._opened = self._created = self._committed = False

    def open(self) -> None:
        """Make the directory ready to write: set an old run aside (--overwrite), create and
        lock the new one with its marker; on resume, mark an old run and remove orphaned
        temp files."""
        if self.mode == "resume":
            if not is_run(self.path):  # a run from before the marker
                write_marker(self.path)
            remove_orphaned_temps(self.path)
            remove_orphaned_temps(self.path / "samples")
            self._opened = True
            return
        if self.mode == "overwrite" and self.path.exists():
            self._aside = _free_sibling(self.path)
            self.path.rename(self._aside)
        self._created = not self.path.exists()
        self.path.mkdir(parents=True, exist_ok=True)
        try:
            self._locks.append(RunLock(self.path))
        except BaseException:  # a full disk, say: leave no half-made directory behind
            if self._created:
                shutil.rmtree(self.path, ignore_errors=True)
            raise
        if {p.name for p in self.path.iterdir()} - {LOCK}:
            raise RunDirError(f"{self.path} was filled by another process meanwhile; not using it")
        self._opened = True  # from here on everything in the directory is this run's
        write_marker(self.path)

    def commit(self) -> None:
        """The new run has its first checkpoint: delete the run it replaces."""
        if self._aside is not None:
            shutil.rmtree(self._aside)
            self._aside = None
        self._committed = True

    def rollback(self) -> None:
        """Undo :meth:`open`: remove the half-made run and put back the one it replaced."""
        if self._committed or self.mode == "resume":
            return
        for lock in self._locks[1:] if self.mode == "overwrite" else self._locks:
            lock.release()
        if self._opened and self._created:
            shutil.rmtree(self.path, ignore_errors=True)
        elif self._opened:  # an empty directory the user made: leave it empty
            for p in self.path.iterdir():
                if p.is_dir():
                    shutil.rmtree(p)
                else:
                    p.unlink()
        if self._aside is not None:
            try:
                self._aside.rename(self.path)
            except OSError:
                warnings.warn(
                    f"could not move the old run back; it is kept at {self._aside}", stacklevel=2
                )
            self._aside = None

    def release(self) -> None:
        for lock in self._locks:
            lock.release()

    def __enter__(self) -> RunDir:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        try:
            if exc_type is None:
                self.commit()
            else:
                self.rollback()
        finally:
            self.release()


def claim(out: Path, *, resume: bool, overwrite: bool) -> RunDir:
    """Check that ``out`` can be used as asked and lock it if it exists; refuse (RunDirError,
    LockError) with one line naming what was found. Changes nothing but the lock file."""
    if resume and overwrite:
        raise RunDirError("--resume and --overwrite contradict each other; pass one")
    _warn_leftovers(out)
    if resume:
        for name in (CONFIG, TRAIN_STATE):
            if not (out / name).is_file():
                raise RunDirError(f"cannot resume: {out / name} does not exist")
        return RunDir(out, "resume", RunLock(out))
    if out.exists() and not out.is_dir():
        raise RunDirError(f"output directory {out} is a file; choose another --out")
    if out.is_dir() and _only_leftovers(out):  # a start killed before its marker was written
        RunLock(out).release()  # refuses if a live process is starting a run there
        for p in out.iterdir():
            p.unlink()
    if not (out.is_dir() and any(out.iterdir())):
        return RunDir(out, "new", None)
    if not is_run(out):
        raise RunDirError(_not_a_run(out, overwrite))
    lock = RunLock(out)  # a run being trained says so, whatever was asked
    if not overwrite:
        lock.release()
        raise RunDirError(
            f"output directory {out} already exists; pass --resume to continue "
            "that run or --overwrite to replace it"
        )
    return RunDir(out, "overwrite", lock)


def _only_leftovers(out: Path) -> bool:
    """Whether ``out`` holds something, and nothing but pixdiff's lock file and the temp files
    of killed atomic writes."""
    entries = list(out.iterdir())
    return bool(entries) and all(p.name == LOCK or is_orphaned_temp(p) for p in entries)


def _not_a_run(out: Path, overwrite: bool) -> str:
    names = sorted(p.name for p in out.iterdir())
    found = ", ".join(names[:6]) + (f" and {len(names) - 6} more" if len(names) > 6 else "")
    if (out / TRAIN_STATE).is_file() and (out / CONFIG).is_file():
        return (
            f"{out} holds a run from before pixdiff marked its runs ({MARKER}), so it is not "
            f"replaced; pass --resume to continue it, or delete it yourself (it holds {found})"
        )
    refuse = "refusing to overwrite" if overwrite else "output directory"
    return (
        f"{refuse} {out}: it is not a pixdiff run directory (no {MARKER} marker; it holds "
        f"{found}); choose another --out"
    )


def _free_sibling(path: Path) -> Path:
    n, aside = 0, path.with_name(f"{path.name}.replaced-{os.getpid()}")
    while aside.exists():
        n += 1
        aside = path.with_name(f"{path.name}.replaced-{os.getpid()}-{n}")
    return aside


def _warn_leftovers(out: Path) -> None:
    """A run that an interrupted --overwrite set aside is still there: say so (never delete)."""
    if out.parent.is_dir():
        for p in sorted(out.parent.glob(f"{glob.escape(out.name)}.replaced-*")):
            warnings.warn(
                f"{p} is a run an interrupted --overwrite of {out} set aside; move it back or "
                "delete it",
                stacklevel=2,
            )


# ----------------------------------------------------------------------------- logs


def start_log(path: Path, fields: list[str], resume_step: int | None) -> None:
    """(Re)write a run's CSV log (log.csv, eval.csv): the header, and on resume the rows up to
    ``resume_step``; a damaged log is set aside first (see :func:`readable_rows`)."""
    rows = readable_rows(path, fields) if resume_step is not None and path.exists() else []
    kept = [r for r in rows if int(r[0]) <= resume_step]
    atomic_write(path, "".join(_csv_line(r) for r in [fields, *kept]).encode())


def append_row(path: Path, fields: list[str], row: dict[str, object]) -> None:
    """Append one row with one write() (:func:`pixdiff.files.append_line`); missing fields are
    left empty, unknown ones raise ValueError."""
    buf = io.StringIO()
    csv.DictWriter(buf, fields, lineterminator="\n").writerow(row)
    append_line(path, buf.getvalue())


def readable_rows(path: Path, fields: list[str]) -> list[list[str]]:
    """The rows of a CSV log that have every field and an integer step. A log with no header,
    unreadable rows or a torn last line is renamed to ``NAME.damaged-N`` (nothing is deleted)
    with a one-line warning; its readable rows are still returned."""
    text = path.read_bytes().decode("utf-8", errors="replace")
    lines = text.splitlines()
    torn = bool(text) and not text.endswith("\n")
    if torn:
        lines = lines[:-1]
    header = bool(lines) and _csv_row(lines[0]) == fields
    body = lines[1:] if header else lines
    rows = [r for r in map(_csv_row, body) if len(r) == len(fields) and r[0].isdigit()]
    damage = [
        "no header" if not header else "",
        f"{len(body) - len(rows)} unreadable row(s)" if len(rows) < len(body) else "",
        "a torn last line" if torn else "",
    ]
    if any(damage):
        aside = path.with_name(f"{path.name}.damaged-1")
        while aside.exists():
            aside = path.with_name(f"{path.name}.damaged-{int(aside.name.rsplit('-', 1)[1]) + 1}")
        path.rename(aside)
        warnings.warn(
            f"{path} is damaged ({', '.join(d for d in damage if d)}); set aside as {aside.name}, "
            f"the log continues with its {len(rows)} readable row(s)",
            stacklevel=2,
        )
    return rows


def _csv_row(line: str) -> list[str]:
    return next(csv.reader([line]), [])


def _csv_line(values: list[str]) -> str:
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerow(values)
    return buf.getvalue()
