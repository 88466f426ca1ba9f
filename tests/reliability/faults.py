"""Fault injectors of the reliability suite (#14.7), and the tally it reports (RELIABILITY.md).

- Real ``pixdiff`` processes (:func:`start`) that a test kills or signals at a random moment;
  run through this file as a script, a child can first get slow atomic writes (so that a kill
  lands inside a checkpoint write) or a full disk after N writes (ENOSPC from the file system
  call, so pixdiff's own clean-up runs)::

      python faults.py [--slow-writes SECONDS] [--full-disk-after N] -- ARGV...

  The child imports the commands, then prints ``STARTED`` on stdout right before
  ``pixdiff.cli.main.main`` runs (a signal while pixdiff imports: ``python -m pixdiff.cli.main``).
- A small real disk: a tmpfs (:func:`small_disk`) when running as root, else nothing (callers
  then simulate ENOSPC with :func:`full_disk_after`).
- Damage to a file: truncation, a zeroed range, one flipped bit (:data:`DAMAGES`).
- A bomb PNG: a valid, few-kilobyte PNG that decodes to 20000 x 20000 pixels.
- Hostile flag values for the CLI fuzzer (:func:`hostile_values`).

Nothing here is imported by pixdiff: the faults live in the tests only.
"""

from __future__ import annotations

import argparse
import errno
import json
import os
import random
import struct
import subprocess
import sys
import time
import zlib
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

STARTED = "STARTED"
TRACEBACK = "Traceback (most recent call last)"

# ----------------------------------------------------------------------------- the tally


class Tally:
    """What the suite did, written as JSON to $PIXDIFF_RELIABILITY_SUMMARY at the end (see
    conftest.py). ``trial`` is counted when a fault is injected, ``survived`` once every
    check after it passed; ``bad_inputs`` counts hostile values, damaged files and malformed
    datasets given to pixdiff."""

    def __init__(self):
        self.counts: Counter[str] = Counter()

    def trial(self, kind: str, n: int = 1) -> None:
        self.counts["trials"] += n
        self.counts[f"trials.{kind}"] += n

    def survived(self, kind: str, n: int = 1) -> None:
        self.counts["faults_survived"] += n
        self.counts[f"survived.{kind}"] += n

    def bad_input(self, kind: str, n: int = 1) -> None:
        self.counts["bad_inputs"] += n
        self.counts[f"bad_inputs.{kind}"] += n

    def note(self, key: str, n: int = 1) -> None:
        self.counts[key] += n

    def summary(self) -> dict:
        c = self.counts
        main = ("trials", "faults_survived", "bad_inputs", "data_lost", "tracebacks")
        return {
            **{k: c[k] for k in main},
            "silent_wrong_loads": c["silent_wrong_loads"],
            "detail": {k: v for k, v in sorted(c.items()) if k not in main},
        }

    def write(self, path: Path, **extra) -> None:
        path.write_text(json.dumps({**self.summary(), **extra}, indent=2) + "\n")


TALLY = Tally()


# ----------------------------------------------------------------------------- processes


@dataclass
class Finished:
    """A finished ``pixdiff`` process: exit code (negative: killed by that signal) and output."""

    code: int
    out: str
    err: str

    @property
    def traceback(self) -> bool:
        return TRACEBACK in self.err


def command(argv: list[str], *, slow_writes: float = 0.0, full_disk_after: int = -1) -> list[str]:
    """The command line of a ``pixdiff ARGV`` child process with the given faults."""
    faults = [f"--slow-writes={slow_writes}", f"--full-disk-after={full_disk_after}"]
    return [sys.executable, str(Path(__file__).resolve()), *faults, "--", *map(str, argv)]


def start(argv: list[str], **faults) -> subprocess.Popen:
    """Start ``pixdiff ARGV`` (see :func:`command`) with pipes for stdout and stderr."""
    env = {k: v for k, v in os.environ.items() if k != "PIXDIFF_DEBUG"}
    return subprocess.Popen(
        command(argv, **faults),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        errors="replace",
        env=env,
    )


def wait_started(proc: subprocess.Popen, timeout: float = 60.0) -> None:
    """Block until the child has imported pixdiff and is about to run ``main``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if line.strip() == STARTED:
            return
        if not line and proc.poll() is not None:
            raise AssertionError(f"child exited with {proc.returncode} before main")
    raise AssertionError("child did not start in time")


def finish(proc: subprocess.Popen, timeout: float = 120.0) -> Finished:
    out, err = proc.communicate(timeout=timeout)
    return Finished(proc.returncode, out.replace(STARTED + "\n", ""), err)


def run(argv: list[str], timeout: float = 120.0, **faults) -> Finished:
    return finish(start(argv, **faults), timeout)


def signal_after(proc: subprocess.Popen, sig: int, delay: float, *, times: int = 1, gap=0.03):
    """Send ``sig`` after ``delay`` seconds (``times`` times, ``gap`` apart) unless it ended."""
    time.sleep(delay)
    for i in range(times):
        if proc.poll() is not None:
            return
        proc.send_signal(sig)
        if i + 1 < times:
            time.sleep(gap)


def wait_for(path: Path, proc: subprocess.Popen, timeout: float = 60.0) -> bool:
    """Wait until ``path`` exists (True) or the process ended (False)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists():
            return True
        if proc.poll() is not None:
            return False
        time.sleep(0.005)
    raise AssertionError(f"{path} did not appear in time")


# ----------------------------------------------------------------------------- disks


@contextmanager
def small_disk(path: Path, kib: int) -> Iterator[bool]:
    """Mount a tmpfs of ``kib`` KiB at ``path`` (created) when running as root and ``mount``
    works; yields whether it did (else ``path`` is an ordinary folder)."""
    path.mkdir(parents=True, exist_ok=True)
    mounted = os.geteuid() == 0 and _mount(path, kib)
    try:
        yield mounted
    finally:
        if mounted:
            subprocess.run(["umount", "-l", str(path)], check=False)


