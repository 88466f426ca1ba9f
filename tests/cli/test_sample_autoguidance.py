"""`pixdiff sample --guide-with RUN` (autoguidance, Karras et al. 2024) on tiny runs: the run
as its own guide is plain sampling, another run steers, the options compose, the editing
commands and ``pixdiff.load(...).generate(guide_with=...)`` take it, and a guide that does not
match is named in one line."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import pixdiff
from pixdiff.cli.main import main

pytestmark = pytest.mark.usefixtures("one_thread")
TINY = [
    "--preset", "unet-tiny", "--batch-size", "8", "--steps", "2", "--no-progress",
    "--set", "run.sample_every=0", "--set", "run.threads=1", "--set", "optim.warmup_steps=2",
]  # fmt: skip


@pytest.fixture(scope="module")
def runs(tmp_path_factory, image_folder) -> dict[str, Path]:
    """Tiny runs on random 16x16 images in classes cat/dog/owl: two class-conditional ones
    (seeds 0 and 1), two unconditional ones, and guides that do not match the first: another
    schedule, another image size, other class names."""
    root = tmp_path_factory.mktemp("autoguidance")
    data = image_folder(root / "imgs", 24, 16, ["cat", "dog", "owl"])
    other = image_folder(root / "other", 24, 16, ["ant", "bee", "cow"])
    at16 = ["--image-size", "16", "--set", "model.overrides.attention_resolutions=[8]"]
    at8 = ["--image-size", "8", "--set", "model.overrides.attention_resolutions=[4]"]
    plan = {
        "cond": (data, [*at16]),
        "cond2": (data, [*at16, "--seed", "1"]),
        "uncond": (data, [*at16, "--set", "data.conditional=false"]),
        "uncond2": (data, [*at16, "--set", "data.conditional=false", "--seed", "1"]),
        "cosine": (data, [*at16, "--formulation", "v-cosine"]),
        "small": (data, at8),
        "classes": (other, at16),
    }
    out = {}
    for name, (images, extra) in plan.items():
        out[name] = root / name
        assert main(["train", "--data", str(images), "--out", str(out[name]), *TINY, *extra]) == 0
    return out


def sample(run: Path, out: Path, *flags: str) -> int:
    args = ["sample", str(run), "-n", "3", "--steps", "3", "--out", str(out), "--no-progress"]
    return main([*args, *flags])


def images(out: Path) -> np.ndarray:
    return np.stack([np.asarray(Image.open(p), dtype=np.int32) for p in sorted(out.glob("0*.png"))])


def test_the_run_as_its_own_guide_is_plain_conditional_sampling(runs, tmp_path):
    guided = ["--class", "dog", "--guide-with", str(runs["cond"]), "--guidance", "3"]
    assert sample(runs["cond"], tmp_path / "self", *guided) == 0
    assert sample(runs["cond"], tmp_path / "plain", "--class", "dog", "--guidance", "1") == 0
    assert np.array_equal(images(tmp_path / "self"), images(tmp_path / "plain"))
    manifest = json.loads((tmp_path / "self" / "settings.json").read_text())
    assert manifest["guidance"] == 3 and manifest["flags"]["guide_with"] == str(runs["cond"])


def test_an_unconditional_model_is_guided_by_another_run(runs, tmp_path):
    assert sample(runs["uncond"], tmp_path / "plain") == 0
    own = ["--guide-with", str(runs["uncond"]), "--guidance", "2"]
    assert sample(runs["uncond"], tmp_path / "self", *own) == 0
    assert np.array_equal(images(tmp_path / "self"), images(tmp_path / "plain"))
    other = ["--guide-with", str(runs["uncond2"]), "--guidance", "2"]
    assert sample(runs["uncond"], tmp_path / "other", *other) == 0
    assert np.abs(images(tmp_path / "other") - images(tmp_path / "plain")).max() > 0


def test_autoguidance_composes_with_the_guidance_options(runs, tmp_path):
    flags = [
        "--class", "owl", "--guide-with", str(runs["cond2"]), "--guidance", "2.5",
        "--guidance-interval", "0.2", "0.9", "--cfg-rescale", "0.7", "--threshold", "dynamic",
        "--parallel", "picard",
    ]  # fmt: skip
    assert sample(runs["cond"], tmp_path / "all", *flags) == 0
    assert images(tmp_path / "all").shape == (3, 16, 16, 3)


def test_the_editing_commands_take_a_guide(runs, tmp_path):
    Image.fromarray(np.full((16, 16, 3), 128, dtype=np.uint8)).save(tmp_path / "in.png")
    args = ["edit", str(runs["cond"]), "--input", str(tmp_path / "in.png"), "--strength", "0.6"]
    extra = ["--class", "cat", "--guide-with", str(runs["cond2"]), "--steps", "4"]
    assert main([*args, *extra, "--out", str(tmp_path / "e"), "--no-progress"]) == 0
    assert len(list((tmp_path / "e").glob("0*.png"))) == 1


@pytest.mark.parametrize(
    ("guide", "message"),
    [
        ("small", "its image shape (3, 8, 8) does not match the model's (3, 16, 16)"),
        ("cosine", "its schedule {'kind': 'cosine'} does not match the model's {'kind': 'lin"),
        ("uncond", "its conditioning unconditional does not match the model's class-cond"),
        ("classes", "its classes ['ant', 'bee', 'cow'] does not match the model's ['cat'"),
        ("/nonexistent/run", "does not exist"),
    ],
)
def test_a_guide_that_does_not_match_gives_one_line(runs, tmp_path, capsys, guide, message):
    path = str(runs.get(guide, guide))
    assert sample(runs["cond"], tmp_path / "x", "--class", "dog", "--guide-with", path) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1, err


def test_a_negative_class_with_a_guide_gives_one_line(runs, tmp_path, capsys):
    flags = ["--negative-class", "cat", "--guide-with", str(runs["cond2"])]
    assert sample(runs["cond"], tmp_path / "x", *flags) == 2
    err = capsys.readouterr().err.strip()
    assert "give one or the other" in err and len(err.splitlines()) == 1, err


def test_generate_takes_a_guide_by_path_or_as_a_model(runs):
    model = pixdiff.load(runs["cond"])
    kw = {"classes": "owl", "n": 2, "steps": 3, "output": "tensor", "guidance": 3.0}
    by_path = model.generate(guide_with=runs["cond2"], **kw)
    by_model = model.generate(guide_with=pixdiff.load(runs["cond2"]), **kw)
    assert torch.equal(by_path, by_model)
    assert torch.equal(
        model.generate(guide_with=model, **kw), model.generate(**{**kw, "guidance": 1.0})
    )
    assert (by_path - model.generate(**{**kw, "guidance": 1.0})).abs().max() > 0
