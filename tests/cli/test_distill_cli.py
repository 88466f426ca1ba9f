"""``pixdiff distill`` end to end on tiny runs: a distilled run samples with its own defaults and
``--sampler consistency --steps 2``, resumes bit-exactly (mid-phase, from teacher.safetensors),
keeps text conditioning and guidance, and bad input is one line that changes nothing."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import pixdiff
from pixdiff.checkpoint import read_tensors
from pixdiff.cli.main import main
from pixdiff.training.distill import Distillation

TINY = [
    "--preset", "unet-tiny", "--batch-size", "8", "--image-size", "16", "--steps", "2",
    "--no-progress", "--set", "run.sample_every=0", "--set", "run.threads=1",
    "--set", "optim.warmup_steps=1", "--set", "model.overrides.attention_resolutions=[8]",
]  # fmt: skip
TEXT = ["--set", "text.width=16", "--set", "text.layers=1", "--set", "text.heads=2"]
FAST = ["--batch-size", "4", "--no-progress", "--set", "run.threads=1", "--set", "run.log_every=1"]


@pytest.fixture(autouse=True, scope="module")
def _one_thread(one_thread):
    """Every test here runs single-threaded (``one_thread``, tests/conftest.py)."""


@pytest.fixture(scope="module")
def teachers(captioned_folder, tmp_path_factory) -> dict[str, Path]:
    """Tiny 2-step runs on one captioned, labelled folder: class-conditional, text-conditioned
    and unconditional."""
    root = tmp_path_factory.mktemp("teachers")
    train = ["train", "--data", str(captioned_folder), *TINY]
    runs = {"class": root / "class", "text": root / "text", "uncond": root / "uncond"}
    assert main([*train, "--out", str(runs["class"]), "--set", "text.enabled=false"]) == 0
    assert main([*train, "--out", str(runs["text"]), *TEXT]) == 0
    assert main([*train, "--out", str(runs["uncond"]), "--set", "data.conditional=false"]) == 0
    return runs


def distill(teacher: Path, out: Path, *flags: str) -> int:
    return main(["distill", str(teacher), "--out", str(out), *FAST, *flags])


def weights(run: Path) -> dict[str, torch.Tensor]:
    return {
        f"{name}:{k}": v
        for name in ("model.safetensors", "ema.safetensors")
        for k, v in read_tensors(run / name)[0].items()
    }


def test_a_consistency_run_samples_in_its_steps_and_refuses_more(teachers, tmp_path, capsys):
    out = tmp_path / "cm"
    assert distill(teachers["class"], out, "--method", "consistency", "--iters", "3") == 0
    config = json.loads((out / "config.json").read_text())
    assert config["train"]["sample"] == {"sampler": "consistency", "steps": 2, "guidance": 2.0}
    assert config["distilled"]["guidance"] == [2.0, 2.0] and config["distilled"]["max_steps"] == 4
    assert config["net"]["guidance_embed"] and config["net"]["num_classes"] == 2
    sample = ["sample", str(out), "-n", "2", "--class", "1", "--no-progress"]
    assert (
        main([*sample, "--sampler", "consistency", "--steps", "2", "--out", str(tmp_path / "a")])
        == 0
    )
    assert len(list((tmp_path / "a").glob("*.png"))) == 3  # two images and the grid
    capsys.readouterr()
    assert (
        main([*sample, "--sampler", "consistency", "--steps", "5", "--out", str(tmp_path / "b")])
        == 2
    )
    err = capsys.readouterr().err.strip()
    assert "samples in 1 to 4 steps" in err and len(err.splitlines()) == 1
    assert main([*sample, "--out", str(tmp_path / "c")]) == 0  # the run's sampler and steps
    assert "(consistency, 2 steps)" in capsys.readouterr().out
    images = pixdiff.load(out).generate(classes=[0, 1], output="tensor")  # the run's defaults
    assert images.shape == (2, 3, 16, 16)


@pytest.mark.parametrize(
    ("method", "flags", "stop_at"),
    [
        ("progressive", ["--teacher-steps", "4", "--steps", "1", "--iters", "2"], 3),
        ("consistency", ["--iters", "4", "--set", "distilled.gap_stages=2"], 2),
    ],
)
def test_an_interrupted_distillation_resumes_bit_exactly(
    teachers, tmp_path, monkeypatch, method, flags, stop_at
):
    assert distill(teachers["class"], tmp_path / "a", "--method", method, *flags) == 0
    after_step = Distillation.after_step

    def stop_once(self, stop):
        after_step(self, stop or self.state.step == stop_at)

    monkeypatch.setattr(Distillation, "after_step", stop_once)
    assert distill(teachers["class"], tmp_path / "b", "--method", method, *flags) == 130
    monkeypatch.setattr(Distillation, "after_step", after_step)
    if method == "progressive":  # stopped in phase 1: its teacher is kept for the resume
        assert read_tensors(tmp_path / "b" / "teacher.safetensors")[1]["phase"] == "1"
    assert distill(teachers["class"], tmp_path / "b", "--method", method, "--resume") == 0
    a, b = weights(tmp_path / "a"), weights(tmp_path / "b")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    rows = (tmp_path / "b" / "log.csv").read_text().splitlines()[1:]
    assert [int(r.split(",")[0]) for r in rows] == [1, 2, 3, 4]


def test_text_conditioning_and_guidance_survive_distillation(teachers, tmp_path):
    out = tmp_path / "text"
    flags = ["--teacher-steps", "2", "--steps", "1", "--iters", "2", "--guidance-range", "1", "3"]
    grid = ["--set", "run.sample_every=2"]  # one row per caption, in the student's 1 step
    assert distill(teachers["text"], out, "--method", "progressive", *flags, *grid) == 0
    assert (out / "samples" / "step_0000002.png").exists()
    model = pixdiff.load(out)
    assert model.text_encoder is not None and model.config["distilled"]["guidance"] == [1.0, 3.0]
    assert model.info()["steps"] == 1 and model.info()["kind"] == "text"
    low = model.generate(prompts=["red apple"], guidance=1.0, output="tensor")
    high = model.generate(prompts=["red apple"], guidance=3.0, output="tensor")
    assert low.shape == (1, 3, 16, 16) and not torch.equal(low, high)  # the scale is an input
    keys = read_tensors(out / "ema.safetensors")[0]
    assert "text_encoder.token_embed.weight" in keys
    assert "net.embed.guidance.mlp.2.weight" in keys


def test_distilling_a_distilled_run_follows_the_rules(teachers, tmp_path, capsys):
    two = tmp_path / "two"
    flags = ["--teacher-steps", "4", "--steps", "2", "--iters", "1"]
    assert distill(teachers["class"], two, "--method", "progressive", *flags) == 0
    one = tmp_path / "one"  # progressive from progressive: halving goes on from its 2 steps
    assert distill(two, one, "--method", "progressive", "--steps", "1", "--iters", "1") == 0
    config = json.loads((one / "config.json").read_text())["distilled"]
    assert config["teacher_steps"] == 2 and config["teacher"] == str(two.resolve())
    capsys.readouterr()
    assert distill(one, tmp_path / "x", "--method", "progressive", "--iters", "1") == 2
    assert "already samples in one step" in capsys.readouterr().err
    assert distill(two, tmp_path / "x", "--method", "consistency", "--iters", "1") == 2
    assert "is itself distilled (progressive)" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


@pytest.mark.parametrize(
    ("which", "flags", "message"),
    [
        (None, ["--method", "progressive"], "does not exist"),
        ("class", ["--method", "consistency", "--steps", "8"], "samples in 1 to 4 steps"),
        ("class", ["--method", "progressive", "--teacher-steps", "6"], "a power of two"),
        ("uncond", ["--method", "progressive", "--guidance", "2"], "is unconditional"),
        ("class", ["--method", "progressive", "--set", "distilled.nope=1"], "unknown setting"),
        (
            "class",
            ["--method", "consistency", "--set", "distilled.variant=training"],
            "consistency training takes its targets from data",
        ),
    ],
)
def test_bad_input_is_one_line_and_creates_nothing(
    teachers, tmp_path, capsys, which, flags, message
):
    teacher = teachers[which] if which else tmp_path / "missing"
    assert distill(teacher, tmp_path / "out", *flags) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1, err
    assert not (tmp_path / "out").exists()


def test_resume_keeps_the_run_settings(teachers, tmp_path, capsys):
    out = tmp_path / "run"
    flags = ["--method", "progressive", "--teacher-steps", "4", "--iters", "1"]
    assert distill(teachers["class"], out, *flags) == 0
    before = weights(out)
    capsys.readouterr()
    assert distill(teachers["class"], out, *flags, "--steps", "1", "--resume") == 2
    assert "distilled with distilled.steps=2, not 1" in capsys.readouterr().err
    assert distill(teachers["text"], out, "--method", "progressive", "--resume") == 2
    assert "is distilled from" in capsys.readouterr().err
    after = weights(out)
    assert all(torch.equal(before[k], after[k]) for k in before)
