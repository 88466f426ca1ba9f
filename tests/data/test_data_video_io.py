"""Clips to GIF, MP4 and a grid of frames, and back; without imageio, one line and the GIF."""

import importlib.util
import sys
import warnings

import pytest
import torch
from PIL import Image, ImageSequence

from pixdiff.data.image_set import to_model_space
from pixdiff.data.video_io import (
    VideoBackendMissing,
    read_clip_file,
    save_clip,
    write_frame_grid,
    write_gif,
    write_mp4,
)

HAVE_IMAGEIO = all(importlib.util.find_spec(m) for m in ("imageio", "imageio_ffmpeg"))


def colour_clip(frames: int = 6, size: int = 16) -> torch.Tensor:
    """(F, 3, size, size) in [-1, 1]: a red square sliding right over blue, a few colours only,
    with two identical frames in the middle (which GIF encoders merge)."""
    clip = torch.zeros(frames, 3, size, size, dtype=torch.uint8)
    clip[:, 2] = 160
    for k in range(frames):
        x = min(k, frames // 2) * 2
        clip[k, :, 4:10, x : x + 6] = torch.tensor([220, 30, 30]).view(3, 1, 1)
    return to_model_space(clip)


def smooth_clip(frames: int = 8, size: int = 32) -> torch.Tensor:
    """(F, 3, size, size): smooth gradients, drifting; what a lossy codec keeps well."""
    ys, xs = torch.meshgrid(torch.linspace(-1, 1, size), torch.linspace(-1, 1, size), indexing="ij")
    t = torch.linspace(0, 1, frames).view(-1, 1, 1)
    channels = [torch.sin(2 * xs + 3 * t), torch.cos(2 * ys - 2 * t), xs * ys + 0 * t]
    return torch.stack(channels, 1).clamp(-1, 1) * 0.8


def test_gif_round_trip_is_exact(tmp_path):
    clip = colour_clip()
    path = write_gif(clip, tmp_path / "clip.gif", fps=10)
    with Image.open(path) as gif:
        assert gif.info["loop"] == 0  # forever
        assert [f.info["duration"] for f in ImageSequence.Iterator(gif)][0] == 100
    back = read_clip_file(path)
    assert back.shape == clip.shape
    assert torch.equal(back, clip), "few colours: the palette holds them exactly"


def test_grey_gif_round_trip_keeps_all_256_levels(tmp_path):
    levels = torch.arange(256, dtype=torch.uint8).view(1, 1, 16, 16)
    clip = to_model_space(torch.cat([levels.roll(k) for k in range(0, 64, 16)]))
    back = read_clip_file(write_gif(clip, tmp_path / "grey.gif", fps=4))
    assert torch.equal(back, clip.expand(-1, 3, -1, -1))


def test_a_still_clip_keeps_its_frames(tmp_path):
    """Pillow merges identical frames into one; the recorded frame duration restores them."""
    clip = torch.full((5, 3, 8, 8), 0.5)
    with Image.open(write_gif(clip, tmp_path / "still.gif", fps=8)) as gif:
        assert gif.n_frames == 1
    assert read_clip_file(tmp_path / "still.gif").shape == (5, 3, 8, 8)


def test_a_foreign_gif_is_expanded_by_its_shortest_frame(tmp_path):
    a, b = Image.new("RGB", (4, 4), "red"), Image.new("RGB", (4, 4), "blue")
    a.save(tmp_path / "x.gif", save_all=True, append_images=[a, a, b], duration=100, loop=0)
    back = read_clip_file(tmp_path / "x.gif")
    assert back.shape[0] == 4 and (back[:3, 0] == 1).all() and (back[3, 2] == 1).all()
    assert read_clip_file(tmp_path / "x.gif", max_frames=2).shape[0] == 2


def test_frame_grid_has_one_row_per_clip(tmp_path):
    clips = torch.stack([colour_clip(), -colour_clip()])  # (2, 6, 3, 16, 16)
    path = write_frame_grid(clips, tmp_path / "grid.png", scale=1)
    with Image.open(path) as grid:
        assert grid.size == (6 * 18 + 2, 2 * 18 + 2)  # 2 px of padding around each frame
    with pytest.raises(ValueError, match="grid of frames needs"):
        write_frame_grid(clips[0, 0], tmp_path / "bad.png")


@pytest.mark.skipif(not HAVE_IMAGEIO, reason="imageio and imageio-ffmpeg are not installed")
def test_mp4_round_trip(tmp_path):
    clip = smooth_clip()
    path = write_mp4(clip, tmp_path / "clip.mp4", fps=8)
    back = read_clip_file(path)
    assert back.shape == clip.shape
    error = (back - clip).abs().mean().item()
    assert error < 0.03, f"H.264 should keep smooth frames (mean error {error:.4f})"
    assert read_clip_file(path, max_frames=3).shape[0] == 3


def test_missing_imageio_is_one_line_and_the_gif_is_still_written(tmp_path, monkeypatch):
    for module in ("imageio", "imageio.v3", "imageio_ffmpeg"):
        monkeypatch.setitem(sys.modules, module, None)  # `import` raises ImportError
    with pytest.raises(VideoBackendMissing) as caught:
        write_mp4(colour_clip(), tmp_path / "clip.mp4")
    message = str(caught.value)
    assert "\n" not in message and "pip install imageio imageio-ffmpeg" in message
    assert str(tmp_path / "clip.mp4") in message
    with pytest.warns(UserWarning, match="pip install imageio imageio-ffmpeg") as record:
        written = save_clip(colour_clip(), tmp_path / "sample")
    assert len(record) == 1
    assert [p.name for p in written] == ["sample.gif", "sample.png"]
    assert all(p.is_file() for p in written) and not (tmp_path / "sample.mp4").exists()
    (tmp_path / "x.mp4").write_bytes(b"\0")
    with pytest.raises(VideoBackendMissing, match="reading .*x.mp4 needs imageio"):
        read_clip_file(tmp_path / "x.mp4")


@pytest.mark.skipif(not HAVE_IMAGEIO, reason="imageio and imageio-ffmpeg are not installed")
def test_save_clip_writes_all_three(tmp_path):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        written = save_clip(colour_clip(), tmp_path / "out" / "0", fps=4, scale=2)
    assert [p.name for p in written] == ["0.gif", "0.mp4", "0.png"]
    assert read_clip_file(written[0]).shape == (6, 3, 32, 32)
    with pytest.raises(ValueError, match="unknown clip formats"):
        save_clip(colour_clip(), tmp_path / "x", formats=("avi",))
