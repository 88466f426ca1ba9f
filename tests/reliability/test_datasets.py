"""Malformed datasets (#14.7): ``train --data FOLDER`` on an empty folder, a folder of
non-images, a truncated PNG, a zero-byte file, an image file that is no image, a folder named
like an image, and (``test_inputs``) bad metadata.jsonl: one line naming the folder or the file,
nothing created; ``--skip-bad-images`` leaves the bad ones out with a warning. Odd but valid
images (1x1, 16-bit, palette with transparency, CMYK, a PNG named .jpg) train."""

from __future__ import annotations

import io

import numpy as np
import pytest
from faults import TALLY
from PIL import Image
from tiny_runs import error_line, image_folder, run_main, train_argv

BAD = {
    "truncated": lambda p: p.write_bytes(p.read_bytes()[: len(p.read_bytes()) // 2]),
    "zero-byte": lambda p: p.write_bytes(b""),
    "text named .png": lambda p: p.write_text("not an image\n"),
    "random bytes": lambda p: p.write_bytes(np.random.default_rng(0).bytes(300)),
    "a JPEG header only": lambda p: p.write_bytes(b"\xff\xd8\xff\xe0\x00\x10JFIF\x00"),
}


def odd_image(kind: str) -> Image.Image:
    rng = np.random.default_rng(2)
    if kind == "1x1":
        return Image.new("RGB", (1, 1), (200, 10, 10))
    if kind == "16-bit grey":
        return Image.fromarray(rng.integers(0, 65535, (8, 8), dtype=np.uint16))
    if kind == "palette with transparency":
        image = Image.fromarray(rng.integers(0, 255, (8, 8), dtype=np.uint8)).convert("P")
        image.info["transparency"] = 0
        return image
    return Image.new("CMYK", (9, 7), (0, 50, 100, 0))


@pytest.mark.parametrize("bad", BAD)
def test_an_unreadable_image_is_named_or_skipped(bad, tmp_path, capsys):
    data = image_folder(tmp_path / "data")
    BAD[bad](data / "5.png")
    out = tmp_path / "run"
    TALLY.bad_input("malformed datasets")
    code, err = run_main(capsys, train_argv(data, out))
    line = error_line(err)
    assert code == 2 and f"cannot read image {data / '5.png'}" in line, line
    assert not out.exists()
    with pytest.warns(UserWarning, match="skipped 1 unreadable image"):
        assert run_main(capsys, train_argv(data, out, "--skip-bad-images"))[0] == 0
    TALLY.bad_input("malformed datasets")


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda d: None, "no images (.png, .jpg, .jpeg, .webp) found under"),
        (lambda d: (d / "notes.txt").write_text("x"), "no images"),
        (lambda d: (d / "x.png").mkdir(), "no images"),
        (lambda d: (d / ".hidden.png").write_bytes(b""), "no images"),
    ],
    ids=["empty", "non-images", "a folder named x.png", "hidden files only"],
)
def test_a_folder_without_images_is_one_line(make, message, tmp_path, capsys):
    data = tmp_path / "data"
    data.mkdir()
    make(data)
    TALLY.bad_input("malformed datasets")
    code, err = run_main(capsys, train_argv(data, tmp_path / "run"))
    line = error_line(err)
    assert code == 2 and message in line and str(data) in line, line
    assert not (tmp_path / "run").exists()


def test_every_image_unreadable_with_skip_is_one_line(tmp_path, capsys):
    data = image_folder(tmp_path / "data", n=2)
    for p in data.glob("*.png"):
        p.write_bytes(b"")
    TALLY.bad_input("malformed datasets")
    with pytest.warns(UserWarning, match="skipped 2 unreadable image"):
        code, err = run_main(capsys, train_argv(data, tmp_path / "run", "--skip-bad-images"))
    assert code == 2 and "none of the 2 images" in error_line(err)


@pytest.mark.parametrize("kind", ["1x1", "16-bit grey", "palette with transparency", "CMYK"])
def test_odd_but_valid_images_train(kind, tmp_path, capsys):
    data = image_folder(tmp_path / "data")
    odd_image(kind).save(data / "5.png" if kind != "CMYK" else data / "5.jpg")
    if kind == "CMYK":  # a JPEG: metadata.jsonl names it
        (data / "5.png").unlink()
        meta = data / "metadata.jsonl"
        meta.write_text(meta.read_text().replace('"5.png"', '"5.jpg"'))
    TALLY.bad_input("malformed datasets")
    code, err = run_main(capsys, train_argv(data, tmp_path / "run"))
    assert code == 0, err


def test_a_png_named_jpg_is_read_by_its_content(tmp_path, capsys):
    data = image_folder(tmp_path / "data")
    buf = io.BytesIO()
    Image.open(data / "5.png").save(buf, format="PNG")
    (data / "5.png").unlink()
    (data / "5.jpg").write_bytes(buf.getvalue())
    meta = data / "metadata.jsonl"
    meta.write_text(meta.read_text().replace('"5.png"', '"5.jpg"'))
    code, err = run_main(capsys, train_argv(data, tmp_path / "run"))
    assert code == 0, err
