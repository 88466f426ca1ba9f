"""``pixdiff export`` / ``import`` from the command line, and ``pixdiff sample`` of a diffusers
folder: what is written, and one line for each mistake."""

from __future__ import annotations

import pytest

from pixdiff.cli.main import main

pytest.importorskip("diffusers", reason="diffusers is the optional interop extra")


@pytest.fixture(autouse=True, scope="module")
def _one_thread(one_thread):
    """Single-threaded: the sampling here is tiny."""


def test_export_then_sample_the_diffusers_folder(tmp_path, capsys):
    folder = tmp_path / "fashion-diffusers"
    assert main(["export", "fashion", "--to", "diffusers", str(folder)]) == 0
    assert f"wrote {folder} (diffusers UNet2DModel)" in capsys.readouterr().out
    written = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())
    assert written == [
        "README.md", "model_index.json", "pixdiff.json", "scheduler/scheduler_config.json",
        "unet/config.json", "unet/diffusion_pytorch_model.safetensors",
    ]  # fmt: skip
    out = tmp_path / "samples"
    args = ["sample", str(folder), "-n", "2", "--steps", "2", "--class", "sneaker"]
    assert main([*args, "--out", str(out), "--no-progress"]) == 0
    assert len(list(out.glob("0*.png"))) == 2
    assert main(["export", "fashion", "--to", "diffusers", str(folder)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.endswith("exists and is not empty; export into a new folder")
    assert len(err.splitlines()) == 1


def test_import_of_a_folder_that_is_no_diffusers_model(tmp_path, capsys):
    assert main(["import", str(tmp_path), "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err.strip()
    assert err == (
        f"pixdiff import: error: {tmp_path} is not a diffusers model folder (no "
        "model_index.json, unet/config.json, or config.json naming a diffusers class)"
    )
