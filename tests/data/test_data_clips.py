"""The clip generator: deterministic per seed, its held-out split, its cache and its set."""

from dataclasses import replace

import pytest
import torch
from safetensors import safe_open

from pixdiff.data import clips as clips_module
from pixdiff.data.clip_render import grey_sprite, render_clip
from pixdiff.data.clip_set import ClipSet
from pixdiff.data.clips import ClipSpec, cache_path, load_clips, make_clips
from pixdiff.data.emoji import DEFAULT_FONT
from pixdiff.data.fashion_mnist import DEFAULT_ROOT
from pixdiff.data.motions import HOLDOUT_EVERY, MOTIONS, caption_of, split_pairs, tracks_for

pytestmark = pytest.mark.skipif(
    not (DEFAULT_ROOT.is_dir() and DEFAULT_FONT.is_file()),
    reason="Debian packages dataset-fashion-mnist and fonts-noto-color-emoji are needed",
)
TINY = ClipSpec(source="both", num_clips=6, frames=4, emoji=("red apple", "rocket"))


def test_same_seed_same_clips_other_seed_other_clips():
    a, b = make_clips(TINY), make_clips(TINY)
    assert torch.equal(a.clips, b.clips) and a.captions == b.captions
    assert torch.equal(a.labels, b.labels) and torch.equal(a.motions, b.motions)
    other = make_clips(replace(TINY, seed=1))
    assert not torch.equal(a.clips, other.clips)


def test_the_first_clips_do_not_depend_on_how_many():
    few = make_clips(replace(TINY, num_clips=3))
    many = make_clips(TINY)
    assert torch.equal(few.clips, many.clips[:3]) and few.captions == many.captions[:3]


def test_set_layout_and_captions():
    data = make_clips(TINY)
    assert isinstance(data, ClipSet) and len(data) == 6 and data.frames == 4
    assert data.clips.shape == (6, 4, 3, 32, 32) and data.clips.dtype == torch.uint8
    assert data.class_names[:10][0] == "t-shirt/top" and data.class_names[9] == "ankle boot"
    assert data.class_names[10:] == ["red apple", "rocket"] and data.num_classes == 12
    for caption, label, motion in zip(data.captions, data.labels, data.motions, strict=True):
        assert caption == caption_of(data.class_names[label], MOTIONS[motion])
    assert caption_of("red apple", "moving left") == "red apple moving left"
    assert caption_of("sneaker", "rotating clockwise") == "sneaker rotating clockwise"
    assert caption_of("sneaker", "moving apart") == "sneaker pair moving apart"
    frames = data.frame_set()
    assert frames.images.shape == (24, 3, 32, 32) and torch.equal(
        frames.images[4], data.clips[1, 0]
    )
    assert frames.labels.tolist() == data.labels.repeat_interleave(4).tolist()
    assert frames.captions[4:8] == [data.captions[1]] * 4


def test_motion_classes_are_stable():
    assert len(MOTIONS) == 16 and len(set(MOTIONS)) == 16
    assert MOTIONS[:2] == ("moving left", "moving right") and MOTIONS[-1] == "moving apart"


def test_held_out_pairs_are_new_combinations_of_seen_objects_and_motions():
    objects = 26  # Fashion-MNIST's 10 classes and the 16 default emoji
    train, test = split_pairs(objects, "train"), split_pairs(objects, "test")
    assert not set(train) & set(test) and len(train) + len(test) == objects * len(MOTIONS)
    assert len(test) == objects * len(MOTIONS) // HOLDOUT_EVERY
    assert {o for o, _ in test} == {o for o, _ in train} == set(range(objects))
    assert {m for _, m in test} == {m for _, m in train} == set(range(len(MOTIONS)))


