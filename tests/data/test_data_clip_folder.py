"""A user's clip folder: frame folders, GIFs and MP4s with metadata.jsonl; one line per problem."""

import importlib.util
import json
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from pixdiff.data.clip_folder import load_clip_folder, natural_key
from pixdiff.data.image_set import to_model_space
from pixdiff.data.video_io import write_gif, write_mp4
from pixdiff.data.video_read import VideoBackendMissing

HAVE_IMAGEIO = all(importlib.util.find_spec(m) for m in ("imageio", "imageio_ffmpeg"))


def frame(value: int, size: tuple[int, int] = (12, 8)) -> Image.Image:
    """A flat RGB frame of one grey ``value``, ``size`` = (width, height)."""
    return Image.new("RGB", size, (value, value, value))


def frame_folder(root, name: str, values: list[int], size=(12, 8)):
    folder = root / name
    folder.mkdir(parents=True)
    for i, v in enumerate(values):
        frame(v, size).save(folder / f"f{i + 1}.png")  # f1 .. f12: "f10" sorts after "f9"
    return folder


def grey_clip(values: list[int], size: int = 8) -> torch.Tensor:
    """(F, 1, size, size) in [-1, 1], frame k flat at values[k]."""
    flat = torch.tensor(values, dtype=torch.uint8).view(-1, 1, 1, 1)
    return to_model_space(flat.expand(-1, 1, size, size).contiguous())


