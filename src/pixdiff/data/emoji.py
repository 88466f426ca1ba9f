"""Noto Color Emoji rendered to a captioned colour image set (~1.4k images).

Which emoji: the codepoints the font itself maps, read from its TrueType ``cmap`` table (a few
dozen lines of ``struct``; fontTools is not a dependency). Guessing over Unicode blocks would
need a block list kept up to date and a "did it render?" test that cannot tell the font's
.notdef box from a real glyph; the cmap is exact. Emoji *components* (skin-tone modifiers,
regional-indicator letters, ZWJ, variation selectors, tags, keycap) and ASCII are dropped, and
so are codepoints Python's ``unicodedata`` cannot name (newer than its Unicode version).
Multi-codepoint sequences (flags, ZWJ families, skin tones) are not rendered.

Each emoji is drawn by Pillow from the font's 109 px colour bitmaps (136x128 RGBA), composited
on white, centred in a square and resized with LANCZOS. The result is cached as an ``.npz``
(uint8 arrays only, no pickle) per image size.
"""

from __future__ import annotations

import io
import struct
import unicodedata
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont
from tqdm import tqdm

from pixdiff.data.image_set import SPLITS, ImageSet, default_cache_dir
from pixdiff.files import atomic_write

DEFAULT_FONT = Path("/usr/share/fonts/truetype/noto/NotoColorEmoji.ttf")
INSTALL_HINT = "sudo apt-get install fonts-noto-color-emoji"
FONT_SIZE = 109  # the only size of the font's CBDT colour bitmaps
MIN_SIZE, MAX_SIZE = 16, 128
_CACHE_FORMAT = 1  # bump when rendering changes, to invalidate old caches
_COMPONENT_CATEGORIES = {"Cc", "Cf", "Cn", "Co", "Cs", "Me", "Mn", "Sk", "Zs"}
_REGIONAL_INDICATORS = range(0x1F1E6, 0x1F200)
# every HOLDOUT_EVERY-th emoji (in codepoint order) is the held-out "test" split
HOLDOUT_EVERY = 10


def _font_tables(data: bytes) -> dict[bytes, tuple[int, int]]:
    """TrueType table directory: tag -> (offset, length)."""
    (num_tables,) = struct.unpack_from(">H", data, 4)
    entries = (struct.unpack_from(">4sIII", data, 12 + 16 * i) for i in range(num_tables))
    return {tag: (offset, length) for tag, _, offset, length in entries}


def _cmap_format12(data: bytes, at: int) -> set[int]:
    """Codepoints of a cmap format-12 subtable (segmented coverage, full Unicode)."""
    (num_groups,) = struct.unpack_from(">I", data, at + 12)
    codepoints: set[int] = set()
    for g in range(num_groups):
        start, end, _glyph = struct.unpack_from(">III", data, at + 16 + 12 * g)
        codepoints.update(range(start, end + 1))
    return codepoints


def _cmap_format4(data: bytes, at: int) -> set[int]:
    """Codepoints of a cmap format-4 subtable (BMP segments; glyph ids are not needed)."""
    (seg_x2,) = struct.unpack_from(">H", data, at + 6)
    ends = struct.unpack_from(f">{seg_x2 // 2}H", data, at + 14)
    starts = struct.unpack_from(f">{seg_x2 // 2}H", data, at + 16 + seg_x2)
    return {c for s, e in zip(starts, ends, strict=True) if s != 0xFFFF for c in range(s, e + 1)}


def font_codepoints(font_path: str | Path = DEFAULT_FONT) -> list[int]:
    """Sorted codepoints mapped by the font's Unicode ``cmap`` subtable (format 12, else 4)."""
    data = _require_font(font_path).read_bytes()
    try:
        offset, _ = _font_tables(data)[b"cmap"]
        (num_subtables,) = struct.unpack_from(">H", data, offset + 2)
        subtables = {}
        for i in range(num_subtables):
            platform, _encoding, sub = struct.unpack_from(">HHI", data, offset + 4 + 8 * i)
            (fmt,) = struct.unpack_from(">H", data, offset + sub)
            if platform in (0, 3):  # Unicode, Windows (Unicode encodings)
                subtables[fmt] = offset + sub
        if 12 in subtables:
            return sorted(_cmap_format12(data, subtables[12]))
        return sorted(_cmap_format4(data, subtables[4]))
    except (KeyError, struct.error) as err:
        raise ValueError(
            f"{font_path}: not a usable TrueType font (no readable Unicode cmap: {err!r}); "
            f"reinstall it with `{INSTALL_HINT} --reinstall`"
        ) from None


