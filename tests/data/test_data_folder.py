"""Image folders: mixed formats and modes, metadata.jsonl, bad files and clear errors."""

import json

import numpy as np
import pytest
import torch
from PIL import Image, features

from pixdiff.data import load_dataset, load_folder

RED, GREEN, BLUE = (255, 0, 0), (0, 255, 0), (0, 0, 255)


def stripes(width: int, height: int) -> Image.Image:
    """Three vertical bands red | green | blue: a centre crop keeps mostly green."""
    array = np.zeros((height, width, 3), np.uint8)
    third = width // 3
    array[:, :third] = RED
    array[:, third : 2 * third] = GREEN
    array[:, 2 * third :] = BLUE
    return Image.fromarray(array)


@pytest.fixture
def folder(tmp_path):
    """a.png (RGB, wide), sub/b.jpg (RGB), sub/deeper/c.png (RGBA), sub/d.png (L) + metadata."""
    (tmp_path / "sub" / "deeper").mkdir(parents=True)
    stripes(60, 20).save(tmp_path / "a.png")
    Image.new("RGB", (24, 40), GREEN).save(tmp_path / "sub" / "b.jpg", quality=95)
    rgba = Image.new("RGBA", (16, 16), (0, 0, 255, 0))  # fully transparent blue
    rgba.paste((255, 0, 0, 255), (0, 0, 16, 8))  # opaque red top half
    rgba.save(tmp_path / "sub" / "deeper" / "c.png")
    Image.new("L", (20, 20), 100).save(tmp_path / "sub" / "d.png")
    (tmp_path / ".hidden").mkdir()
    Image.new("RGB", (8, 8)).save(tmp_path / ".hidden" / "ignored.png")
    (tmp_path / "notes.txt").write_text("not an image")
    rows = [
        {"file_name": "a.png", "label": "stripes", "text": "three bands"},
        {"file_name": "sub/b.jpg", "label": "plain", "text": "a green field"},
        {"file_name": "sub/deeper/c.png", "label": "half", "text": "red over nothing"},
        {"file_name": "sub/d.png", "label": "plain", "text": "grey"},
    ]
    write_metadata(tmp_path, rows)
    return tmp_path


def write_metadata(root, rows):
    lines = [r if isinstance(r, str) else json.dumps(r) for r in rows]
    (root / "metadata.jsonl").write_text("\n".join(lines) + "\n")


def test_loads_sorted_with_labels_and_captions(folder):
    data = load_folder(folder, image_size=8, progress=False)
    assert data.images.shape == (4, 3, 8, 8) and data.images.dtype == torch.uint8
    # sorted by relative path: "sub/d.png" < "sub/deeper/c.png" since "." < "e"
    assert data.captions == ["three bands", "a green field", "grey", "red over nothing"]
    assert data.class_names == ["half", "plain", "stripes"]  # ids in name order
    assert data.labels.tolist() == [2, 1, 1, 0] and data.num_classes == 3


def test_modes_crop_and_transparency(folder):
    data = load_folder(folder, image_size=12, progress=False)
    stripes_, grey, rgba = data.images[0], data.images[2], data.images[3]
    # 60x20 -> 36x12, then the central 12 columns: the green band (LANCZOS rings by ~1)
    green = torch.tensor([0, 255, 0]).view(3, 1, 1)
    assert (stripes_[:, :, 1:-1].int() - green).abs().max() <= 2
    assert (rgba[:, 0, 0] == torch.tensor([255, 0, 0], dtype=torch.uint8)).all()  # opaque red
    assert (rgba[:, -1, -1] == 255).all()  # transparent -> white, not black or blue
    assert (grey == 100).all()  # L -> RGB repeats the grey level


def test_grey_output(folder):
    data = load_folder(folder, image_size=8, channels=1, progress=False)
    assert data.images.shape == (4, 1, 8, 8)
    assert (data.images[2] == 100).all()
    assert abs(int(data.images[1, 0, 4, 4]) - 150) <= 2  # luma of pure green: 0.587 * 255


@pytest.mark.skipif(not features.check("webp"), reason="Pillow built without WebP")
def test_webp_is_found(tmp_path):
    Image.new("RGB", (10, 10), BLUE).save(tmp_path / "x.webp", lossless=True)
    Image.new("RGB", (10, 10), RED).save(tmp_path / "Y.JPEG")
    data = load_folder(tmp_path, image_size=4, progress=False)
    assert len(data) == 2 and data.labels is None and data.captions is None


