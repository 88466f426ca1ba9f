"""Captioned clips made offline: a Fashion-MNIST item or an emoji in one of the motions of
:mod:`pixdiff.data.motions`, deterministic per seed and cached like the emoji.

Moving-MNIST style data (Srivastava et al. 2015) for text-to-video (Ho et al. 2022, Video
Diffusion Models): each clip is one object, a Fashion-MNIST item (Xiao et al. 2017; white on
black, grey clips) or an emoji (on white, colour clips), moving as its caption says, "red apple
moving left", "sneaker rotating clockwise". The captions combine the object's name (the
Fashion-MNIST class lower-cased, the emoji's Unicode name) with the motion
(:func:`~pixdiff.data.motions.caption_of`).

Splits: the held-out ``"test"`` split holds the (object, motion) pairs that ``"train"`` never
shows (:func:`~pixdiff.data.motions.is_held_out`), drawn with Fashion-MNIST's test items;
``"train"`` draws its items from Fashion-MNIST's training set; ``"all"`` draws any pair from
the training items. Clip i of a (seed, split) is drawn from its own generator, so the first n
clips are the same whatever the number asked for.
"""

from __future__ import annotations

import hashlib
import json
import math
import unicodedata
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal, get_args

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save
from tqdm import tqdm

from pixdiff.data.clip_render import Sprite, grey_sprite, render_clip, sprite_on_white
from pixdiff.data.clip_set import ClipSet
from pixdiff.data.emoji import DEFAULT_FONT, caption, render_alpha, render_emoji
from pixdiff.data.emoji import _fingerprint as emoji_fingerprint
from pixdiff.data.fashion_mnist import CLASS_NAMES, DEFAULT_ROOT, load_fashion_mnist
from pixdiff.data.image_set import (
    SPLITS,
    Split,
    check_fits_in_memory,
    default_cache_dir,
    resize_images,
)
from pixdiff.data.motions import MOTIONS, caption_of, split_pairs, tracks_for
from pixdiff.files import atomic_write

ClipSource = Literal["fashion-mnist", "emoji", "both"]
CLIP_SOURCES: tuple[str, ...] = get_args(ClipSource)
# recognisable, differently coloured objects; any emoji's Unicode name works
DEFAULT_EMOJI = (
    "red apple", "banana", "grapes", "tangerine", "strawberry", "rocket", "automobile",
    "sailboat", "soccer ball", "teddy bear", "frog face", "tropical fish", "sunflower",
    "butterfly", "octopus", "mushroom",
)  # fmt: skip
FRAMES_RANGE = (4, 64)
SIZE_RANGE = (32, 256)
_CLIPS_FORMAT = 1  # bump when rendering or drawing changes, to invalidate old caches


@dataclass(frozen=True)
class ClipSpec:
    """Which clips to make; every field changes the clips, so all of them key the cache.

    Attributes:
        source: "fashion-mnist" (grey clips), "emoji" or "both" (colour clips; the
            Fashion-MNIST objects first, then the emoji).
        size: frame side in pixels (32 or 64 in the benchmarks).
        frames: frames per clip (8 to 16 in the benchmarks).
        num_clips: how many clips.
        split: "train", held-out "test" (unseen object-motion pairs) or "all".
        seed: the clips drawn; clip i depends only on (seed, split, i).
        emoji: the emoji objects, by Unicode name, in object-id order.
        object_size: the side of an object's square at scale 1, at most
            :attr:`largest_object`; None: half the frame.
    """

    source: ClipSource = "fashion-mnist"
    size: int = 32
    frames: int = 16
    num_clips: int = 1024
    split: Split = "train"
    seed: int = 0
    emoji: tuple[str, ...] = DEFAULT_EMOJI
    object_size: int | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "emoji", tuple(self.emoji))  # a list from a JSON config
        largest = self.largest_object
        checks = {
            "source": (self.source in CLIP_SOURCES, f"one of {', '.join(CLIP_SOURCES)}"),
            "split": (self.split in SPLITS, f"one of {', '.join(SPLITS)}"),
            "size": (SIZE_RANGE[0] <= self.size <= SIZE_RANGE[1], f"in {SIZE_RANGE}"),
            "frames": (FRAMES_RANGE[0] <= self.frames <= FRAMES_RANGE[1], f"in {FRAMES_RANGE}"),
            "num_clips": (self.num_clips >= 1, "at least 1"),
            "object_size": (16 <= self.side <= largest, f"in 16..{largest} at size {self.size}"),
            "emoji": (self.source == "fashion-mnist" or self.emoji, "some emoji's names"),
        }
        for field, (ok, needed) in checks.items():
            if not ok:
                raise ValueError(f"clips: {field} must be {needed}, got {getattr(self, field)!r}")

    @property
    def side(self) -> int:
        """The object's side at scale 1."""
        return self.object_size if self.object_size is not None else self.size // 2

    @property
    def largest_object(self) -> int:
        """The largest object side whose square still turns inside the frame: half its
        diagonal, plus a pixel of interpolation margin, within half the frame."""
        return int((self.size - 1) / math.sqrt(2)) - 2

    @property
    def channels(self) -> int:
        return 1 if self.source == "fashion-mnist" else 3


