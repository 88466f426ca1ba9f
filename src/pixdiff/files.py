"""Crash-safe file writes: the one place pixdiff writes a file that must never be half there.

``atomic_write`` writes ``.NAME.XXXXXXXX.tmp`` beside the target and renames it over the target,
so a reader sees the old file or the new one, never a mix. A process killed mid-write leaves
only such a temp file, which :func:`remove_orphaned_temps` recognises by that exact naming.
``append_line`` adds one whole line with one ``write()``, for logs that a kill must not tear.
``file_sha256`` identifies a file that is read (weights given by path).
"""

from __future__ import annotations

import errno
import hashlib
import os
import re
import tempfile
from pathlib import Path

# mkstemp's random part is 8 characters of [a-z0-9_]; nothing else pixdiff writes looks so
_TEMP_NAME = re.compile(r"\..+\.[a-z0-9_]{8}\.tmp")


class DiskFullError(OSError):
    """The device ran out of space while writing ``path``; the file's previous version is kept."""

    def __init__(self, path: Path, kept: str = "its previous version is intact"):
        super().__init__(errno.ENOSPC, f"no space left on device while writing {path}; {kept}")
        self.path = path

    def __str__(self) -> str:
        return self.strerror


def atomic_write(path: str | Path, data: bytes | tuple[bytes | memoryview, ...]) -> None:
    """Write bytes (or the parts of a tuple, one after the other, so a large file need not be
    joined in memory) to ``path`` via a temp file in the same directory, fsync, rename, fsync
    the directory.

    Raises DiskFullError (the old file untouched, the temp file removed) when the disk is full,
    IsADirectoryError or ValueError for a directory or a special file (a device such as
    /dev/null, a pipe), which a rename would replace.
    """
    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(f"{path} is a directory, not a file")
    if path.exists() and not path.is_file():
        raise ValueError(f"{path} is not a regular file (a device or a pipe?); not replacing it")
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        _write_and_replace(path, data)
    except OSError as e:
        if e.errno == errno.ENOSPC and not isinstance(e, DiskFullError):
            kept = "its previous version is intact" if path.exists() else "it was not written"
            raise DiskFullError(path, kept) from e
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def _write_and_replace(path: Path, data: bytes | tuple[bytes | memoryview, ...]) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o666 & ~_umask())  # mkstemp makes 0600; give the usual file mode
        with os.fdopen(fd, "wb") as f:
            for part in data if isinstance(data, tuple) else (data,):
                f.write(part)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def append_line(path: str | Path, line: str) -> None:
    """Append one line (its newline added) with a single unbuffered ``write()`` (O_APPEND), so a
    kill leaves the file with the whole line or without it."""
    data = (line.rstrip("\n") + "\n").encode()
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
    try:
        written = os.write(fd, data)
    except OSError as e:
        if e.errno == errno.ENOSPC:
            raise DiskFullError(Path(path), "the lines before this one are intact") from e
        raise
    finally:
        os.close(fd)
    if written < len(data):  # only a full disk cuts a write this short
        raise DiskFullError(Path(path), "the lines before this one are intact")


def is_orphaned_temp(path: Path) -> bool:
    """Whether ``path`` is named like an :func:`atomic_write` temp file."""
    return path.is_file() and _TEMP_NAME.fullmatch(path.name) is not None


def remove_orphaned_temps(folder: Path) -> list[Path]:
    """Delete the temp files killed atomic writes left in ``folder`` (not in subfolders); only
    call this while no other process writes there. Returns what was deleted."""
    orphans = [p for p in folder.iterdir() if is_orphaned_temp(p)] if folder.is_dir() else []
    for p in orphans:
        p.unlink(missing_ok=True)
    return orphans


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def file_sha256(path: str | Path) -> str:
    """The SHA-256 of a file's bytes, in hex, read 1 MiB at a time."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
