"""Training logs (#22): TensorBoard event files read back equal log.csv and eval.csv (across a
resume), the one-line stdout log equals log.csv's rows, the start-up banner's numbers are the
run's, and a missing tensorboard package is one line before anything is written."""

from __future__ import annotations

import csv
import io
import re
import sys
import time
from decimal import Decimal
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from pixdiff.checkpoint import load
from pixdiff.cli.main import main
from pixdiff.training import trainer
from pixdiff.training.banner import batch_row
from pixdiff.training.loggers import TENSORBOARD_DIR, lines_on_stdout

pytestmark = pytest.mark.usefixtures("one_thread")

TINY = [
    "--image-size", "8", "--preset", "unet-tiny", "--batch-size", "4", "--no-progress",
    "--set", "run.sample_every=0", "--set", "run.threads=1", "--set", "optim.warmup_steps=1",
    "--set", "model.overrides.attention_resolutions=[4]",
]  # fmt: skip


@pytest.fixture(scope="module")
def data(image_folder, tmp_path_factory) -> Path:
    return image_folder(tmp_path_factory.mktemp("imgs"), 16, 8, ["cat", "dog"])


def train(data: Path, out: Path, *flags: str) -> int:
    return main(["train", "--data", str(data), "--out", str(out), *TINY, *flags])


def rows(path: Path) -> list[dict[str, str]]:
    return list(csv.DictReader(path.open()))


def close_to(written: str, value: float) -> bool:
    """Whether the float32 ``value`` TensorBoard holds rounds to the CSV's ``written``: within
    half a unit of its last digit, plus float32's rounding of the value."""
    last_digit = Decimal(written).as_tuple().exponent
    return abs(value - float(written)) <= 0.5 * 10.0**last_digit + abs(value) * 2.0**-23


def events(run: Path) -> EventAccumulator:
    return EventAccumulator(str(run / TENSORBOARD_DIR), size_guidance={"scalars": 0, "images": 0})


def test_tensorboard_events_read_back_equal_log_csv_and_eval_csv_across_a_resume(
    data, tmp_path, monkeypatch
):
    """Steps 1-3 logged, checkpoint at 2, NaN at 4; the resume logs 3-6 again: TensorBoard's
    purge drops the first session's step 3 as log.csv does, so both hold steps 1-6 with the
    same values, eval at 2, 4, 6, and the sample grids at 2, 4, 6 with the PNGs' pixels."""

    def fake_eval(cfg, data, net_cfg, out, device):  # the scoring itself is tested in eval/
        scores = iter([100 / 3, 50 / 3, 25 / 3, 12.5 / 3])
        return lambda denoiser: {"eval/fd": next(scores), "eval/acc": 0.125}

    calls, real = [], trainer.diffusion_loss

    def poisoned(*args, **kwargs):
        calls.append(1)
        loss = real(*args, **kwargs)
        return loss * float("nan") if len(calls) == 4 else loss

    monkeypatch.setattr(trainer, "periodic_eval", fake_eval)
    monkeypatch.setattr(trainer, "diffusion_loss", poisoned)
    out = tmp_path / "run"
    flags = ["--logger", "tensorboard", "--eval-every", "2", "--set", "run.checkpoint_every=2"]
    flags += ["--set", "run.log_every=1", "--set", "run.sample_every=2"]
    assert train(data, out, "--steps", "6", *flags) == 2  # the NaN: one line, checkpoint kept
    assert [r["step"] for r in rows(out / "log.csv")] == ["1", "2", "3"]
    first = next((out / TENSORBOARD_DIR).iterdir()).name  # events.out.tfevents.SECONDS...
    while int(time.time()) <= int(first.split(".")[3]):  # event files are read in name order
        time.sleep(0.05)
    monkeypatch.setattr(trainer, "diffusion_loss", real)
    assert main(["train", "--out", str(out), "--resume", "--no-progress"]) == 0
    assert len(list((out / TENSORBOARD_DIR).iterdir())) == 2  # the resume appended a file

    acc = events(out).Reload()
    log, evals = rows(out / "log.csv"), rows(out / "eval.csv")
    assert [int(r["step"]) for r in log] == [1, 2, 3, 4, 5, 6]
    assert [int(r["step"]) for r in evals] == [2, 4, 6]
    for tag_group, table in (("train", log), ("eval", evals)):
        for name in [k for k in table[0] if k != "step" and table[0][k]]:
            scalars = acc.Scalars(f"{tag_group}/{name}")
            assert [s.step for s in scalars] == [int(r["step"]) for r in table], name
            assert all(close_to(r[name], s.value) for r, s in zip(table, scalars, strict=True))
    assert sorted(acc.Tags()["scalars"]) == sorted(
        [f"train/{k}" for k in log[0] if k != "step"] + ["eval/acc", "eval/fd"]
    )
    images = acc.Images("samples")
    assert [i.step for i in images] == [2, 4, 6]
    for image in images:
        logged = np.asarray(Image.open(io.BytesIO(image.encoded_image_string)))
        saved = np.asarray(Image.open(out / "samples" / f"step_{image.step:07d}.png"))
        np.testing.assert_array_equal(logged, saved[::2, ::2])  # the PNG is at 2x scale


