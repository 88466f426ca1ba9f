"""Spatial control end to end on tiny runs (issue #18): train a model with its map concatenated
(``pixdiff train --control``), a ControlNet adapter for a frozen base (``pixdiff
train-control``), sample both from the CLI and the API, round-trip the adapter through save and
load, refuse a different base, answer each bad input with one line, and run bench/control.py."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import pixdiff
from pixdiff.adapters import weights_sha256
from pixdiff.checkpoint import read_tensors
from pixdiff.cli.main import main
from pixdiff.pipelines.control import fit_photo

ROOT = Path(__file__).resolve().parents[2]
TINY = [
    "--preset", "unet-tiny", "--batch-size", "8", "--image-size", "16", "--no-progress",
    "--set", "run.threads=1", "--set", "optim.warmup_steps=1", "--set", "optim.lr=1e-3",
    "--set", "model.overrides.attention_resolutions=[8]", "--set", "text.width=16",
    "--set", "text.layers=1", "--set", "text.heads=2", "--set", "text.max_length=24",
    "--set", "run.sample_every=0",
]  # fmt: skip
ADAPTER = [
    "--batch-size", "8", "--no-progress", "--set", "run.threads=1", "--set", "run.sample_every=0",
    "--set", "optim.warmup_steps=1", "--set", "optim.lr=1e-3",
]  # fmt: skip


def train(folder: Path, out: Path, *extra: str) -> None:
    assert main(["train", "--data", str(folder), "--out", str(out), *TINY, *extra]) == 0


def train_control(base: Path, out: Path, *extra: str) -> int:
    return main(["train-control", str(base), "--out", str(out), *ADAPTER, *extra])


@pytest.fixture(scope="module")
def runs(captioned_folder, tmp_path_factory) -> dict[str, Path]:
    """Text-to-image runs on 16x16 captioned images: a base, a model with edge maps
    concatenated (its sample grid drawn at step 2), one without control dropout, a second
    base, and a sketch adapter for the first base."""
    root = tmp_path_factory.mktemp("control")
    paths = {k: root / k for k in ("base", "concat", "undropped", "other", "adapter")}
    train(captioned_folder, paths["base"], "--steps", "2")
    train(captioned_folder, paths["concat"], "--steps", "2", "--control", "edges",
          "--set", "run.sample_every=2")  # fmt: skip
    train(captioned_folder, paths["undropped"], "--steps", "1", "--control", "mask",
          "--set", "control.dropout=0")  # fmt: skip
    train(captioned_folder, paths["other"], "--steps", "1", "--seed", "1")
    assert train_control(paths["base"], paths["adapter"], "--control", "sketch", "--steps", "2",
                         "--set", "run.sample_every=2") == 0  # fmt: skip
    paths["data"] = captioned_folder
    return paths


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("inputs")
    rng = np.random.default_rng(3)
    paths = {"map": root / "map.png", "map2": root / "map2.png", "big": root / "big.png",
             "photo": root / "photo.png", "lab": root / "lab.tif"}  # fmt: skip
    Image.fromarray(((rng.random((16, 16)) > 0.8) * 255).astype(np.uint8)).save(paths["map"])
    Image.fromarray(((rng.random((16, 16)) > 0.5) * 255).astype(np.uint8)).save(paths["map2"])
    Image.fromarray(np.zeros((32, 32), dtype=np.uint8)).save(paths["big"])
    Image.fromarray(rng.integers(0, 256, (40, 30, 3), dtype=np.uint8)).save(paths["photo"])
    Image.new("LAB", (16, 16)).save(paths["lab"])
    return paths


def sample(run: Path, out: Path, *flags) -> int:
    argv = ["sample", str(run), "-n", "2", "--steps", "2", "--out", str(out), "--no-progress"]
    return main([*argv, *map(str, flags)])


def error(capsys, code: int) -> str:
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.strip() and "warning:" not in ln]
    assert code == 2 and len(lines) == 1, err
    return lines[0]


def test_a_concatenation_run_takes_its_map_from_the_cli_and_the_api(runs, images, tmp_path):
    config = json.loads((runs["concat"] / "config.json").read_text())
    assert config["net"]["control_channels"] == 1
    assert config["train"]["control"] == {"kind": "edges", "dropout": 0.1, "layout_cells": 8}
    assert (runs["concat"] / "samples" / "step_0000002.png").exists()  # maps, samples, images
    flags = ["--prompt", "red apple"]
    assert sample(runs["concat"], tmp_path / "a", *flags, "--control-image", images["map"]) == 0
    assert sample(runs["concat"], tmp_path / "b", *flags, "--control-from", images["photo"],
                  "--guidance", "3", "--control-guidance", "2") == 0  # fmt: skip
    assert len(list((tmp_path / "b").glob("0*.png"))) == 2
    model = pixdiff.load(runs["concat"])

    def draw(**control):
        return model.generate(prompts="red apple", n=2, steps=2, output="tensor", **control)

    one, two = draw(control=images["map"]), draw(control=images["map2"])
    assert one.shape == (2, 3, 16, 16) and not torch.allclose(one, two)
    assert torch.equal(one, draw(control=Image.open(images["map"])))
    guided = draw(control=images["map"], control_guidance=3.0)
    assert not torch.allclose(one, guided)
    assert torch.equal(draw(control=images["map"], control_guidance=1.0), one)  # s_I = 1: none


def test_the_adapter_run_holds_the_adapter_alone_and_round_trips(runs):
    config = json.loads((runs["adapter"] / "config.json").read_text())
    section = config["adapter"]
    assert section["base"] == str(runs["base"].resolve()) and section["channels"] == 1
    assert section["control"]["kind"] == "sketch"
    base = pixdiff.load(runs["base"])
    assert section["base_sha256"] == weights_sha256(base.net)
    saved, _ = read_tensors(runs["adapter"] / "ema.safetensors")
    assert not any(k.startswith("net.") for k in saved) and "zero_middle.weight" in saved
    loaded = pixdiff.load(runs["adapter"])  # brings its base
    assert all(torch.equal(v, loaded.net.adapter.state_dict()[k]) for k, v in saved.items())
    assert weights_sha256(loaded.net.net) == section["base_sha256"]
    beside = pixdiff.load(runs["base"], adapter=runs["adapter"])
    kw = {"prompts": "red apple", "n": 2, "steps": 2, "output": "tensor"}
    photo = torch.rand(3, 16, 16) * 2 - 1
    a = loaded.generate(control_from=photo, **kw)
    assert torch.equal(a, beside.generate(control_from=photo, **kw))
    off = loaded.generate(control_from=photo, control_scale=0.0, **kw)
    assert torch.equal(off, base.generate(**kw))  # strength 0: the base exactly
    assert (runs["adapter"] / "samples" / "step_0000002.png").exists()


def test_an_adapter_refuses_a_different_base_naming_both(runs, images, tmp_path, capsys):
    code = sample(runs["other"], tmp_path / "x", "--adapter", runs["adapter"],
                  "--control-image", images["map"])  # fmt: skip
    line = error(capsys, code)
    assert f"adapter {runs['adapter']} was trained on the base {runs['base'].resolve()}" in line
    assert f"not on {runs['other']}" in line
    assert sample(runs["base"], tmp_path / "y", "--adapter", runs["adapter"], "--prompt", "red",
                  "--control-image", images["map"], "--control-scale", "0.5") == 0  # fmt: skip
    assert sample(runs["adapter"], tmp_path / "z", "--prompt", "red", "--control-from",
                  images["photo"], "--control-guidance", "2", "--guidance", "2") == 0  # fmt: skip


def test_train_control_resumes_bit_exactly(runs, tmp_path):
    flags = ("--control", "edges", "--set", "run.checkpoint_every=1")
    assert train_control(runs["base"], tmp_path / "full", *flags, "--steps", "2") == 0
    assert train_control(runs["base"], tmp_path / "cut", *flags, "--steps", "1") == 0
    resume = ["--resume", "--steps", "2"]
    assert train_control(runs["base"], tmp_path / "cut", *flags, *resume) == 0
    for name in ("model.safetensors", "ema.safetensors"):
        a, _ = read_tensors(tmp_path / "full" / name)
        b, _ = read_tensors(tmp_path / "cut" / name)
        assert all(torch.equal(a[k], b[k]) for k in a), name


def test_a_stopped_train_control_keeps_its_checkpoint(runs, tmp_path, monkeypatch):
    """Killed after its second step (checkpoint every step), the new adapter run stays on disk
    and resumes; before, the run directory's rollback deleted it."""
    from pixdiff.training.control_adapter import AdapterTraining

    real = AdapterTraining.train_step

    def step_then_stop(self, batch):
        if self.state.step == 2:
            raise KeyboardInterrupt("killed")
        return real(self, batch)

    monkeypatch.setattr(AdapterTraining, "train_step", step_then_stop)
    flags = ("--control", "edges", "--set", "run.checkpoint_every=1")
    assert train_control(runs["base"], tmp_path / "cut", *flags, "--steps", "4") == 130
    assert (tmp_path / "cut" / "train_state.safetensors").is_file()
    monkeypatch.setattr(AdapterTraining, "train_step", real)
    resume = ["--resume", "--steps", "3"]
    assert train_control(runs["base"], tmp_path / "cut", *flags, *resume) == 0


