"""A user's own control maps for a folder dataset, aligned with its images by file name.

Two layouts, as in the Hugging Face imagefolder convention and its ControlNet datasets:

- a separate folder MAPS with one map per image at the same relative path, in any image
  format (``data/cats/1.jpg`` -> ``MAPS/cats/1.png``);
- the data folder itself, whose ``metadata.jsonl`` names each image's map in a
  ``conditioning_image`` column (a path relative to the folder).

Every image needs its map, a map needs its image, and a map must have its image's shape: each
map is cropped and resized exactly as its image (:func:`pixdiff.data.folder.load_image`), which
keeps them aligned only then. The maps are read as grey when every one is grey, else as RGB.
Each problem is one line naming the file.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from pixdiff.data.folder import (
    IMAGE_EXTENSIONS,
    METADATA_FILE,
    Metadata,
    folder_metadata,
    list_images,
    load_image,
    open_image,
    without_maps,
)

GREY_MODES = ("1", "L", "LA", "La", "I", "I;16", "I;16B", "I;16L", "F")


def map_pairs(root: Path, maps: Path) -> list[tuple[Path, Path]]:
    """(image, map) for every image of the folder ``root``, in the order the folder loads."""
    meta = folder_metadata(root)
    images = without_maps(root, list_images(root), meta)
    names = [p.relative_to(root).as_posix() for p in images]
    if maps.resolve() == root.resolve():
        found = _from_metadata(root, names, meta)
    else:
        found = _by_name(root, maps, names)
    return list(zip(images, found, strict=True))


def _from_metadata(root: Path, names: list[str], meta: Metadata) -> list[Path]:
    meta_path = root / METADATA_FILE
    if not meta_path.is_file():
        raise ValueError(
            f"--control {root} (the data folder itself) reads each image's map from the "
            f'"conditioning_image" column of {meta_path}, which does not exist'
        )
    column = meta.conditioning
    missing = [n for n in names if n not in column]
    if missing:
        raise ValueError(
            f'{meta_path}: no "conditioning_image" for image {root / missing[0]} '
            f"({len(missing)} of {len(names)} images have none); every image needs its map"
        )
    return [root / column[n] for n in names]


def _by_name(root: Path, maps: Path, names: list[str]) -> list[Path]:
    if not maps.is_dir():
        raise FileNotFoundError(f"control map folder {maps} does not exist (or is not a folder)")
    available = {p.relative_to(maps).with_suffix("").as_posix(): p for p in list_images(maps)}
    found = []
    for name in names:
        stem = Path(name).with_suffix("").as_posix()
        if stem not in available:
            raise ValueError(
                f"no control map for image {root / name} in {maps} (expected {maps / stem}"
                f" with one of {', '.join(IMAGE_EXTENSIONS)}); every image needs its map"
            )
        found.append(available.pop(stem))
    if available:
        extra = next(iter(available.values()))
        raise ValueError(
            f"control map {extra} matches no image of {root} (maps are matched to images by "
            f"relative path and name); {len(available)} map(s) are left over"
        )
    return found


def folder_maps(root: Path, maps: Path, *, size: int) -> Tensor:
    """The maps of the images of ``root`` from ``maps`` (a folder, or ``root`` itself for the
    metadata column), uint8 (N, C, size, size), C 1 (all grey) or 3."""
    pairs = map_pairs(root, maps)
    modes = []
    for image_path, map_path in pairs:
        image, control = open_image(image_path), open_image(map_path)
        if image.width * control.height != control.width * image.height:
            raise ValueError(
                f"control map {map_path} is {control.width}x{control.height}, but its image "
                f"{image_path} is {image.width}x{image.height}: a map must have its image's "
                "shape (each is cropped and resized like its image)"
            )
        modes.append(control.mode)
    channels = 1 if all(mode in GREY_MODES for mode in modes) else 3
    out = np.stack([load_image(m, size=size, channels=channels) for _, m in pairs])
    return torch.from_numpy(out)