class ObjectBank:
    """The objects of a spec: their names (object id order) and a sprite for each clip."""

    def __init__(self, spec: ClipSpec):
        self.side, self.channels = spec.side, spec.channels
        self.names: list[str] = []
        self._items: list[torch.Tensor] = []  # per Fashion-MNIST class, (K, 1, 28, 28)
        self._emoji: list[Sprite] = []
        if spec.source != "emoji":
            data = load_fashion_mnist("test" if spec.split == "test" else "train")
            self._items = [data.images[data.labels == k] for k in range(len(CLASS_NAMES))]
            self.names += [name.lower() for name in CLASS_NAMES]
        if spec.source != "fashion-mnist":
            names, self._emoji = emoji_sprites(spec.emoji, side=spec.side)
            self.names += names

    def sprite(self, object_id: int, generator: torch.Generator) -> Sprite:
        """Object ``object_id``'s sprite: for a Fashion-MNIST class, a random item of it."""
        if object_id < len(self._items):
            pool = self._items[object_id]
            item = pool[int(torch.randint(len(pool), (), generator=generator))]
            return grey_sprite(resize_images(item[None], self.side)[0], channels=self.channels)
        return self._emoji[object_id - len(self._items)]


def emoji_sprites(names: tuple[str, ...], *, side: int) -> tuple[list[str], list[Sprite]]:
    """The named emoji ("red apple") as sprites on white, ``side`` pixels square, with their
    captions (the lower-cased Unicode names)."""
    codepoints = []
    for name in names:
        try:
            codepoints.append(ord(unicodedata.lookup(name)))
        except KeyError:
            raise ValueError(
                f"clips: {name!r} is not the Unicode name of an emoji (e.g. 'red apple')"
            ) from None
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", ".*drew nothing")  # reported below, by name
        rendered = render_emoji(codepoints, size=side)
    if len(rendered) != len(names):
        drawn = set(rendered.captions or [])
        blank = [n for n, c in zip(names, codepoints, strict=True) if caption(c) not in drawn]
        raise ValueError(f"clips: the emoji font draws nothing for {blank}; choose other emoji")
    alpha = render_alpha(rendered.captions, size=side)
    sprites = [sprite_on_white(rgb, a) for rgb, a in zip(rendered.images, alpha, strict=True)]
    return list(rendered.captions), sprites


def clip_generator(seed: int, split: str, index: int) -> torch.Generator:
    """The generator of clip ``index``: a hash of (seed, split, index), so clips are drawn
    independently of each other and of how many are made."""
    digest = hashlib.sha256(f"pixdiff-clips/{seed}/{split}/{index}".encode()).digest()
    return torch.Generator().manual_seed(int.from_bytes(digest[:8], "little") & (2**63 - 1))


