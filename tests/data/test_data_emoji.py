"""Emoji rendered from Noto Color Emoji: enumeration, rendering, captions and the .npz cache."""

import numpy as np
import pytest
import torch

from pixdiff.data import emoji
from pixdiff.data.emoji import (
    DEFAULT_FONT,
    caption,
    emoji_codepoints,
    font_codepoints,
    load_emoji,
    render_emoji,
)

pytestmark = pytest.mark.skipif(
    not DEFAULT_FONT.is_file(), reason="Debian package fonts-noto-color-emoji is not installed"
)
APPLE, GRIN, HEART = 0x1F34E, 0x1F600, 0x2764
SUBSET = [APPLE, GRIN, HEART, 0x1F680]


def test_enumeration_keeps_standalone_emoji_only():
    mapped = set(font_codepoints())
    found = emoji_codepoints()
    assert 1300 < len(found) < 1600 and found == sorted(found)
    assert {APPLE, GRIN, HEART} <= set(found)
    components = {0x23, 0x30, 0x200D, 0x20E3, 0x1F1E6, 0x1F3FB, 0xE0062}
    assert components <= mapped  # the font maps them ...
    assert not components & set(found)  # ... but they are not images on their own


def test_caption_is_lowercase_unicode_name():
    assert caption(APPLE) == "red apple"
    assert caption(GRIN) == "grinning face"
    assert caption(0x10FFFD) is None  # private use: no name


def test_render_subset():
    data = render_emoji(SUBSET, size=32)
    assert data.images.shape == (4, 3, 32, 32) and data.images.dtype == torch.uint8
    assert data.captions == ["red apple", "grinning face", "heavy black heart", "rocket"]
    assert data.labels is None and data.name == "emoji-32"
    for image in data.images:
        assert (image < 200).any(), "emoji should have non-white content"
        assert (image[:, 0, 0] == 255).all(), "background is white"
    apple = data.images[0].float()
    ink = apple.min(0).values < 200
    red, green = apple[0][ink].mean(), apple[1][ink].mean()
    assert red > green + 60, "the red apple is red"


def test_render_is_centred_and_sized():
    for size in (16, 128):
        image = render_emoji([GRIN], size=size).images[0]
        assert image.shape == (3, size, size)
        ink = (image < 250).any(0)
        rows, cols = ink.any(1).nonzero(), ink.any(0).nonzero()
        top, bottom = rows.min().item(), size - 1 - rows.max().item()
        left, right = cols.min().item(), size - 1 - cols.max().item()
        assert abs(top - bottom) <= max(1, size // 32) and abs(left - right) <= max(1, size // 32)


def test_size_and_font_errors(tmp_path):
    with pytest.raises(ValueError, match="16..128"):
        render_emoji([APPLE], size=8)
    with pytest.raises(FileNotFoundError, match="fonts-noto-color-emoji"):
        load_emoji(32, tmp_path, font_path=tmp_path / "missing.ttf")
    junk = tmp_path / "junk.ttf"
    junk.write_bytes(b"\0\1\0\0" + b"\0" * 8)
    with pytest.raises(ValueError, match="junk.ttf: not a usable TrueType font"):
        font_codepoints(junk)


def test_cache_round_trip(tmp_path, monkeypatch):
    monkeypatch.setattr(emoji, "emoji_codepoints", lambda font_path: SUBSET)
    monkeypatch.setenv("PIXDIFF_CACHE", str(tmp_path / "env-cache"))
    first = load_emoji(16, progress=False)  # cache_dir from $PIXDIFF_CACHE
    path = tmp_path / "env-cache" / "emoji-16px.npz"
    assert path.is_file() and not list(path.parent.glob("*.tmp"))
    with np.load(path, allow_pickle=False) as npz:
        assert npz["images"].dtype == np.uint8 and npz["images"].shape == (4, 3, 16, 16)

    def no_render(*args, **kwargs):
        raise AssertionError("should have been served from the cache")

    monkeypatch.setattr(emoji, "render_emoji", no_render)
    second = load_emoji(16, tmp_path / "env-cache")
    assert torch.equal(first.images, second.images)
    assert second.captions == first.captions and second.name == "emoji-16"


def test_stale_or_corrupt_cache_is_rebuilt(tmp_path, monkeypatch):
    monkeypatch.setattr(emoji, "emoji_codepoints", lambda font_path: SUBSET[:2])
    path = tmp_path / "emoji-16px.npz"
    path.write_bytes(b"not an npz")
    with pytest.warns(UserWarning, match="unreadable emoji cache"):
        data = load_emoji(16, tmp_path, progress=False)
    assert len(data) == 2 and emoji.read_cache(path) is not None
    assert emoji.read_cache(path, fingerprint="another font") is None


def test_full_set_renders():
    """Every enumerated emoji draws (no blank glyph, no layout error); ~4 s on 2 cores."""
    data = render_emoji(size=16)
    assert len(data) == len(emoji_codepoints()) and len(set(data.captions)) == len(data)
    ink = (data.images < 250).flatten(1).any(1)
    assert ink.all()


def test_blank_codepoints_are_left_out():
    with pytest.warns(UserWarning, match=r"1 codepoint\(s\) drew nothing .*U\+E000"):
        data = render_emoji([APPLE, 0xE000], size=16)  # U+E000: private use, not in the font
    assert data.captions == ["red apple"] and len(data) == 1


def test_splits_partition_the_set_and_hold_out_every_tenth(tmp_path):
    data = render_emoji(SUBSET * 3, size=16)  # 12 emoji; index 9 is the only held-out one
    train, test = emoji.emoji_split(data, "train"), emoji.emoji_split(data, "test")
    assert len(train) == 11 and len(test) == 1
    assert test.captions == [data.captions[9]] and torch.equal(test.images[0], data.images[9])
    assert train.captions == data.captions[:9] + data.captions[10:]
    assert emoji.emoji_split(data, "all") is data
    with pytest.raises(ValueError, match="valid splits are train, test, all"):
        emoji.emoji_split(data, "validation")


def test_load_dataset_emoji_splits_are_disjoint_and_complete():
    from pixdiff.data import load_dataset

    parts = {s: load_dataset("emoji", image_size=16, split=s) for s in ("train", "test", "all")}
    assert len(parts["train"]) + len(parts["test"]) == len(parts["all"])
    assert not set(parts["train"].captions) & set(parts["test"].captions)
    assert "red apple" in parts["train"].captions  # the prompt of the shipped model's demo
