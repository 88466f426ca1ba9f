"""End to end: train from the CLI, kill -9, resume bit-exactly, DDP, sample, bad input."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from pixdiff.checkpoint import read_tensors
from pixdiff.cli.main import main

TINY = [
    "--preset",
    "unet-tiny",
    "--batch-size",
    "8",
    "--set",
    "run.sample_every=0",
    "--set",
    "run.log_every=1",
    "--set",
    "run.threads=1",
    "--no-progress",
    "--set",
    "optim.warmup_steps=2",
    "--set",
    "model.overrides.attention_resolutions=[8]",
]


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    """24 random 16x16 RGB images in 3 labelled classes, imagefolder style."""
    root = tmp_path_factory.mktemp("imgs")
    rng = np.random.default_rng(0)
    with (root / "metadata.jsonl").open("w") as f:
        for i in range(24):
            name = f"img{i:02d}.png"
            Image.fromarray(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)).save(root / name)
            f.write(json.dumps({"file_name": name, "label": ["cat", "dog", "owl"][i % 3]}) + "\n")
    return root


def cli(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "pixdiff.cli.main", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"pixdiff {' '.join(args)} failed:\n{proc.stderr}")
    return proc


def train_args(folder: Path, out: Path, steps: int, *extra: str) -> list[str]:
    return [
        "train",
        "--data",
        str(folder),
        "--out",
        str(out),
        "--image-size",
        "16",
        "--steps",
        str(steps),
        *TINY,
        *extra,
    ]


def checkpoint_step(run: Path) -> int:
    return (
        int(read_tensors(run / "train_state.safetensors")[1]["step"])
        if (run / "train_state.safetensors").exists()
        else -1
    )


def test_killed_run_resumes_bit_exactly(folder, tmp_path):
    steps = 8
    cli(*train_args(folder, tmp_path / "a", steps, "--set", "run.checkpoint_every=100"))
    # run b: checkpoint every 3 steps, SIGKILL once step 3 is on disk, then resume
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "pixdiff.cli.main",
            *train_args(folder, tmp_path / "b", steps, "--set", "run.checkpoint_every=3"),
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.time() + 300
    while checkpoint_step(tmp_path / "b") < 3 and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    killed_at = checkpoint_step(tmp_path / "b")
    assert 3 <= killed_at < steps, f"the run was not killed mid-way (checkpoint {killed_at})"
    cli("train", "--out", str(tmp_path / "b"), "--resume", "--no-progress")
    for name in ("model.safetensors", "ema.safetensors"):
        a, _ = read_tensors(tmp_path / "a" / name)
        b, _ = read_tensors(tmp_path / "b" / name)
        assert a.keys() == b.keys()
        for k in a:
            assert torch.equal(a[k], b[k]), f"{name}:{k} differs after resume"
    log = (tmp_path / "b" / "log.csv").read_text().splitlines()
    assert [int(r.split(",")[0]) for r in log[1:]] == list(range(1, steps + 1))


def test_torchrun_ddp_two_processes(folder, tmp_path):
    out = tmp_path / "ddp"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc_per_node=2",
            "-m",
            "pixdiff.cli.main",
            *train_args(folder, out, 3),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert checkpoint_step(out) == 3
    assert (out / "ema.safetensors").exists() and (out / "config.json").exists()


@pytest.fixture(scope="module")
def tiny_run(folder, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("runs") / "tiny"
    cli(*train_args(folder, out, 2))
    return out


def test_sample_cli_writes_pngs_and_gif(tiny_run, tmp_path):
    out = tmp_path / "s"
    proc = cli(
        "sample",
        str(tiny_run),
        "-n",
        "6",
        "--steps",
        "3",
        "--class",
        "dog",
        "--guidance",
        "2",
        "--out",
        str(out),
        "--trajectory",
        "--no-progress",
    )
    assert "grid" in proc.stdout
    pngs = sorted(p.name for p in out.glob("0*.png"))
    assert pngs == [f"{i:06d}.png" for i in range(6)]
    assert Image.open(out / "000000.png").size == (16, 16)
    gif = Image.open(out / "trajectory.gif")
    assert gif.n_frames == 3


def test_sample_is_reproducible_and_batch_independent(tiny_run, tmp_path):
    cli(
        "sample",
        str(tiny_run),
        "-n",
        "4",
        "--steps",
        "3",
        "--out",
        str(tmp_path / "x"),
        "--no-progress",
        "--batch-size",
        "4",
    )
    cli(
        "sample",
        str(tiny_run),
        "-n",
        "4",
        "--steps",
        "3",
        "--out",
        str(tmp_path / "y"),
        "--no-progress",
        "--batch-size",
        "1",
    )
    for i in range(4):
        a = np.asarray(Image.open(tmp_path / "x" / f"{i:06d}.png"))
        b = np.asarray(Image.open(tmp_path / "y" / f"{i:06d}.png"))
        assert np.array_equal(a, b)


def run_main(capsys, *args) -> tuple[int, str]:
    code = main(list(args))
    return code, capsys.readouterr().err


def test_bad_input_gives_one_line_errors(folder, tiny_run, tmp_path, capsys):
    code, err = run_main(capsys, *train_args(folder, tiny_run, 2))
    assert code == 2 and "already exists" in err and "--resume" in err
    code, err = run_main(
        capsys, "sample", str(tiny_run), "--class", "zebra", "--out", str(tmp_path)
    )
    assert code == 2 and "unknown class 'zebra'" in err and "cat" in err
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "config.json").write_text((tiny_run / "config.json").read_text())
    (bad / "ema.safetensors").write_bytes(b"\x00garbage")
    code, err = run_main(capsys, "sample", str(bad), "--out", str(tmp_path / "o"))
    assert code == 2 and "corrupt" in err and "ema.safetensors" in err
    other = json.loads((tiny_run / "config.json").read_text())
    del other["checksum"]  # how a hand edit is accepted (RELIABILITY.md)
    other["net"]["model_channels"] = 24
    (bad / "config.json").write_text(json.dumps(other))
    (bad / "ema.safetensors").write_bytes((tiny_run / "ema.safetensors").read_bytes())
    code, err = run_main(capsys, "sample", str(bad), "--out", str(tmp_path / "o"))
    assert code == 2 and "does not fit this network" in err
    code, err = run_main(
        capsys, "train", "--data", str(tmp_path / "nowhere"), "--out", str(tmp_path / "r"), *TINY
    )
    assert code == 2 and "nowhere" in err
    code, err = run_main(
        capsys, "sample", str(tiny_run), "--guidance", "3", "--out", str(tmp_path / "g")
    )
    assert code == 2 and "--class" in err
    code, err = run_main(capsys, "train", "--out", str(tmp_path / "r2"), "--set", "optim.lrr=1")
    assert code == 2 and "optim.lrr" in err
    for bad_set, message in (
        ('data.split="val"', "data.split must be one of ['train', 'test', 'all']"),
        ("run.checkpoint_every=-1", "checkpoint_every must be >= 0"),
        ("run.log_every=0", "run.log_every must be >= 1"),
    ):
        code, err = run_main(capsys, "train", "--out", str(tmp_path / "r3"), "--set", bad_set)
        assert code == 2 and message in err, err


def test_sample_nfe_grid_and_float64_take_effect(tiny_run, tmp_path):
    proc = cli(
        "sample",
        str(tiny_run),
        "-n",
        "2",
        "--nfe",
        "4",
        "--out",
        str(tmp_path / "a"),
        "--no-progress",
        "--float64",
    )
    assert "(ddim, 4 steps)" in proc.stdout
    cli(
        "sample",
        str(tiny_run),
        "-n",
        "2",
        "--steps",
        "4",
        "--grid",
        "linspace",
        "--out",
        str(tmp_path / "b"),
        "--no-progress",
    )
    a = np.asarray(Image.open(tmp_path / "a" / "000000.png"), dtype=np.int32)
    b = np.asarray(Image.open(tmp_path / "b" / "000000.png"), dtype=np.int32)
    assert np.abs(a - b).max() > 0  # trailing (default) and linspace grids differ
    bad = cli("sample", str(tiny_run), "--nfe", "0", "--out", str(tmp_path / "c"), check=False)
    assert bad.returncode == 2 and "too small" in bad.stderr


def test_eval_every_writes_eval_csv(tmp_path, monkeypatch):
    """--eval-every K scores EMA samples every K steps into eval.csv (tiny: 130 samples, the
    fewest FD accepts with the classifier's 128-d features, 2 DDIM steps)."""
    monkeypatch.setenv("PIXDIFF_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "run"
    argv = ["train", "--data", "fashion-mnist", "--out", str(out), *TINY, "--steps", "4"]
    argv += ["--eval-every", "2", "--set", "run.eval_n=130", "--set", "sample.steps=2"]
    argv += ["--set", "model.overrides.attention_resolutions=[14]"]
    assert main(argv) == 0
    rows = list(csv.DictReader((out / "eval.csv").open()))
    assert [int(r["step"]) for r in rows] == [2, 4]
    assert all(float(r["fd"]) > 0 and 0 <= float(r["acc"]) <= 1 for r in rows)


def test_checkpoint_every_zero_checkpoints_only_at_the_end(folder, tmp_path, capsys):
    out = tmp_path / "r"
    argv = train_args(folder, out, 2, "--set", "run.checkpoint_every=0", "--set", "run.log_every=1")
    code, err = run_main(capsys, *argv)
    assert code == 0, err
    assert (out / "train_state.safetensors").is_file() and len(
        (out / "log.csv").read_text().splitlines()
    ) == 3


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--steps", "-5"], "--steps: run.steps must be >= 1, got -5"),
        (["--steps", "0"], "--steps: run.steps must be >= 1, got 0"),
        (["--batch-size", "0"], "--batch-size: optim.batch_size must be >= 1, got 0"),
        (["--seed", "100000000000000000000"], "run.seed must be in [0, 4294967295]"),
        (["--set", "diffusion.label_dropout=2"], "diffusion.label_dropout must be in [0, 1)"),
        (["--set", "optim.warmup_steps=-10"], "optim.warmup_steps must be >= 0, got -10"),
        (["--set", "run.threads=-2"], "run.threads must be >= 0, got -2"),
        (["--set", "optim.lr=0"], "optim.lr must be in (0, 1], got 0.0"),
        (["--set", "optim.lr.x=1"], "'optim.lr.x': optim.lr is a value, not a section"),
    ],
)
def test_out_of_range_values_are_one_line_errors(tmp_path, capsys, flags, message):
    code, err = run_main(capsys, "train", "--out", str(tmp_path / "r"), *flags)
    assert code == 2 and message in err and err.count("\n") == 1, err
    assert not (tmp_path / "r").exists()


def test_a_non_integer_flag_is_a_one_line_usage_error(tmp_path, capsys):
    code, err = run_main(capsys, "train", "--out", str(tmp_path / "r"), "--seed", "1e20")
    assert code == 2 and err.count("\n") == 1, err
    assert "argument --seed: expected an integer in [0, 4294967295], got '1e20'" in err