def _mount(path: Path, kib: int) -> bool:
    cmd = ["mount", "-t", "tmpfs", "-o", f"size={kib}k,mode=0755", "tmpfs", str(path)]
    try:
        return subprocess.run(cmd, capture_output=True, check=False).returncode == 0
    except OSError:
        return False


def full_disk_after(n: int, fsync: Callable[[int], None] = os.fsync) -> Callable[[int], None]:
    """An ``os.fsync`` that fails with ENOSPC, as a full disk does, from the (n + 1)-th temp
    file of an atomic write on: pixdiff's own clean-up then runs (the temp file removed, the
    target kept)."""
    seen = [0]

    def failing(fd: int) -> None:
        if _is_temp(fd):
            seen[0] += 1
            if seen[0] > n:
                raise OSError(errno.ENOSPC, "No space left on device")
        fsync(fd)

    return failing


def _is_temp(fd: int) -> bool:
    try:
        name = os.readlink(f"/proc/self/fd/{fd}")
    except OSError:
        return False
    return name.endswith(".tmp") and Path(name).name.startswith(".")


def _slowly(fn: Callable, seconds: float) -> Callable:
    def slow(*args, **kwargs):
        time.sleep(seconds)
        return fn(*args, **kwargs)

    return slow


# ----------------------------------------------------------------------------- damage


def truncate(path: Path, rng: random.Random) -> str:
    """Cut the file at a random length (possibly 0)."""
    data = path.read_bytes()
    n = rng.randrange(len(data))
    path.write_bytes(data[:n])
    return f"truncated to {n} of {len(data)} bytes"


def zero_range(path: Path, rng: random.Random) -> str:
    """Zero a random range of 1 to 4096 bytes (what a lost block looks like)."""
    data = bytearray(path.read_bytes())
    start = rng.randrange(len(data))
    end = min(len(data), start + rng.randint(1, 4096))
    data[start:end] = bytes(end - start)
    path.write_bytes(bytes(data))
    return f"zeroed bytes {start}..{end}"


def flip_bit(path: Path, rng: random.Random) -> str:
    """Flip one random bit."""
    data = bytearray(path.read_bytes())
    at, bit = rng.randrange(len(data)), rng.randrange(8)
    data[at] ^= 1 << bit
    path.write_bytes(bytes(data))
    return f"flipped bit {bit} of byte {at}"


DAMAGES: dict[str, Callable[[Path, random.Random], str]] = {
    "truncate": truncate,
    "zero": zero_range,
    "flip": flip_bit,
}


def bomb_png(path: Path, side: int = 20000) -> Path:
    """A valid 1-bit grey PNG of side x side black pixels: a few KB on disk, side**2 pixels
    (400 million for 20000) once decoded."""
    row = bytes(1 + (side + 7) // 8)  # filter byte 0, then the packed bits
    z = zlib.compressobj(9)
    chunks = [z.compress(row * 1000) for _ in range(side // 1000)]
    idat = b"".join(chunks) + z.compress(row * (side % 1000)) + z.flush()
    header = struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", header) + _chunk(b"IDAT", idat))
    with path.open("ab") as f:
        f.write(_chunk(b"IEND", b""))
    return path


def _chunk(kind: bytes, data: bytes) -> bytes:
    crc = zlib.crc32(kind + data) & 0xFFFFFFFF
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)


# ----------------------------------------------------------------------------- hostile values

HOSTILE = (
    "-1", "0", "-0", "1e20", "99999999999999999999", "1" * 5000, "nan", "inf", "-inf", "",
    " ", "1.5", "0x10", "true", "None", "[]", "{}", "-", "--", "../../../../../../etc/passwd",
    "..", "/", "/dev/null", "/nonexistent/dir/x", "\udcff\udcfe", "é\u202e", "😀", "a,b,,",
    "-5,-1", "=", "a=b", "x.y=", "%s%n", "'; rm -rf ~", "$(reboot)", "1" * 300 + ".5",
)  # fmt: skip


def hostile_values(rng: random.Random, k: int) -> list[str]:
    """``k`` hostile values: the fixed list, then random mixes of its pieces."""
    values = list(HOSTILE)
    while len(values) < k:
        a, b = rng.choice(HOSTILE), rng.choice(HOSTILE)
        values.append(rng.choice([a + b, a[: len(a) // 2], f"{a}:{b}", a * 3]))
    rng.shuffle(values)
    return values[:k]


# ----------------------------------------------------------------------------- the child


def _child(argv: list[str]) -> int:
    """Install the asked faults, then run pixdiff's main as the ``pixdiff`` script would."""
    p = argparse.ArgumentParser()
    p.add_argument("--slow-writes", type=float, default=0.0)
    p.add_argument("--full-disk-after", type=int, default=-1)
    p.add_argument("rest", nargs=argparse.REMAINDER)
    args = p.parse_args(argv)
    from pixdiff.cli.main import build_parser, main

    build_parser()  # import every command now (main would), so STARTED means ready to run
    if args.slow_writes:  # every atomic write sleeps before its fsyncs and its rename
        os.fsync = _slowly(os.fsync, args.slow_writes)
        os.replace = _slowly(os.replace, args.slow_writes)
    if args.full_disk_after >= 0:
        os.fsync = full_disk_after(args.full_disk_after, os.fsync)
    print(STARTED, flush=True)
    return main(args.rest[1:] if args.rest[:1] == ["--"] else args.rest)


if __name__ == "__main__":
    sys.exit(_child(sys.argv[1:]))
