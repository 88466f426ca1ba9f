"""Helpers of the reliability tests: a tiny image folder, `pixdiff train` arguments for runs of
a second or two, and a byte-for-byte snapshot of a directory."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image

from pixdiff import checkpoint
from pixdiff.cli.main import main
from pixdiff.files import DiskFullError
from pixdiff.rundir import LOCK


def image_folder(root: Path, *, labels: tuple[int, ...] = (0, 1), n: int = 16) -> Path:
    """n random 8x8 RGB images, image i labelled labels[i % len(labels)] (metadata.jsonl)."""
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    with (root / "metadata.jsonl").open("w") as f:
        for i in range(n):
            Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)).save(root / f"{i}.png")
            f.write(json.dumps({"file_name": f"{i}.png", "label": labels[i % len(labels)]}) + "\n")
    return root


def train_argv(data: Path, out: Path, *extra: str, steps: int = 2) -> list[str]:
    """`pixdiff train` of unet-tiny on 8x8 images for ``steps`` steps."""
    return [
        "train", "--data", str(data), "--out", str(out), "--image-size", "8",
        "--preset", "unet-tiny", "--batch-size", "4", "--steps", str(steps), "--no-progress",
        "--set", "run.sample_every=0", "--set", "run.log_every=1", "--set", "run.threads=1",
        "--set", "optim.warmup_steps=1", "--set", "model.overrides.attention_resolutions=[4]",
        *extra,
    ]  # fmt: skip


def full_disk_on(name: str, monkeypatch, after: int = 0) -> None:
    """Make the (after + 1)-th checkpoint write of file ``name`` fail as on a full disk."""
    real, seen = checkpoint.atomic_write, {"n": 0}

    def write(path, data):
        if Path(path).name == name:
            seen["n"] += 1
            if seen["n"] > after:
                raise DiskFullError(path)
        real(path, data)

    monkeypatch.setattr(checkpoint, "atomic_write", write)


def resume_argv(out: Path, *extra: str) -> list[str]:
    return ["train", "--out", str(out), "--resume", "--no-progress", *extra]


def run_main(capsys, argv: list[str]) -> tuple[int, str]:
    """``pixdiff ARGV`` in this process: (exit code, stderr)."""
    code = main([str(a) for a in argv])
    return code, capsys.readouterr().err


def snapshot(root: Path) -> dict[str, bytes]:
    """Every file under ``root`` (but the lock file, whose holder note each locker rewrites),
    by relative path, with its bytes."""
    return {
        str(p.relative_to(root)): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file() and p.name != LOCK
    }


def error_line(err: str) -> str:
    """The one line a refused command prints (warnings and the data loader's progress bar
    aside), asserting it is one line."""
    noise = ("warning:", "%|")
    lines = [ln for ln in err.splitlines() if ln.strip() and not any(n in ln for n in noise)]
    assert len(lines) == 1, err
    return lines[0]