def make_clips(spec: ClipSpec, *, progress: bool = False) -> ClipSet:
    """Render ``spec.num_clips`` clips (no cache; :func:`load_clips` caches)."""
    check_fits_in_memory(spec.num_clips * spec.frames, spec.channels, spec.size, "the clips")
    bank = ObjectBank(spec)
    pairs = split_pairs(len(bank.names), spec.split)
    clips = torch.empty(
        (spec.num_clips, spec.frames, spec.channels, spec.size, spec.size), dtype=torch.uint8
    )
    labels = torch.empty(spec.num_clips, dtype=torch.int64)
    motions = torch.empty(spec.num_clips, dtype=torch.int64)
    bar = tqdm(range(spec.num_clips), desc="rendering clips", unit="clip", disable=not progress)
    for i in bar:
        g = clip_generator(spec.seed, spec.split, i)
        object_id, motion_id = pairs[int(torch.randint(len(pairs), (), generator=g))]
        sprite = bank.sprite(object_id, g)
        tracks = tracks_for(
            MOTIONS[motion_id], sprite.footprint(), size=spec.size, frames=spec.frames, generator=g
        )
        clips[i] = render_clip(sprite, tracks, size=spec.size)
        labels[i], motions[i] = object_id, motion_id
    captions = [caption_of(bank.names[o], MOTIONS[m]) for o, m in zip(labels, motions, strict=True)]
    name = f"clips-{spec.source}-{spec.split}"
    return ClipSet(clips, captions, labels, list(bank.names), motions, name)


def _fingerprint(spec: ClipSpec) -> str:
    """What cached clips depend on: the spec, the generator's version and the source files."""
    parts = [json.dumps(asdict(spec), sort_keys=True), f"format={_CLIPS_FORMAT}"]
    if spec.source != "emoji":
        files = sorted(DEFAULT_ROOT.glob("*-ubyte*"))
        parts += [f"{p.name}={p.stat().st_size}:{p.stat().st_mtime_ns}" for p in files]
    if spec.source != "fashion-mnist":
        parts.append(emoji_fingerprint(DEFAULT_FONT))
    return " ".join(parts)


def cache_path(spec: ClipSpec, cache_dir: str | Path | None = None) -> Path:
    """Where ``load_clips(spec)`` caches its clips: named by the spec, keyed by a hash of
    everything they depend on (so a stale cache is never read)."""
    key = hashlib.sha256(_fingerprint(spec).encode()).hexdigest()[:16]
    folder = Path(cache_dir or default_cache_dir()).expanduser() / "clips"
    stem = (
        f"{spec.source}-{spec.size}px-{spec.frames}f-{spec.split}-n{spec.num_clips}-seed{spec.seed}"
    )
    return folder / f"{stem}-{key}.safetensors"


def save_clip_cache(path: Path, data: ClipSet, *, fingerprint: str) -> None:
    """Write the clips to ``path`` as safetensors (tensors, and JSON text in the header's
    metadata; no pickle), atomically."""
    tensors = {"clips": data.clips, "labels": data.labels, "motions": data.motions}
    metadata = {
        "captions": json.dumps(data.captions), "class_names": json.dumps(data.class_names),
        "name": data.name, "fingerprint": fingerprint,
    }  # fmt: skip
    atomic_write(path, st_save({k: v.contiguous() for k, v in tensors.items()}, metadata))


def read_clip_cache(path: Path, *, fingerprint: str) -> ClipSet | None:
    """The cached clips at ``path``; None if absent or made from something else. A corrupt
    file is reported with a warning and treated as absent."""
    if not path.is_file():
        return None
    try:
        with safe_open(path, framework="pt") as f:
            metadata = f.metadata() or {}
        if metadata.get("fingerprint") != fingerprint:
            return None
        tensors = st_load(path.read_bytes())
        return ClipSet(
            tensors["clips"], json.loads(metadata["captions"]), tensors["labels"],
            json.loads(metadata["class_names"]), tensors["motions"], metadata["name"],
        )  # fmt: skip
    except (OSError, ValueError, KeyError, SafetensorError) as err:
        warnings.warn(f"ignoring unreadable clip cache {path} ({err}); rebuilding", stacklevel=2)
        return None


def load_clips(
    spec: ClipSpec, *, cache_dir: str | Path | None = None, progress: bool = True
) -> ClipSet:
    """The clips of ``spec``, rendered on first use and cached (``$PIXDIFF_CACHE`` or
    ``~/.cache/pixdiff``, under ``clips/``; :func:`cache_path`)."""
    path, fingerprint = cache_path(spec, cache_dir), _fingerprint(spec)
    cached = read_clip_cache(path, fingerprint=fingerprint)
    if cached is not None:
        return cached
    data = make_clips(spec, progress=progress)
    try:
        save_clip_cache(path, data, fingerprint=fingerprint)
    except OSError as err:  # a read-only home must not stop training
        warnings.warn(f"could not cache clips to {path} ({err}); set PIXDIFF_CACHE", stacklevel=2)
    return data