def _require_font(font_path: str | Path) -> Path:
    """The font's path, or a FileNotFoundError naming the package that provides it."""
    font_path = Path(font_path)
    if not font_path.is_file():
        raise FileNotFoundError(
            f"emoji font {font_path} not found; `{INSTALL_HINT}` installs it "
            f"(or pass font_path= another copy of NotoColorEmoji.ttf)"
        )
    return font_path


def caption(codepoint: int) -> str | None:
    """Lower-cased Unicode name ("red apple" for U+1F34E), or None if Python cannot name it."""
    name = unicodedata.name(chr(codepoint), "")
    return name.lower() or None


def emoji_codepoints(font_path: str | Path = DEFAULT_FONT) -> list[int]:
    """The font's stand-alone emoji: named, non-ASCII, not a component or control character."""
    return [
        c
        for c in font_codepoints(font_path)
        if c > 0x7F
        and c not in _REGIONAL_INDICATORS
        and unicodedata.category(chr(c)) not in _COMPONENT_CATEGORIES
        and caption(c) is not None
    ]


def draw_emoji(font: ImageFont.FreeTypeFont, codepoint: int) -> Image.Image | None:
    """The glyph's colour bitmap as RGBA (136x128 for Noto), or None if it draws nothing."""
    char = chr(codepoint)
    _, _, width, height = font.getbbox(char)
    canvas = Image.new("RGBA", (max(width, 1), max(height, 1)), (0, 0, 0, 0))
    try:
        ImageDraw.Draw(canvas).text((0, 0), char, font=font, embedded_color=True)
    except (OSError, RuntimeError, ValueError):  # e.g. raqm_layout() failed: no glyph to draw
        return None
    return canvas if canvas.getbbox(alpha_only=True) else None


