"""Any folder of images, with optional labels/captions from ``metadata.jsonl``.

Follows the Hugging Face ``imagefolder`` convention: ``metadata.jsonl`` at the folder's root
holds one JSON object per line with ``file_name`` (relative to the folder) and ``label`` (an
int id or a class-name string) and/or ``text`` (a caption), and optionally
``conditioning_image``, the image's control map (read by :mod:`pixdiff.data.control_folder`).
Other columns are ignored with a warning. Images are found recursively (PNG/JPEG/WebP),
sorted by relative path, resized on the shorter side and centre-cropped to a square, and
converted to grey or RGB.
"""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from PIL import Image, ImageOps
from tqdm import tqdm

from pixdiff.data.image_set import ImageSet, check_fits_in_memory

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp")
METADATA_FILE = "metadata.jsonl"
_COLUMNS = ("file_name", "label", "text", "conditioning_image")
# input images beyond this many pixels are refused before decoding (a decompression bomb: a
# small PNG can declare 20000 x 20000 pixels and take gigabytes once decoded)
MAX_SIDE = 8192
MAX_PIXELS = MAX_SIDE * MAX_SIDE
MAX_LABEL = 2**31 - 1  # label ids beyond this are typos (the trainer also caps the class count)


class ImageTooLarge(ValueError):
    """An image declares more than MAX_PIXELS pixels; it was not decoded."""


def list_images(root: Path) -> list[Path]:
    """Image files under ``root`` (recursive, hidden files/folders skipped), sorted by path."""
    found = (
        p
        for p in root.rglob("*")
        if p.suffix.lower() in IMAGE_EXTENSIONS
        and p.is_file()
        and not any(part.startswith(".") for part in p.relative_to(root).parts)
    )
    return sorted(found, key=lambda p: p.relative_to(root).as_posix())


@dataclass
class Metadata:
    """Per-file columns read from ``metadata.jsonl`` (keys are posix paths relative to root)."""

    labels: dict[str, int | str]
    texts: dict[str, str]
    conditioning: dict[str, str] = field(default_factory=dict)  # control map, relative path


def _parse_line(line: str, where: str) -> dict:
    """One metadata line as a checked dict; ``where`` is "path:line" for error messages."""
    try:
        row = json.loads(line)
    except json.JSONDecodeError as err:
        raise ValueError(f"{where}: invalid JSON ({err.msg})") from None
    if not isinstance(row, dict) or not isinstance(row.get("file_name"), str):
        raise ValueError(f'{where}: expected an object with a "file_name" string, got {line!r}')
    label = row.get("label")
    if label is not None and (isinstance(label, bool) or not isinstance(label, int | str)):
        raise ValueError(f'{where}: "label" must be an int or a class-name string, got {label!r}')
    if isinstance(label, int) and not 0 <= label <= MAX_LABEL:
        raise ValueError(f'{where}: "label" must be in [0, {MAX_LABEL}], got {label}')
    for column in ("text", "conditioning_image"):
        if column in row and not isinstance(row[column], str):
            raise ValueError(f'{where}: "{column}" must be a string, got {row[column]!r}')
    return row


def read_metadata(path: Path) -> Metadata:
    """Parse ``metadata.jsonl``; errors name the file and line number."""
    meta, extra = Metadata({}, {}), set()
    try:
        lines = path.read_text(encoding="utf-8-sig").splitlines()  # tolerate a BOM
    except UnicodeDecodeError as err:
        raise ValueError(
            f"{path} is not UTF-8 text (byte {err.start}: {err.reason}); it must hold one JSON "
            "object per line"
        ) from None
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        where = f"{path}:{number}"
        row = _parse_line(line, where)
        name = Path(row["file_name"]).as_posix()
        if name in meta.labels or name in meta.texts:
            raise ValueError(f"{where}: {name!r} is listed twice")
        if row.get("label") is not None:
            if meta.labels and type(row["label"]) is not type(next(iter(meta.labels.values()))):
                raise ValueError(f"{where}: labels mix ints and strings; use one kind throughout")
            meta.labels[name] = row["label"]
        if "text" in row:
            meta.texts[name] = row["text"]
        if "conditioning_image" in row:
            meta.conditioning[name] = row["conditioning_image"]
        extra.update(set(row) - set(_COLUMNS))
    if extra:
        warnings.warn(
            f"{path}: ignoring columns {sorted(extra)}; pixdiff reads {list(_COLUMNS)}",
            stacklevel=3,
        )
    return meta


