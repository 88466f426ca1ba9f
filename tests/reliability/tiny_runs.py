"""Helpers of the reliability tests: a tiny image folder, `pixdiff train` arguments for runs of
a second or two, and a byte-for-byte snapshot of a directory."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from pixdiff import checkpoint
from pixdiff.checkpoint import read_tensors
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


# ----------------------------------------------------------------------------- long runs

LONG_STEPS = 12  # the runs that the fault trials interrupt, checkpointed at every step


def long_argv(data: Path, out: Path, *extra: str) -> list[str]:
    """`pixdiff train` of LONG_STEPS steps with a checkpoint after every step."""
    return train_argv(data, out, "--set", "run.checkpoint_every=1", *extra, steps=LONG_STEPS)


def differences(run: Path, reference: Path) -> list[str]:
    """What differs between two runs' weights, EMA weights and train state (tensors and the
    step), by file and key; empty if they are bit-identical."""
    found = []
    for name in (checkpoint.MODEL, checkpoint.EMA, checkpoint.TRAIN_STATE):
        (a, meta_a), (b, meta_b) = read_tensors(run / name), read_tensors(reference / name)
        if sorted(a) != sorted(b) or meta_a.get("step") != meta_b.get("step"):
            found.append(f"{name}: keys or step")
            continue
        found += [f"{name}: {k}" for k in sorted(a) if not torch.equal(a[k], b[k])]
    return found


def logged_steps(run: Path) -> list[int]:
    """The steps of log.csv's rows, in order."""
    return [int(line.split(",")[0]) for line in (run / "log.csv").read_text().splitlines()[1:]]


# ----------------------------------------------------------------------------- every command


def input_images(root: Path) -> dict[str, Path]:
    """An 8x8 RGB input (edit, inpaint), a 4x4 one (upscale of the 4 -> 8 run) and an 8x8 mask."""
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(1)
    paths = {"in8": root / "in8.png", "in4": root / "in4.png", "mask8": root / "mask8.png"}
    Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)).save(paths["in8"])
    Image.fromarray(rng.integers(0, 256, (4, 4, 3), dtype=np.uint8)).save(paths["in4"])
    Image.fromarray(((rng.random((8, 8)) > 0.5) * 255).astype(np.uint8)).save(paths["mask8"])
    return paths


def cheap_argv(command: str, p: dict[str, Path], out: Path) -> list[str]:
    """A fast, successful invocation of ``command`` (as build_parser names it: 'bench samplers')
    on the tiny runs; ``p`` holds the paths 'run', 'sr', 'data', 'in8', 'in4', 'mask8',
    'tune' (a run that tune-grid may write into), 'inception' (random FID weights) and
    'diffusers' (the run exported as a diffusers folder), 'scorer', 'pairs' and 'lora'."""
    steps = ["--steps", "1", "--no-progress", "--out", out]
    table = {
        "train": train_argv(p["data"], out),
        "sample": ["sample", p["run"], "-n", "1", *steps],
        "edit": ["edit", p["run"], "--input", p["in8"], "--strength", "0.5", *steps],
        "inpaint": ["inpaint", p["run"], "--input", p["in8"], "--mask", p["mask8"], *steps],
        "upscale": ["upscale", p["sr"], "--input", p["in4"], *steps],
        "eval": [
            "eval", p["run"], "--metrics", "bpd", "--bpd-n", "2", "--bpd-t-samples", "2",
            "--no-progress", "--out", out / "eval.json",
        ],
        "bench samplers": [
            "bench", "samplers", p["run"], "--samplers", "ddim", "--nfe", "2", "-n", "1",
            "--reference-steps", "2", "--no-progress", "--out", out,
        ],
        "train-classifier": [
            "train-classifier", "--data", p["data"], "--out", out, "--steps", "1",
            "--batch-size", "2", "--image-size", "8", "--no-progress",
        ],
        "distill": [
            "distill", p["run"], "--method", "progressive", "--out", out, "--steps", "1",
            "--teacher-steps", "2", "--iters", "1", "--batch-size", "4", "--no-progress",
            "--set", "run.threads=1",
        ],
        "train-control": [
            "train-control", p["run"], "--control", "edges", "--out", out, "--steps", "1",
            "--batch-size", "4", "--no-progress", "--set", "run.threads=1",
        ],
        "demo": ["demo", "--out", out],
        "convert-inception": ["convert-inception", p["inception"], "--out", out],
        "export": ["export", p["run"], out, "--to", "torchscript"],
        "import": ["import", p["diffusers"], "--out", out],
        "finetune": [
            "finetune", p["run"], "--out", out, "--data", p["data"], "--lora-rank", "2",
            "--steps", "1", "--batch-size", "4", "--no-progress", "--sample-every", "0",
        ],
        "make-pairs": [
            "make-pairs", p["run"], "--scorer", p["scorer"], "-k", "2", "--steps", "1",
            "--out", out,
        ],
        "align": [
            "align", p["run"], "--pairs", p["pairs"], "--out", out, "--lora-rank", "2",
            "--steps", "1", "--batch-size", "2", "--no-progress", "--sample-every", "0",
        ],
        "lora merge": ["lora", "merge", p["lora"], "--out", out],
        "serve": ["serve", p["run"], "--port", "0"],  # with uvicorn.run stubbed (test_cli_fuzz)
        "tune-grid": [
            "tune-grid", p["tune"], "--nfe", "2", "-n", "1", "--reference-steps", "2",
            "--candidates", "3", "--refine", "1", "--no-progress",
        ],
    }  # fmt: skip
    if command not in table:
        raise KeyError(f"no fast invocation of {command!r}: add one to tiny_runs.cheap_argv")
    return [str(a) for a in table[command]]