def square_crop(canvas: Image.Image) -> Image.Image:
    """The RGBA square around the ink: as tall as the bitmap (136x128 -> the central 128x128, so
    every emoji keeps the font's scale), grown only if ink would be cut off; beyond the canvas
    it is transparent."""
    width, height = canvas.size
    left, top, right, bottom = canvas.getbbox(alpha_only=True)
    side = max(min(width, height), right - left, bottom - top)
    x0 = min(max((left + right - side) // 2, 0), max(width - side, 0))
    y0 = min(max((top + bottom - side) // 2, 0), max(height - side, 0))
    return canvas.crop((x0, y0, x0 + side, y0 + side))


def square_on_white(canvas: Image.Image, *, size: int) -> np.ndarray:
    """Centre the ink in a square (:func:`square_crop`), composite on white, resize: uint8
    (3, size, size)."""
    square = square_crop(canvas)
    white = Image.new("RGBA", square.size, (255, 255, 255, 255))
    rgb = Image.alpha_composite(white, square).convert("RGB")  # before resizing: no dark fringe
    if rgb.size != (size, size):
        rgb = rgb.resize((size, size), Image.Resampling.LANCZOS)
    return np.asarray(rgb).transpose(2, 0, 1)


def render_emoji(
    codepoints: Sequence[int] | None = None,
    *,
    size: int = 32,
    font_path: str | Path = DEFAULT_FONT,
    progress: bool = False,
) -> ImageSet:
    """Render emoji to uint8 (N, 3, size, size) with captions; all of the font's by default.

    Codepoints the font draws as nothing are left out, with a warning that counts them.
    """
    _check_size(size)
    if codepoints is None:
        codepoints = emoji_codepoints(font_path)
    font = ImageFont.truetype(str(_require_font(font_path)), FONT_SIZE)
    images = np.empty((len(codepoints), 3, size, size), dtype=np.uint8)
    kept: list[int] = []
    bar = tqdm(codepoints, desc=f"rendering emoji at {size}px", unit="emoji", disable=not progress)
    for codepoint in bar:
        canvas = draw_emoji(font, codepoint)
        if canvas is not None:
            images[len(kept)] = square_on_white(canvas, size=size)
            kept.append(codepoint)
    if len(kept) < len(codepoints):
        blank = sorted(set(codepoints) - set(kept))
        warnings.warn(
            f"{len(blank)} codepoint(s) drew nothing in {font_path} (first: U+{blank[0]:04X})",
            stacklevel=2,
        )
    captions = [caption(c) or f"u+{c:04x}" for c in kept]
    images_t = torch.from_numpy(images[: len(kept)].copy() if len(kept) < len(images) else images)
    return ImageSet(images_t, captions=captions, name=f"emoji-{size}")


def render_alpha(
    captions: Sequence[str], *, size: int, font_path: str | Path = DEFAULT_FONT
) -> torch.Tensor:
    """The alpha channel of each emoji named by its caption ("red apple"), cropped and resized
    as :func:`square_on_white` draws its colours: uint8 (N, 1, size, size), the silhouette."""
    _check_size(size)
    font = ImageFont.truetype(str(_require_font(font_path)), FONT_SIZE)
    alpha = np.empty((len(captions), 1, size, size), dtype=np.uint8)
    for i, text in enumerate(captions):
        try:
            canvas = draw_emoji(font, ord(unicodedata.lookup(text)))
        except KeyError:  # not an emoji name: caption() gave "u+XXXX"
            canvas = draw_emoji(font, int(text.removeprefix("u+"), 16))
        square = square_crop(canvas).getchannel("A")
        alpha[i, 0] = np.asarray(square.resize((size, size), Image.Resampling.LANCZOS))
    return torch.from_numpy(alpha)


def _check_size(size: int) -> None:
    """Raise a ValueError unless ``size`` is in the supported range."""
    if not MIN_SIZE <= size <= MAX_SIZE:
        raise ValueError(
            f"emoji size must be in {MIN_SIZE}..{MAX_SIZE} (the font's bitmaps are 128 px), "
            f"got {size}"
        )


def _fingerprint(font_path: Path) -> str:
    """What a cached render depends on: the font file, Python's Unicode names, the renderer."""
    stat = font_path.stat()
    return (
        f"font={stat.st_size}:{stat.st_mtime_ns} unicode={unicodedata.unidata_version} "
        f"pillow={Image.__version__} format={_CACHE_FORMAT}"
    )


def save_cache(path: Path, data: ImageSet, *, fingerprint: str) -> None:
    """Write images and captions to ``path`` atomically (temp file in the same folder + rename)."""
    buf = io.BytesIO()
    np.savez_compressed(
        buf, images=data.images.numpy(), captions=np.array(data.captions, dtype=str),
        fingerprint=np.array(fingerprint),
    )  # fmt: skip
    atomic_write(path, buf.getvalue())


def read_cache(path: Path, *, fingerprint: str | None = None) -> ImageSet | None:
    """The cached set at ``path``; None if absent or made from another font/renderer.

    A corrupt cache file (say, edited by hand) is reported with a warning and treated as absent.
    """
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as npz:
            if fingerprint is not None and str(npz["fingerprint"]) != fingerprint:
                return None
            images, captions = npz["images"], [str(c) for c in npz["captions"]]
        return ImageSet(torch.from_numpy(images), captions=captions, name=path.stem)
    except (OSError, ValueError, KeyError, EOFError) as err:
        warnings.warn(f"ignoring unreadable emoji cache {path} ({err}); rebuilding", stacklevel=2)
        return None


def emoji_split(data: ImageSet, split: str) -> ImageSet:
    """The ``"train"`` or held-out ``"test"`` part of the full set, or all of it (``"all"``).

    Emoji ``HOLDOUT_EVERY - 1``, ``2 * HOLDOUT_EVERY - 1``, ... (in codepoint order) are
    ``"test"``: a tenth of the set, spread over every Unicode block, never trained on by
    default, for measuring generalisation (``bench/cascade.py``).
    """
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; valid splits are {', '.join(SPLITS)}")
    if split == "all":
        return data
    held_out = torch.arange(len(data)) % HOLDOUT_EVERY == HOLDOUT_EVERY - 1
    rows = torch.nonzero(held_out if split == "test" else ~held_out).flatten()
    return data.subset(rows, name=f"{data.name}-{split}")


def load_emoji(
    size: int = 32,
    cache_dir: str | Path | None = None,
    *,
    font_path: str | Path = DEFAULT_FONT,
    progress: bool = True,
) -> ImageSet:
    """All of the font's emoji at ``size`` px (16..128) with captions, cached after first use.

    Args:
        size: side of the square RGB images.
        cache_dir: cache folder; default ``$PIXDIFF_CACHE`` or ``~/.cache/pixdiff``.
        font_path: NotoColorEmoji.ttf (from ``fonts-noto-color-emoji``).
        progress: show a progress bar while rendering (first use only).
    """
    _check_size(size)
    font_path = _require_font(font_path)
    path = Path(cache_dir or default_cache_dir()).expanduser() / f"emoji-{size}px.npz"
    fingerprint = _fingerprint(font_path)
    cached = read_cache(path, fingerprint=fingerprint)
    if cached is not None:
        return ImageSet(cached.images, captions=cached.captions, name=f"emoji-{size}")
    data = render_emoji(size=size, font_path=font_path, progress=progress)
    try:
        save_cache(path, data, fingerprint=fingerprint)
    except OSError as err:  # a read-only home must not stop training
        warnings.warn(f"could not cache emoji to {path} ({err}); set PIXDIFF_CACHE", stacklevel=2)
    return data