def metadata_column(
    values: dict, names: list[str], column: str, path: Path, *, item: str = "image"
) -> list | None:
    """``values`` for each image (or other ``item``: a clip) in order; None if the column is
    absent; error if incomplete."""
    if not values:
        return None
    missing = [n for n in names if n not in values]
    if missing:
        raise ValueError(
            f'{path}: no "{column}" for {len(missing)} of {len(names)} {item}s (first: '
            f"{missing[0]!r}); add a line for every {item} or move the others out of the folder"
        )
    unknown = sorted(set(values) - set(names))
    if unknown:
        raise ValueError(
            f"{path}: lists {len(unknown)} file(s) not found as {item}s in the folder "
            f"(first: {unknown[0]!r}); fix file_name (relative to the folder)"
        )
    return [values[n] for n in names]


def label_ids(labels: list[int | str]) -> tuple[torch.Tensor, list[str] | None]:
    """Int labels as they are; string labels -> ids in name order, with the class names."""
    if isinstance(labels[0], int):
        return torch.tensor(labels, dtype=torch.int64), None
    class_names = sorted(set(labels))
    index = {name: i for i, name in enumerate(class_names)}
    return torch.tensor([index[x] for x in labels], dtype=torch.int64), class_names


def to_mode(image: Image.Image, channels: Literal[1, 3]) -> Image.Image:
    """Convert any Pillow mode to ``L``/``RGB``; transparency is composited on white."""
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):  # 16-bit grey PNG: scale, don't clip
        grey = np.asarray(image, dtype=np.float64) / 257.0
        image = Image.fromarray(grey.round().clip(0, 255).astype(np.uint8), mode="L")
    has_alpha = image.mode in ("RGBA", "LA", "PA", "RGBa", "La") or (
        image.mode == "P" and "transparency" in image.info
    )
    if has_alpha:
        rgba = image.convert("RGBA")
        image = Image.alpha_composite(Image.new("RGBA", rgba.size, "white"), rgba)
    return image.convert("L" if channels == 1 else "RGB")


def open_image(path: str | Path) -> Image.Image:
    """The decoded, EXIF-rotated image at ``path``; one over MAX_PIXELS is refused from its
    header, before decoding (Pillow's DecompressionBombError/Warning as well). Every problem is
    a one-line error naming the file: FileNotFoundError, else ValueError."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as image:  # lazy: reads the header only
                if image.width * image.height > MAX_PIXELS:
                    raise ImageTooLarge(_too_large(path, f"{image.width}x{image.height}"))
                image.load()  # decode now, so a truncated file fails here
                return ImageOps.exif_transpose(image)
    except ImageTooLarge:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise ImageTooLarge(_too_large(path, "too large")) from None
    except FileNotFoundError:
        raise FileNotFoundError(f"image {path} does not exist") from None
    except (OSError, SyntaxError, ValueError, EOFError) as err:
        raise ValueError(f"cannot read image {path}: {err}") from None


def _too_large(path: str | Path, size: str) -> str:
    return (
        f"image {path} is {size}: over pixdiff's limit of {MAX_PIXELS:,} pixels "
        f"({MAX_SIDE} x {MAX_SIDE}); it was not decoded. Shrink it first"
    )


def load_image(path: Path, *, size: int, channels: Literal[1, 3]) -> np.ndarray:
    """One image as uint8 (channels, size, size): EXIF-rotated, converted, cropped, resized.

    Raises ValueError (FileNotFoundError) naming the file if it is not a readable image.
    """
    image = to_mode(open_image(path), channels)
    # shorter side -> size, centre crop (ImageOps.fit crops first, then resizes once)
    image = ImageOps.fit(image, (size, size), method=Image.Resampling.LANCZOS)
    array = np.asarray(image)
    return array[None] if channels == 1 else array.transpose(2, 0, 1)


def read_images(
    paths: list[Path], *, size: int, channels: Literal[1, 3], skip_bad_images: bool, progress: bool
) -> tuple[torch.Tensor, list[int], list[Path]]:
    """Decode ``paths`` into uint8 (N, C, size, size); returns (images, kept indices, skipped)."""
    check_fits_in_memory(len(paths), channels, size, f"the images under {paths[0].parent}")
    images = np.empty((len(paths), channels, size, size), dtype=np.uint8)
    kept: list[int] = []
    bad: list[Path] = []
    # progress: a bar on a terminal only (disable=None), so piped stderr keeps just the messages
    bar = tqdm(paths, desc="loading images", unit="img", disable=None if progress else True)
    for i, path in enumerate(bar):
        try:
            images[len(kept)] = load_image(path, size=size, channels=channels)
        except (OSError, ValueError) as err:
            if not skip_bad_images:
                raise ValueError(
                    f"{err}. Fix or delete the file, or pass skip_bad_images=True to leave out "
                    "unreadable images"
                ) from None
            bad.append(path)
            continue
        kept.append(i)
    return torch.from_numpy(images[: len(kept)].copy() if bad else images), kept, bad


def folder_metadata(root: Path) -> Metadata:
    """The folder's metadata.jsonl, or empty columns when it has none."""
    meta_path = root / METADATA_FILE
    return read_metadata(meta_path) if meta_path.is_file() else Metadata({}, {})