def write_metadata(root, rows):
    (root / "metadata.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))


@pytest.fixture
def clips(tmp_path):
    """walk/ (12 frames, 12x8), spin.gif (5 frames), notes.txt, .hidden/, metadata.jsonl."""
    frame_folder(tmp_path, "walk", [10 * k for k in range(12)])
    write_gif(grey_clip([200, 150, 100, 50, 0]), tmp_path / "spin.gif", fps=5)
    (tmp_path / "notes.txt").write_text("not a clip")
    frame_folder(tmp_path, ".hidden", [0])
    write_metadata(
        tmp_path,
        [
            {"file_name": "walk", "text": "a walk", "label": "slow"},
            {"file_name": "spin.gif", "text": "a spin", "label": "fast"},
        ],
    )
    return tmp_path


def values(data) -> list[list[int]]:
    """The flat value of every frame of every clip."""
    return data.clips[..., 0, 4, 4].tolist()


def test_frame_folders_and_gifs_with_metadata(clips):
    data = load_clip_folder(clips, size=6, frames=4, progress=False)
    assert data.clips.shape == (2, 4, 3, 6, 6) and data.clips.dtype == torch.uint8
    assert data.captions == ["a spin", "a walk"]  # clips in name order
    assert data.class_names == ["fast", "slow"] and data.labels.tolist() == [0, 1]
    assert data.motions is None and data.name == clips.name
    assert values(data) == [[200, 150, 100, 50], [0, 10, 20, 30]], "the first frames"


def test_frame_order_is_natural_and_stride_skips(clips):
    data = load_clip_folder(clips, size=6, frames=3, frame_stride=2, channels=1, progress=False)
    assert data.clips.shape == (2, 3, 1, 6, 6)
    assert values(data) == [[200, 100, 0], [0, 20, 40]]
    (clips / "spin.gif").unlink()
    (clips / "metadata.jsonl").unlink()
    data = load_clip_folder(clips, size=6, frames=12, progress=False)
    assert values(data)[0] == [10 * k for k in range(12)], "f10 comes after f9"
    assert sorted(["f10", "f9", "f1"], key=natural_key) == ["f1", "f9", "f10"]


def test_too_few_frames_names_the_clip(clips):
    with pytest.raises(ValueError, match=r"clip .*spin\.gif has 5 frame\(s\), fewer than the 6"):
        load_clip_folder(clips, size=6, frames=6, progress=False)
    (clips / "spin.gif").unlink()
    write_metadata(clips, [{"file_name": "walk", "text": "a walk"}])
    with pytest.raises(ValueError, match=r"clip .*walk has 12 frame\(s\), fewer than the 13") as e:
        load_clip_folder(clips, size=6, frames=7, frame_stride=2, progress=False)
    assert "\n" not in str(e.value)


def test_mixed_frame_sizes_name_the_files(tmp_path):
    folder = frame_folder(tmp_path, "mixed", [0, 50, 100])
    frame(50, (10, 10)).save(folder / "f2.png")
    with pytest.raises(ValueError) as e:
        load_clip_folder(tmp_path, size=6, frames=3, progress=False)
    message = str(e.value)
    assert "\n" not in message and str(folder) in message
    assert "f2.png is 10x10 but f1.png is 12x8" in message


def test_corrupt_files_are_named(tmp_path):
    folder = frame_folder(tmp_path, "broken", [0, 50, 100])
    (folder / "f2.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    with pytest.raises(ValueError, match=r"cannot read image .*broken/f2\.png") as e:
        load_clip_folder(tmp_path, size=6, frames=3, progress=False)
    assert "\n" not in str(e.value)
    other = tmp_path / "gifs"
    other.mkdir()
    (other / "bad.gif").write_bytes(b"GIF89a\x08\x00\x08\x00 not really")
    with pytest.raises(ValueError, match=r"cannot read GIF .*gifs/bad\.gif") as e:
        load_clip_folder(other, size=6, frames=2, progress=False)
    assert "\n" not in str(e.value)


def test_metadata_must_cover_every_clip(clips):
    write_metadata(clips, [{"file_name": "walk", "text": "a walk"}])
    with pytest.raises(ValueError, match=r'no "text" for 1 of 2 clips \(first: \'spin\.gif\'\)'):
        load_clip_folder(clips, size=6, frames=2, progress=False)
    write_metadata(
        clips,
        [{"file_name": n, "text": "x"} for n in ("walk", "spin.gif", "gone.gif")],
    )
    with pytest.raises(ValueError, match=r"lists 1 file\(s\) not found as clips .*'gone\.gif'"):
        load_clip_folder(clips, size=6, frames=2, progress=False)


def test_empty_or_missing_folder(tmp_path):
    with pytest.raises(ValueError, match="no clips under"):
        load_clip_folder(tmp_path, size=6, frames=2, progress=False)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_clip_folder(tmp_path / "nope", size=6, frames=2, progress=False)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match=r"clip folder .*empty holds no frames"):
        load_clip_folder(tmp_path, size=6, frames=2, progress=False)


@pytest.mark.skipif(not HAVE_IMAGEIO, reason="imageio and imageio-ffmpeg are not installed")
def test_mp4_clips(tmp_path):
    write_mp4(grey_clip([0, 60, 120, 180, 240, 240], size=16), tmp_path / "fade.mp4", fps=6)
    data = load_clip_folder(tmp_path, size=8, frames=5, channels=1, progress=False)
    got = np.array(values(data)[0])
    assert data.clips.shape == (1, 5, 1, 8, 8)
    assert np.abs(got - [0, 60, 120, 180, 240]).max() <= 4, got
    (tmp_path / "bad.mp4").write_bytes(b"\0\0\0\x18ftypmp42 garbage")
    with pytest.raises(ValueError, match=r"cannot read video .*bad\.mp4") as e:
        load_clip_folder(tmp_path, size=8, frames=5, progress=False)
    assert "\n" not in str(e.value)


def test_mp4_without_imageio_says_what_to_install(tmp_path, monkeypatch):
    (tmp_path / "clip.mp4").write_bytes(b"\0")
    for module in ("imageio", "imageio.v3", "imageio_ffmpeg"):
        monkeypatch.setitem(sys.modules, module, None)
    with pytest.raises(VideoBackendMissing, match="pip install imageio imageio-ffmpeg") as e:
        load_clip_folder(tmp_path, size=8, frames=2, progress=False)
    assert "\n" not in str(e.value) and "clip.mp4" in str(e.value)