def test_no_progress_prints_a_banner_and_one_line_per_logged_step_equal_to_log_csv(
    data, tmp_path, capsys
):
    out = tmp_path / "run"
    assert train(data, out, "--steps", "5", "--set", "run.log_every=2") == 0
    stdout = capsys.readouterr().out
    log = rows(out / "log.csv")
    lines = [ln for ln in stdout.splitlines() if ln.startswith("train step=")]
    assert len(lines) == len(log) == 3  # steps 2, 4 and the last
    for line, row in zip(lines, log, strict=True):
        values = dict(item.split("=") for item in line.split()[1:])
        assert values.pop("step") == f"{row['step']}/5"
        assert values.pop("images") == str(int(row["step"]) * 4)
        assert values == {k: v for k, v in row.items() if k != "step"}
    banner = stdout[: stdout.index("train step=")]
    assert banner.startswith(f"pixdiff train: {out}\n")
    net = load(out).net
    count = int(re.search(r"unet-tiny, ([\d,]+) parameters\n", banner)[1].replace(",", ""))
    assert count == sum(p.numel() for p in net.parameters()) > 0
    assert re.search(r"\n  data +\S+: 16 images of 3x8x8\n", banner)
    assert re.search(r"\n  batch +4\n  steps +5\n  device +cpu, precision fp32\n", banner)
    assert not (out / TENSORBOARD_DIR).exists()  # csv unless asked

    assert main(["train", "--out", str(out), "--resume", "--steps", "6", "--no-progress"]) == 0
    stdout = capsys.readouterr().out
    assert "  steps   6, resuming at step 5\n" in stdout
    assert stdout.count("train step=") == 1 and "train step=6/6 images=24 " in stdout


def test_the_stdout_log_follows_the_progress_bar_and_the_terminal(monkeypatch):
    assert lines_on_stdout(progress=False) and lines_on_stdout(progress=True)  # not a TTY
    monkeypatch.setattr(sys.stdout, "isatty", lambda: True)
    assert lines_on_stdout(progress=False) and not lines_on_stdout(progress=True)


def test_the_banner_spells_out_the_effective_batch():
    assert batch_row(256, 2, 2) == "256 (64 per micro-batch x 2 accumulation steps x 2 processes)"
    assert batch_row(64, 4) == "64 (16 per micro-batch x 4 accumulation steps)"
    assert batch_row(64) == "64"


def test_distill_logs_the_same_way(data, tmp_path, capsys):
    teacher, out = tmp_path / "teacher", tmp_path / "student"
    assert train(data, teacher, "--steps", "1") == 0
    argv = ["distill", str(teacher), "--out", str(out), "--method", "consistency", "--iters"]
    argv += ["3", "--batch-size", "4", "--no-progress", "--set", "run.threads=1"]
    argv += ["--set", "run.log_every=2", "--logger", "tensorboard"]
    capsys.readouterr()
    assert main(argv) == 0
    stdout = capsys.readouterr().out
    assert stdout.startswith(f"pixdiff distill: {out}\n") and "consistency distillation" in stdout
    lines = [ln for ln in stdout.splitlines() if ln.startswith("distill step=")]
    log = rows(out / "log.csv")
    assert [ln.split()[1] for ln in lines] == ["step=2/3", "step=3/3"]
    assert [f"loss={r['loss']}" in ln for r, ln in zip(log, lines, strict=True)] == [True, True]
    phases = events(out).Reload().Scalars("train/phase")
    assert [(s.step, s.value) for s in phases] == [(2, 0.0), (3, 0.0)]


def test_a_missing_tensorboard_is_one_line_before_anything_is_written(
    data, tmp_path, capsys, monkeypatch
):
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # import fails
    code = train(data, tmp_path / "run", "--steps", "1", "--logger", "tensorboard")
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1, err
    assert "needs the tensorboard package: pip install tensorboard" in err
    assert not (tmp_path / "run").exists()
