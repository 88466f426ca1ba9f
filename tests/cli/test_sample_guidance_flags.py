"""`pixdiff sample` with the guidance flags on tiny runs, and its one-line bad-input errors."""

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pixdiff.cli.main import build_parser, main

CLASSES = ["cat", "dog", "owl"]
TINY = [
    "--preset", "unet-tiny", "--batch-size", "8", "--image-size", "16", "--steps", "2",
    "--no-progress", "--set", "run.sample_every=0", "--set", "run.threads=1",
    "--set", "optim.warmup_steps=2", "--set", "model.overrides.attention_resolutions=[8]",
]  # fmt: skip


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    """A class-conditional and an unconditional 2-step run, and a 3-step classifier, all on
    24 random 16x16 RGB images in 3 classes."""
    root = tmp_path_factory.mktemp("guidance")
    data = root / "imgs"
    data.mkdir()
    rng = np.random.default_rng(0)
    with (data / "metadata.jsonl").open("w") as f:
        for i in range(24):
            Image.fromarray(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)).save(
                data / f"{i}.png"
            )
            f.write(json.dumps({"file_name": f"{i}.png", "label": CLASSES[i % 3]}) + "\n")
    out = {"cond": root / "cond", "uncond": root / "uncond", "clf": root / "clf"}
    assert main(["train", "--data", str(data), "--out", str(out["cond"]), *TINY]) == 0
    uncond = ["--set", "data.conditional=false"]
    assert main(["train", "--data", str(data), "--out", str(out["uncond"]), *TINY, *uncond]) == 0
    clf = ["train-classifier", "--data", str(data), "--image-size", "16", "--out", str(out["clf"])]
    assert main([*clf, "--steps", "3", "--batch-size", "8", "--no-progress"]) == 0
    return out


def sample(run: Path, out: Path, *flags: str) -> int:
    return main(
        ["sample", str(run), "-n", "4", "--steps", "3", "--out", str(out), "--no-progress", *flags]
    )


def pngs(out: Path) -> list[str]:
    return sorted(p.name for p in out.glob("0*.png"))


def test_every_guidance_flag_together_writes_pngs(runs, tmp_path):
    flags = [
        "--class", "dog", "--guidance", "3", "--negative-class", "cat",
        "--guidance-interval", "0.2", "0.9", "--cfg-rescale", "0.7", "--threshold", "dynamic",
        "--threshold-percentile", "0.99", "--classifier", str(runs["clf"]),
        "--classifier-scale", "2",
    ]  # fmt: skip
    assert sample(runs["cond"], tmp_path / "a", *flags) == 0
    assert pngs(tmp_path / "a") == [f"{i:06d}.png" for i in range(4)]
    assert Image.open(tmp_path / "a" / "000000.png").size == (16, 16)


def test_flags_change_the_images(runs, tmp_path):
    def image(name, *flags):
        assert (
            sample(runs["cond"], tmp_path / name, "--class", "owl", "--guidance", "4", *flags) == 0
        )
        return np.asarray(Image.open(tmp_path / name / "000000.png"), dtype=np.int32)

    plain = image("plain")
    assert np.abs(image("neg", "--negative-class", "dog") - plain).max() > 0
    assert np.abs(image("static", "--threshold", "static") - plain).max() > 0
    # outside the whole run's grid: the interval leaves only the conditional model
    assert (
        np.abs(
            image("late", "--guidance-interval", "0", "0") - image("w1g", "--guidance", "1")
        ).max()
        == 0
    )


def test_negative_class_alone_steers_away(runs, tmp_path):
    assert sample(runs["cond"], tmp_path / "n", "--negative-class", "owl", "--guidance", "2") == 0
    assert len(pngs(tmp_path / "n")) == 4


def test_classifier_guides_an_unconditional_model(runs, tmp_path):
    flags = ["--class", "owl", "--classifier", str(runs["clf"]), "--threshold", "static"]
    assert sample(runs["uncond"], tmp_path / "u", *flags) == 0
    assert len(pngs(tmp_path / "u")) == 4


@pytest.mark.parametrize(
    ("which", "flags", "message"),
    [
        ("cond", ["--class", "dog", "--negative-class", "zebra"], "unknown class 'zebra'"),
        ("cond", ["--class", "dog", "--guidance-interval", "0.9", "0.1"], "lo <= hi"),
        ("cond", ["--class", "dog", "--cfg-rescale", "-0.5"], "phi must lie in [0, 1]"),
        ("cond", ["--threshold", "dynamic", "--threshold-percentile", "1.5"], "(0, 1]"),
        ("cond", ["--threshold", "dynamic", "--threshold-percentile", "0"], "(0, 1]"),
        ("cond", ["--threshold-percentile", "0.9"], "needs --threshold dynamic"),
        ("cond", ["--classifier-scale", "2"], "needs --classifier"),
        ("cond", ["--cfg-rescale", "0.7"], "pass --class"),
        ("uncond", ["--guidance", "3"], "needs a class-conditional model"),
        ("uncond", ["--negative-class", "cat"], "needs a class-conditional model"),
        ("uncond", ["--cfg-rescale", "0.5"], "need(s) a class-conditional model"),
        ("uncond", ["--guidance-interval", "0.1", "0.5"], "need(s) a class-conditional model"),
        ("uncond", ["--class", "owl"], "add --classifier"),
        ("uncond", ["--classifier", "{clf}"], "steers towards a class"),
        ("cond", ["--class", "dog", "--classifier", "/nonexistent/clf"], "does not exist"),
    ],
)
def test_bad_input_gives_one_line_errors(runs, tmp_path, capsys, which, flags, message):
    flags = [f.format(clf=runs["clf"]) for f in flags]
    assert sample(runs[which], tmp_path / "x", *flags) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1, err


def test_unknown_negative_class_lists_the_valid_ones(runs, tmp_path, capsys):
    assert sample(runs["cond"], tmp_path / "x", "--negative-class", "zebra") == 2
    err = capsys.readouterr().err
    assert all(name in err for name in CLASSES)


def test_sample_help_documents_the_guidance_flags():
    sub = next(a for a in build_parser()._actions if a.dest == "command")
    text = sub.choices["sample"].format_help()
    for flag in (
        "--negative-class", "--guidance-interval", "--cfg-rescale", "--threshold",
        "--threshold-percentile", "--classifier", "--classifier-scale",
    ):  # fmt: skip
        assert flag in text