@pytest.mark.parametrize(
    ("which", "flags", "expected"),
    [
        ("concat", ["--control-image", "big"], "big.png is 32x32, but this model's control input "
         "takes 16x16 images"),
        ("concat", ["--control-image", "lab"], "has mode LAB, which cannot be converted to L"),
        ("undropped", ["--control-image", "map", "--control-guidance", "2"],
         "trained without control dropout (control.dropout=0)"),
        ("undropped", [], "trained without control dropout: give --control-image MAP"),
        ("base", ["--control-image", "map"], "this model takes no control map"),
        ("concat", ["--control-image", "map", "--control-scale", "2"],
         "--control-scale is the strength of a ControlNet adapter"),
    ],
)  # fmt: skip
def test_bad_control_input_is_one_line(runs, images, tmp_path, capsys, which, flags, expected):
    flags = [images.get(f, f) for f in flags]
    line = error(capsys, sample(runs[which], tmp_path / "o", "--prompt", "cat", *flags))
    assert expected in line


def test_a_photo_that_cannot_be_converted_is_one_line():
    """Pillow converts LAB to RGB but not to grey: a grey model's photo is refused."""
    with pytest.raises(ValueError, match="a photo of mode LAB cannot be converted to L"):
        fit_photo(Image.new("LAB", (8, 8)), 8, 1, alpha=False)


