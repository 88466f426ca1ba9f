"""Video runs end to end: a tiny clip run trains from the CLI, resumes bit-exactly, samples
GIF, MP4 and a frame grid; joint training's flag reaches the net; an image run starts a video
run; bad input is one line (docs/video.md)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from pixdiff import checkpoint
from pixdiff.cli.main import main
from pixdiff.conditioning import Cond
from pixdiff.config import DataConfig, ModelConfig, TrainConfig
from pixdiff.data.video_io import read_clip_file
from pixdiff.denoiser import Denoiser
from pixdiff.nets import build_net, preset
from pixdiff.schedule_registry import get_schedule
from pixdiff.training.trainer import net_config_for
from pixdiff.training.video_run import init_spatial, load_training_data

FRAMES = 4
TINY = [
    "--image-size", "32", "--batch-size", "4", "--no-progress",
    "--set", "run.sample_every=0", "--set", "run.log_every=1", "--set", "run.threads=1",
    "--set", "optim.warmup_steps=1", "--set", "model.overrides.model_channels=8",
]  # fmt: skip
CLIPS = ["--data", "fashion-clips", "--frames", str(FRAMES), "--set", "data.num_clips=8"]


@pytest.fixture(autouse=True)
def clip_cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("PIXDIFF_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))


def cli(capsys, *argv) -> tuple[int, str]:
    code = main([str(a) for a in argv])
    return code, capsys.readouterr().err


def one_line(err: str) -> str:
    lines = [ln for ln in err.splitlines() if ln.strip() and "%|" not in ln]
    lines = [ln for ln in lines if "warning" not in ln.lower()]
    assert len(lines) == 1, err
    return lines[0]


def weights_differ(a: Path, b: Path) -> list[str]:
    found = []
    for name in (checkpoint.MODEL, checkpoint.EMA, checkpoint.TRAIN_STATE):
        (x, meta_x), (y, meta_y) = (
            checkpoint.read_tensors(a / name),
            checkpoint.read_tensors(b / name),
        )
        assert sorted(x) == sorted(y) and meta_x.get("step") == meta_y.get("step")
        found += [f"{name}:{k}" for k in x if not torch.equal(x[k], y[k])]
    return found


@pytest.fixture(scope="module")
def video_runs(tmp_path_factory):
    """A 2-step text-to-video run with joint training (a), and the same run stopped after
    step 1 and resumed (b)."""
    root = tmp_path_factory.mktemp("video")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("PIXDIFF_CACHE", str(root / "cache"))
        common = [*CLIPS, "--preset", "video-unet-tiny", *TINY, "--set", "data.image_share=0.5"]
        assert main(["train", *common, "--steps", "2", "--out", str(root / "a")]) == 0
        assert main(["train", *common, "--steps", "1", "--out", str(root / "b")]) == 0
        assert main(["train", "--out", str(root / "b"), "--resume", "--steps", "2",
                     "--no-progress"]) == 0  # fmt: skip
    return root / "a", root / "b"


def test_a_video_run_resumes_bit_exactly(video_runs):
    a, b = video_runs
    assert weights_differ(a, b) == []
    config = checkpoint.read_json(a / checkpoint.CONFIG)
    assert config["net"]["num_frames"] == FRAMES and config["text_conditioned"]


def test_sample_writes_gif_mp4_and_a_frame_grid(video_runs, tmp_path, capsys):
    out = tmp_path / "out"
    code, err = cli(capsys, "sample", video_runs[0], "--prompt", "sneaker moving left", "-n", "2",
                    "--steps", "3", "--out", out, "--no-progress", "--guidance", "3",
                    "--negative-prompt", "bag fading in", "--cfg-rescale", "0.7")  # fmt: skip
    assert code == 0, err
    names = sorted(p.name for p in out.iterdir())
    assert names == ["000000.gif", "000000.mp4", "000001.gif", "000001.mp4", "grid.png",
                     "settings.json"]  # fmt: skip
    assert read_clip_file(out / "000000.gif").shape == (FRAMES, 3, 32, 32)
    assert read_clip_file(out / "000001.mp4").shape == (FRAMES, 3, 32, 32)
    grid = Image.open(out / "grid.png")
    assert grid.height < grid.width  # one row of 4 frames per clip, 2 clips
    shorter = tmp_path / "short"
    assert cli(capsys, "sample", video_runs[0], "-n", "1", "--frames", "2", "--steps", "2",
               "--out", shorter, "--no-progress")[0] == 0  # fmt: skip
    assert read_clip_file(shorter / "000000.gif").shape[0] == 2


def test_generate_returns_clips(video_runs):
    import pixdiff

    model = pixdiff.load(video_runs[0])
    x = model.generate(prompts="sneaker moving left", n=2, steps=2, output="tensor")
    assert x.shape == (2, FRAMES, 1, 32, 32)
    clips = model.generate(prompts=["bag moving up"], steps=2, frames=3)
    assert len(clips) == 1 and len(clips[0]) == 3 and clips[0][0].size == (32, 32)


def test_frames_beyond_training_is_one_line(video_runs, tmp_path, capsys):
    code, err = cli(capsys, "sample", video_runs[0], "--frames", "5", "--out", tmp_path / "o",
                    "--no-progress")  # fmt: skip
    line = one_line(err)
    assert code != 0 and f"trained on {FRAMES}-frame clips" in line and "--frames 5" in line


def test_clip_folder_with_a_bad_file_is_one_line(tmp_path, capsys):
    folder = tmp_path / "clips"
    folder.mkdir()
    frames = [Image.fromarray(np.full((32, 32, 3), 40 * i, np.uint8)) for i in range(5)]
    frames[0].save(folder / "good.gif", save_all=True, append_images=frames[1:], duration=100)
    (folder / "broken.gif").write_bytes(b"GIF89a not really")
    code, err = cli(capsys, "train", "--data", folder, "--frames", FRAMES, "--preset",
                    "video-unet-tiny", "--out", tmp_path / "run", *TINY, "--steps", 1)  # fmt: skip
    line = one_line(err)
    assert code != 0 and "broken.gif" in line


def test_synthetic_clips_at_the_image_default_size_is_one_line_naming_the_flag(tmp_path, capsys):
    code, err = cli(capsys, "train", "--data", "fashion-clips", "--frames", FRAMES, "--preset",
                    "video-unet-tiny", "--out", tmp_path / "run", "--steps", 1)  # fmt: skip
    line = one_line(err)
    assert code != 0 and "--image-size 28" in line and "pass --image-size 32" in line
    assert not (tmp_path / "run").exists()


def test_joint_training_flag_makes_frames_independent():
    """A flagged clip's frame depends on no other frame (so neither does its loss); an
    unflagged clip's does, once the temporal layers are not zero."""
    torch.manual_seed(0)
    net = build_net(preset("video-unet-tiny", model_channels=8, num_frames=FRAMES)).eval()
    with torch.no_grad():
        for p in net.parameters():  # the zero-initialised outputs too
            p.add_(0.1 * torch.randn_like(p))
    denoiser = Denoiser(net, get_schedule("linear"), "eps")
    x = torch.randn(2, FRAMES, 3, 32, 32)
    moved = x.clone()
    moved[:, 1:] += torch.randn_like(moved[:, 1:])
    flags = Cond(independent_frames=torch.tensor([True, False]))
    with torch.no_grad():
        before, after = denoiser(x, 0.5, flags).x0, denoiser(moved, 0.5, flags).x0
    torch.testing.assert_close(before[0, 0], after[0, 0], rtol=0, atol=1e-6)
    assert (before[1, 0] - after[1, 0]).abs().max() > 1e-3