def test_sixteen_bit_grey_is_scaled_not_clipped(tmp_path):
    Image.fromarray(np.full((6, 6), 32896, np.uint16)).save(tmp_path / "deep.png")
    data = load_folder(tmp_path, image_size=6, channels=1, progress=False)
    assert (data.images == 128).all()


def test_truncated_image_raises_or_is_skipped(folder):
    bad = folder / "sub" / "b.jpg"
    bad.write_bytes(bad.read_bytes()[:100])
    with pytest.raises(ValueError, match=r"cannot read image .*b\.jpg.*skip_bad_images=True"):
        load_folder(folder, image_size=8, progress=False)
    with pytest.warns(UserWarning, match=r"skipped 1 unreadable image\(s\) of 4"):
        data = load_folder(folder, image_size=8, skip_bad_images=True, progress=False)
    assert len(data) == 3 and data.captions == ["three bands", "grey", "red over nothing"]
    assert data.labels.tolist() == [2, 1, 0]  # ids unchanged by the skip


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ('{"file_name": "sub/b.jpg", "label": "plain"', "invalid JSON"),
        ('{"label": "plain"}', 'expected an object with a "file_name"'),
        ('{"file_name": "sub/b.jpg", "label": 1}', "labels mix ints and strings"),
        ('{"file_name": "sub/b.jpg", "label": [1]}', '"label" must be an int or'),
        ('{"file_name": "sub/b.jpg", "text": 3}', '"text" must be a string'),
        ('{"file_name": "a.png"}', "'a.png' is listed twice"),
    ],
)
def test_bad_metadata_line_names_file_and_line(folder, line, message):
    write_metadata(folder, ['{"file_name": "a.png", "label": "x"}', "", line])
    with pytest.raises(ValueError, match=rf"metadata\.jsonl:3: .*{message}"):
        load_folder(folder, image_size=8, progress=False)


def test_metadata_must_cover_the_images(folder):
    write_metadata(folder, [{"file_name": "a.png", "text": "only one"}])
    with pytest.raises(ValueError, match=r'no "text" for 3 of 4 images \(first: \'sub/b.jpg\''):
        load_folder(folder, image_size=8, progress=False)
    names = ("a.png", "sub/b.jpg", "sub/d.png", "sub/deeper/c.png", "x.png")
    write_metadata(folder, [{"file_name": n, "label": 0} for n in names])
    with pytest.raises(ValueError, match=r"not found as images .*'x.png'"):
        load_folder(folder, image_size=8, progress=False)


def test_int_labels_and_extra_columns(folder):
    names = ["a.png", "sub/b.jpg", "sub/d.png", "sub/deeper/c.png"]
    write_metadata(folder, [{"file_name": n, "label": i, "url": "u"} for i, n in enumerate(names)])
    with pytest.warns(UserWarning, match=r"ignoring columns \['url'\]"):
        data = load_folder(folder, image_size=8, progress=False)
    assert data.labels.tolist() == [0, 1, 2, 3] and data.class_names is None


def test_labels_from_dirs(tmp_path):
    for cls, n in (("cat", 2), ("dog", 1)):
        (tmp_path / cls).mkdir()
        for i in range(n):
            Image.new("RGB", (8, 8)).save(tmp_path / cls / f"{i}.png")
    data = load_folder(tmp_path, image_size=4, labels_from_dirs=True, progress=False)
    assert data.class_names == ["cat", "dog"] and data.labels.tolist() == [0, 0, 1]
    Image.new("RGB", (8, 8)).save(tmp_path / "stray.png")
    with pytest.raises(ValueError, match="class subfolder.*'stray.png'"):
        load_folder(tmp_path, image_size=4, labels_from_dirs=True, progress=False)


def test_empty_and_missing_folders(tmp_path):
    (tmp_path / "readme.txt").write_text("hi")
    with pytest.raises(ValueError, match=r"no images \(.png, .jpg, .jpeg, .webp\) found under"):
        load_folder(tmp_path, image_size=8)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_folder(tmp_path / "nope", image_size=8)


def test_load_dataset_dispatch(folder, tmp_path):
    data = load_dataset(str(folder), image_size=8, channels=1)
    assert data.images.shape == (4, 1, 8, 8)
    with pytest.raises(FileNotFoundError, match="neither one of fashion-mnist, emoji nor"):
        load_dataset(str(tmp_path / "typo"), image_size=8)


def test_folder_has_one_split(folder):
    sizes = {
        s: len(load_dataset(str(folder), image_size=8, split=s)) for s in ("train", "test", "all")
    }
    assert len(set(sizes.values())) == 1