def test_a_missing_map_in_a_folder_dataset_names_the_file(runs, tmp_path, capsys):
    data = tmp_path / "data"
    shutil.copytree(runs["data"], data)
    maps = tmp_path / "maps"
    maps.mkdir()
    for png in sorted(data.glob("*.png"))[1:]:  # every map but the first image's
        Image.fromarray(np.zeros((16, 16), dtype=np.uint8)).save(maps / png.name)
    missing = sorted(data.glob("*.png"))[0]
    code = main(["train", "--data", str(data), "--out", str(tmp_path / "run"), *TINY,
                 "--steps", "1", "--control", str(maps)])  # fmt: skip
    assert f"no control map for image {missing}" in error(capsys, code)
    assert not (tmp_path / "run").exists()


def test_bench_control_runs_on_tiny_runs(runs, tmp_path):
    out = tmp_path / "bench"
    argv = [
        sys.executable, str(ROOT / "bench" / "control.py"), "--base", str(runs["base"]),
        "--concat", str(runs["concat"]), "--adapter", str(runs["adapter"]), "--n", "4",
        "--grid-n", "2", "--steps", "2", "--map-scales", "1", "2", "--text-scales", "1", "3",
        "--threads", "1", "--no-progress", "--out", str(out),
    ]  # fmt: skip
    done = subprocess.run(argv, capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert done.returncode == 0, done.stderr
    report = json.loads((out / "results.json").read_text())
    results = report["results"]
    assert 0 <= results["concat"]["edge_f1 (edges)"] <= 1
    assert 0 <= results["base (no map)"]["edge_f1 (sketch)"] <= 1
    assert results["adapter"]["images_share"] == 1.0  # 2 steps of 8 against the base's 2 of 8
    assert set(report["two_scales"]["concat"]) == {"1,1", "1,3", "2,1", "2,3"}
    assert (out / "concat_scales.png").exists() and "| s_I \\ s_T |" in (
        out / "results.md"
    ).read_text()
