"""Super-resolution and cascades end to end: a tiny base (8x8) and SR run (8 -> 16) from the CLI,
the two-stage pipeline's shapes, upscale, per-stage options and the one-line bad-input errors."""

import numpy as np
import pytest
import torch
from PIL import Image

import pixdiff
from pixdiff import shipped
from pixdiff.cli.main import build_parser, main
from pixdiff.conditioning import Cond
from pixdiff.guidance import label_cond
from pixdiff.pipelines.cascade import Stage, cascade
from pixdiff.pipelines.steering import Steering
from pixdiff.sampling import Sampling


@pytest.fixture(scope="module")
def models(sr_runs):
    return {name: pixdiff.load(sr_runs[name]) for name in ("base", "sr")}


def test_sr_run_records_its_settings_and_previews(sr_runs, models):
    sr = models["sr"].sr
    assert (sr.low_res_size, sr.aug_max, sr.aug_level) == (8, 0.5, 0.2)
    assert models["sr"].net.config.low_res_channels == 3 and models["base"].sr is None
    grid = Image.open(sr_runs["sr"] / "samples" / "step_0000002.png")  # low-res, SR, originals
    assert grid.size[1] > grid.size[0] / 8 * 2


def test_two_stage_cascade_shapes_seeds_and_levels(models):
    def run(aug_level=None, seed=0):
        stages = [
            Stage(models["base"], sampling=Sampling(steps=2)),
            Stage(models["sr"], sampling=Sampling("ddpm", 2), aug_level=aug_level),
        ]
        return cascade(stages, Steering(classes=torch.tensor([0, 1])), n=2, seed=seed)

    low, high = run()
    assert low.shape == (2, 3, 8, 8) and high.shape == (2, 3, 16, 16)
    assert torch.isfinite(high).all()
    again = run()
    assert torch.equal(again[1], high)  # per-sample seeds: reproducible
    assert not torch.allclose(run(aug_level=0.0)[1], high)  # the level reaches the network
    assert not torch.allclose(run(seed=1)[1], high)


def test_cfg_keeps_the_low_res_image_in_both_branches():
    cond = Cond(
        label=torch.tensor([0, 1]), low_res=torch.ones(2, 3, 4, 4), low_res_noise=torch.zeros(2)
    )
    other = label_cond(5)(cond)
    assert other.label.tolist() == [5, 5] and torch.equal(other.low_res, cond.low_res)


def test_cascade_cli_writes_every_stage(sr_runs, tmp_path):
    out = tmp_path / "c"
    argv = ["sample", "--cascade", str(sr_runs["base"]), str(sr_runs["sr"]), "-n", "3"]
    argv += ["--stage-steps", "2", "1", "--stage-sampler", "ddim", "--aug-level", "0.1"]
    argv += ["--class", "dog", "--stage-guidance", "2", "1", "--save-stages", "--out", str(out)]
    assert main([*argv, "--no-progress"]) == 0
    assert Image.open(out / "000002.png").size == (16, 16)
    assert Image.open(out / "stage1" / "000000.png").size == (8, 8)
    assert Image.open(out / "stage2" / "000000.png").size == (16, 16)


def test_cascade_without_runs_uses_the_shipped_cascade(sr_runs, tmp_path, monkeypatch):
    monkeypatch.setitem(shipped.SHIPPED_RUNS, "emoji", sr_runs["base"])
    monkeypatch.setitem(shipped.SHIPPED_RUNS, "emoji-sr", sr_runs["sr"])
    argv = ["sample", "--cascade", "-n", "1", "--stage-steps", "1", "1", "--no-progress"]
    assert main([*argv, "--out", str(tmp_path / "c")]) == 0
    assert Image.open(tmp_path / "c" / "000000.png").size == (16, 16)


def test_sr_run_trains_on_crops_and_upscales_whole_images(sr_runs, tmp_path, png, tiny_train_flags):
    out = tmp_path / "crop"
    argv = ["train", "--data", str(sr_runs["data"]), *tiny_train_flags, "--out", str(out)]
    argv += ["--image-size", "16", "--sr-from", "8", "--set", "sr.crop_size=8"]
    assert main(argv) == 0
    assert pixdiff.load(out).config["train"]["sr"]["crop_size"] == 8
    up = ["upscale", str(out), "--input", str(png(tmp_path / "s.png", 8)), "--steps", "1"]
    assert main([*up, "--out", str(tmp_path / "u"), "--no-progress"]) == 0
    assert Image.open(tmp_path / "u" / "000000.png").size == (16, 16)