def test_held_out_clips_have_unseen_captions_of_seen_words():
    spec = ClipSpec(source="fashion-mnist", num_clips=24, frames=4)
    train = make_clips(spec)
    test = make_clips(replace(spec, split="test"))
    train_pairs = set(split_pairs(10, "train"))
    seen_objects = {o for o, _ in train_pairs}
    seen_motions = {m for _, m in train_pairs}
    for label, motion, caption in zip(test.labels, test.motions, test.captions, strict=True):
        pair = (int(label), int(motion))
        assert pair not in train_pairs and pair[0] in seen_objects and pair[1] in seen_motions
        assert caption not in train.captions
    assert all(
        (int(o), int(m)) in train_pairs for o, m in zip(train.labels, train.motions, strict=True)
    )


def test_load_clips_caches_as_safetensors(tmp_path, monkeypatch):
    first = load_clips(TINY, cache_dir=tmp_path, progress=False)
    path = cache_path(TINY, tmp_path)
    assert path.is_file() and path.parent == tmp_path / "clips" and path.suffix == ".safetensors"
    with safe_open(path, framework="pt") as f:
        assert set(f.keys()) == {"clips", "labels", "motions"}
    monkeypatch.setattr(clips_module, "make_clips", lambda *a, **k: pytest.fail("re-rendered"))
    again = load_clips(TINY, cache_dir=tmp_path)
    assert torch.equal(again.clips, first.clips) and again.captions == first.captions
    assert again.class_names == first.class_names and torch.equal(again.motions, first.motions)
    assert cache_path(replace(TINY, seed=5), tmp_path) != path


def test_corrupt_cache_is_rebuilt_with_a_warning(tmp_path):
    path = cache_path(TINY, tmp_path)
    path.parent.mkdir(parents=True)
    path.write_bytes(b"not safetensors")
    with pytest.warns(UserWarning, match="unreadable clip cache"):
        data = load_clips(TINY, cache_dir=tmp_path, progress=False)
    assert torch.equal(data.clips, make_clips(TINY).clips)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"frames": 2}, r"frames must be in \(4, 64\), got 2"),
        ({"size": 16}, "size must be in"),
        ({"source": "mnist"}, "source must be one of fashion-mnist, emoji, both, got 'mnist'"),
        ({"split": "val"}, "split must be one of"),
        ({"object_size": 20}, "object_size must be in 16..19 at size 32, got 20"),
        ({"source": "emoji", "emoji": []}, "emoji must be some emoji's names"),
    ],
)
def test_bad_specs_are_refused(change, message):
    with pytest.raises(ValueError, match=message):
        ClipSpec(**change)


def test_the_largest_object_can_make_every_motion():
    """A square filled to its corners, as large as a spec allows, fits every motion's track."""
    for size in (32, 64):
        side = ClipSpec(size=size).largest_object
        sprite = grey_sprite(torch.full((1, side, side), 255, dtype=torch.uint8))
        for motion in MOTIONS:
            g = torch.Generator().manual_seed(0)
            tracks = tracks_for(motion, sprite.footprint(), size=size, frames=8, generator=g)
            assert render_clip(sprite, tracks, size=size).shape == (8, 1, size, size)


def test_unknown_emoji_is_named():
    with pytest.raises(ValueError, match="'purple unicorn' is not the Unicode name"):
        make_clips(ClipSpec(source="emoji", num_clips=1, frames=4, emoji=("purple unicorn",)))


def test_clip_set_checks_its_fields():
    clips = torch.zeros(2, 4, 1, 8, 8, dtype=torch.uint8)
    with pytest.raises(ValueError, match="uint8"):
        ClipSet(clips.float())
    with pytest.raises(ValueError, match="motions"):
        ClipSet(clips, motions=torch.tensor([0, len(MOTIONS)]))
    with pytest.raises(ValueError, match="3 captions for 2 clips"):
        ClipSet(clips, captions=["a", "b", "c"])
    part = ClipSet(clips, ["a", "b"], torch.tensor([0, 1]), ["x", "y"]).subset(
        torch.tensor([1]), name="one"
    )
    assert part.captions == ["b"] and part.labels.tolist() == [1] and part.name == "one"