def without_maps(root: Path, paths: list[Path], meta: Metadata) -> list[Path]:
    """``paths`` less the control maps the metadata names (``conditioning_image``): a map stored
    inside the data folder is not a training image."""
    maps = {Path(m).as_posix() for m in meta.conditioning.values()}
    return [p for p in paths if p.relative_to(root).as_posix() not in maps]


def _annotations(
    root: Path, names: list[str], meta: Metadata, *, labels_from_dirs: bool
) -> tuple[list | None, list[str] | None]:
    """Per-image raw labels and captions, from metadata.jsonl and/or the folder names."""
    meta_path = root / METADATA_FILE
    labels = metadata_column(meta.labels, names, "label", meta_path)
    texts = metadata_column(meta.texts, names, "text", meta_path)
    if labels_from_dirs:
        if labels is not None:
            raise ValueError(f"{meta_path} has labels; drop labels_from_dirs=True or the column")
        at_root = [n for n in names if "/" not in n]
        if at_root:
            raise ValueError(
                f"labels_from_dirs=True needs every image in a class subfolder of {root}, "
                f"but {len(at_root)} are not (first: {at_root[0]!r})"
            )
        labels = [n.split("/", 1)[0] for n in names]
    return labels, texts


def _find_images(root: Path) -> list[Path]:
    """``list_images(root)``, with a clear error for a missing or image-less folder."""
    if not root.is_dir():
        raise FileNotFoundError(f"image folder {root} does not exist (or is not a folder)")
    paths = list_images(root)
    if not paths:
        raise ValueError(f"no images ({', '.join(IMAGE_EXTENSIONS)}) found under {root}")
    return paths


def load_folder(
    root: str | Path,
    *,
    image_size: int,
    channels: Literal[1, 3] = 3,
    skip_bad_images: bool = False,
    labels_from_dirs: bool = False,
    progress: bool = True,
) -> ImageSet:
    """Load every image under ``root`` as uint8 (N, channels, image_size, image_size).

    Args:
        root: folder of PNG/JPEG/WebP images (searched recursively), optionally with a
            ``metadata.jsonl`` giving ``label`` and/or ``text`` per ``file_name``.
        image_size: side of the square output (shorter side resized, then centre-cropped).
        channels: 1 for grey (``L``), 3 for RGB; transparency is composited on white.
        skip_bad_images: leave out unreadable images with a warning that counts them, instead
            of raising a ValueError naming the first one.
        labels_from_dirs: label each image by its top-level subfolder (``root/<class>/...``).
        progress: show a progress bar while decoding.
    """
    root = Path(root).expanduser()
    if channels not in (1, 3) or image_size < 1:
        raise ValueError(f"need channels 1 or 3 and image_size >= 1, got {channels}, {image_size}")
    meta = folder_metadata(root)
    paths = without_maps(root, _find_images(root), meta)
    names = [p.relative_to(root).as_posix() for p in paths]
    raw_labels, texts = _annotations(root, names, meta, labels_from_dirs=labels_from_dirs)
    images, kept, bad = read_images(
        paths, size=image_size, channels=channels, skip_bad_images=skip_bad_images,
        progress=progress,
    )  # fmt: skip
    if bad:
        warnings.warn(
            f"skipped {len(bad)} unreadable image(s) of {len(paths)} under {root} "
            f"(first: {bad[0].relative_to(root)})",
            stacklevel=2,
        )
    if not kept:
        raise ValueError(f"none of the {len(paths)} images under {root} could be read")
    labels, class_names = label_ids(raw_labels) if raw_labels else (None, None)
    return ImageSet(
        images=images,
        labels=None if labels is None else labels[kept],
        class_names=class_names,
        captions=None if texts is None else [texts[i] for i in kept],
        name=root.name,
    )