def test_upscale_cli(sr_runs, tmp_path, png):
    low = png(tmp_path / "low.png", 8, "RGBA")
    argv = ["upscale", str(sr_runs["sr"]), "--input", str(low), "--steps", "2", "-n", "2"]
    with pytest.warns(UserWarning, match="converted RGBA to RGB"):
        assert main([*argv, "--out", str(tmp_path / "a"), "--no-progress", "--class", "cat"]) == 0
    assert Image.open(tmp_path / "a" / "000001.png").size == (16, 16)
    argv += ["--aug-level", "0.9", "--out", str(tmp_path / "b"), "--no-progress"]
    with pytest.warns(UserWarning, match="converted RGBA to RGB"):
        assert main([*argv, "--class", "cat"]) == 0
    a = np.asarray(Image.open(tmp_path / "a" / "000000.png"), dtype=np.int32)
    b = np.asarray(Image.open(tmp_path / "b" / "000000.png"), dtype=np.int32)
    assert np.abs(a - b).max() > 0


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["sample", "--cascade", "{sr}", "{base}"], "stage 1 ({sr}) is a super-resolution model"),
        (["sample", "--cascade", "{base}", "{base}"], "stage 2 ({base}) is not a super-res"),
        (
            ["sample", "--cascade", "{base}", "{sr}", "{sr}"],
            "stage 3 ({sr}) upsamples 8x8 images, but stage 2 ({sr}) makes 16x16 ones",
        ),
        (["sample", "{sr}"], "is a super-resolution model (8 -> 16): use `pixdiff upscale"),
        (["sample", "--cascade", "{base}", "{sr}", "--stage-steps", "1", "2", "3"], "1 value or 2"),
        (["sample", "--cascade", "{base}", "--aug-level", "0.1"], "this cascade has none"),
        (["sample", "{base}", "--aug-level", "0.1"], "--aug-level need(s) --cascade"),
        (["sample", "--cascade", "{base}", "{sr}", "--nfe", "4"], "cannot be used with --cascade"),
        (["sample", "--cascade", "{base}", "{sr}", "--aug-level", "2"], "time in [0, 1]"),
        (["sample", "--cascade", "{base}", "{sr}", "--prompt", "x"], "is text-conditional"),
        (["sample", "--cascade", "{base}", "{sr}", "--guidance", "3"], "pass --class or"),
        (["upscale", "{sr}", "--input", "{big}"], "big.png is 16x16, but {sr} takes 8x8"),
        (["upscale", "{base}", "--input", "{small}"], "{base} is not a super-resolution model"),
        (["edit", "{sr}", "--input", "{small}", "--strength", "0"], "use `pixdiff upscale`"),
        (["upscale", "{sr}", "--input", "{tmp}/nowhere.png"], "does not exist"),
        (["train", "--data", "{data}", "--out", "{tmp}/r", "--sr-from", "16"], "smaller than"),
        (
            [
                "train",
                "--data",
                "{data}",
                "--out",
                "{tmp}/r",
                "--sr-from",
                "8",
                "--set",
                "sr.crop_size=5",
            ],
            "multiple of the upsampling factor 16 / 8",
        ),
        (
            ["train", "--data", "{data}", "--out", "{tmp}/r", "--set", "sr.crop_size=8"],
            "sr.crop_size is for super-resolution runs",
        ),
        (
            ["train", "--data", "{data}", "--out", "{tmp}/r", "--preset", "unet-sr-small"],
            "--sr-from",
        ),
    ],
)
def test_bad_input_gives_one_line_errors(sr_runs, tmp_path, png, capsys, argv, message):
    paths = {**{k: str(v) for k, v in sr_runs.items()}, "tmp": str(tmp_path)}
    paths["big"] = str(png(tmp_path / "big.png", 16))
    paths["small"] = str(png(tmp_path / "small.png", 8))
    argv = [a.format(**paths) for a in argv]
    if argv[0] == "train":
        argv += ["--image-size", "16", "--no-progress"]
    else:
        argv += ["--out", str(tmp_path / "o"), "--steps", "1", "--no-progress"]
    assert main(argv) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    err = [line for line in lines if "loading images" not in line]  # the folder's progress bar
    assert len(err) == 1 and message.format(**paths) in err[0], err


def test_help_documents_every_new_flag():
    sub = next(a for a in build_parser()._actions if a.dest == "command")
    expected = {
        "sample": ["--cascade", "--stage-steps", "--stage-sampler", "--stage-guidance"]
        + ["--aug-level", "--save-stages"],
        "train": ["--sr-from"],
        "upscale": ["--input", "--aug-level", "--steps", "--sampler", "--out", "--class"],
        "edit": ["--input", "--strength", "--steps", "--sampler", "--prompt"],
        "inpaint": ["--input", "--mask", "--resample", "--steps", "--guidance"],
    }
    for command, flags in expected.items():
        parser = sub.choices[command]
        text = parser.format_help()
        for action in parser._actions:  # every flag has a help text
            assert action.help, (command, action.option_strings)
        assert all(flag in text for flag in flags), command