def test_image_nets_refuse_the_flag():
    net = build_net(preset("unet-tiny"))
    with pytest.raises(ValueError, match="independent_frames"):
        net(torch.randn(1, 3, 32, 32), torch.zeros(1), Cond(independent_frames=torch.ones(1) > 0))


def test_learned_variance_splits_channels_of_clips():
    net = build_net(preset("video-unet-tiny", model_channels=8, num_frames=2, learn_sigma=True))
    out = Denoiser(net, get_schedule("linear"), "eps", learn_sigma=True)(
        torch.randn(1, 2, 3, 32, 32), 0.5
    )
    assert out.x0.shape == out.var_output.shape == (1, 2, 3, 32, 32)


def test_init_from_an_image_run_is_the_image_model_per_frame(tmp_path, capsys):
    folder = tmp_path / "frames"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(4):
        Image.fromarray(rng.integers(0, 256, (32, 32), dtype=np.uint8)).save(folder / f"{i}.png")
    image_flags = ["--preset", "unet-fashion", "--set", "data.channels=1", "--set",
                   "data.conditional=false"]  # fmt: skip
    code, err = cli(capsys, "train", "--data", folder, "--out", tmp_path / "img", *TINY,
                    *image_flags, "--steps", "1")  # fmt: skip
    assert code == 0, err
    code, err = cli(capsys, "train", *CLIPS, "--preset", "video-unet-tiny", "--init-from",
                    tmp_path / "img", "--set", "data.conditional=false", "--out",
                    tmp_path / "vid", *TINY, "--steps", "1")  # fmt: skip
    assert code == 0, err
    cfg = TrainConfig(
        data=DataConfig(name="fashion-clips", image_size=32, frames=FRAMES, num_clips=8,
                        conditional=False),
        model=ModelConfig(preset="video-unet-tiny", init_from=str(tmp_path / "img")),
    )  # fmt: skip
    net = build_net(net_config_for(cfg, load_training_data(cfg))).eval()
    init_spatial(net, cfg)
    image = checkpoint.load(tmp_path / "img")
    x, c = torch.randn(2, FRAMES, 1, 32, 32), torch.tensor([10.0, 500.0])
    with torch.no_grad():
        video_out = net(x, c)
        image_out = image.net(x.flatten(0, 1), c.repeat_interleave(FRAMES))
    torch.testing.assert_close(video_out.flatten(0, 1), image_out, rtol=0, atol=1e-5)
    assert dataclasses.asdict(net.config)["model_channels"] == image.net.config.model_channels
