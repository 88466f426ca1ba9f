"""Control maps of a dataset: which map a run is steered by (:class:`ControlConfig`), computed
once per image set (:mod:`pixdiff.data.control_signals`) or read from a user's folder
(:mod:`pixdiff.data.control_folder`), and cached like the rendered emoji.

A computed map is a pure function of the images, so the cache file is named by a SHA-256 of the
images' bytes and of everything the map depends on; a cache written by another version of the
formulas (``CONTROL_FORMAT``) is never read. The emoji's silhouette is their alpha channel
(rendered again, without the white background); any other image set's is a threshold against
its background.
"""

from __future__ import annotations

import hashlib
import io
import warnings
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from pixdiff.data import control_signals as signals
from pixdiff.data.control_folder import folder_maps
from pixdiff.data.emoji import render_alpha
from pixdiff.data.image_set import ImageSet, default_cache_dir
from pixdiff.files import atomic_write

CONTROL_KINDS = ("edges", "sketch", "mask", "layout")  # computed from the images
CONTROL_FORMAT = 1  # bump when a formula or threshold of control_signals changes
CHUNK = 4096  # images per pass: bounds the float32 working memory


@dataclass(frozen=True)
class ControlConfig:
    """The spatial control map a model is steered by (docs/concepts.md, Section 18).

    Attributes:
        kind: none | edges | sketch | mask | layout, or the path of a folder of maps named as
            the data folder's images (the data folder itself: its metadata.jsonl
            ``conditioning_image`` column).
        dropout: the probability that a training map is replaced by the null map (zeros), so
            that the model also learns the map-less branch that ``--control-guidance`` needs
            (InstructPix2Pix, Brooks et al. 2023, Sec. 3.3); each condition is dropped on its
            own (labels by ``diffusion.label_dropout``, prompts by ``text.prompt_dropout``).
        layout_cells: a layout's side in cells (area-downsampled to cells x cells).
    """

    kind: str = "none"
    dropout: float = 0.1
    layout_cells: int = 8

    def __post_init__(self) -> None:
        if not self.kind:
            raise ValueError(f"control.kind is none, {', '.join(CONTROL_KINDS)} or a map folder")
        if not 0 <= self.dropout < 1:
            raise ValueError(f"control.dropout must be in [0, 1), got {self.dropout}")
        if not isinstance(self.layout_cells, int) or self.layout_cells < 1:
            raise ValueError(f"control.layout_cells must be an int >= 1, got {self.layout_cells}")

    @property
    def enabled(self) -> bool:
        return self.kind != "none"

    @property
    def from_folder(self) -> bool:
        """Whether the maps are a user's (a folder), not computed from the images."""
        return self.enabled and self.kind not in CONTROL_KINDS


def compute_maps(
    images: Tensor, kind: str, *, cells: int = 8, alpha: Tensor | None = None
) -> Tensor:
    """The ``kind`` maps of uint8 (N, C, H, W) images (``alpha``: their (N, 1, H, W) alpha, for
    the mask), uint8 (N, C', H, W), computed CHUNK images at a time."""
    if kind not in CONTROL_KINDS:
        raise ValueError(f"cannot compute {kind!r} maps; computed kinds: {list(CONTROL_KINDS)}")
    parts = []
    for start in range(0, len(images), CHUNK):
        x = images[start : start + CHUNK]
        if kind == "mask":
            a = None if alpha is None else alpha[start : start + CHUNK]
            parts.append(signals.mask(x, a))
        elif kind == "layout":
            parts.append(signals.layout(x, cells))
        else:
            parts.append(getattr(signals, kind)(x))
    return torch.cat(parts)


def map_channels(kind: str, image_channels: int) -> int:
    """Channels of a computed map: the image's for a layout, else 1."""
    return image_channels if kind == "layout" else 1


def with_control(
    data: ImageSet, control: ControlConfig | None, *, source: str, cache_dir=None
) -> ImageSet:
    """``data`` with its control maps (unchanged when control is off). ``source`` is what it was
    loaded from: ``"emoji"`` (whose masks are their alpha), a dataset name, or the folder that
    a map folder is aligned with."""
    if control is None or not control.enabled:
        return data
    size = data.images.shape[-1]
    if control.from_folder:
        if not Path(source).expanduser().is_dir():
            raise ValueError(
                f"--control {control.kind}: a folder of maps needs a folder dataset (--data "
                f"FOLDER), not {source!r}"
            )
        maps = folder_maps(Path(source).expanduser(), Path(control.kind).expanduser(), size=size)
        if len(maps) != len(data):
            raise ValueError(
                f"{len(data)} of the {len(maps)} images under {source} were read "
                "(data.skip_bad_images): control maps need every image; fix or remove the others"
            )
        return replace(data, control=maps)
    alpha = source == "emoji" and control.kind == "mask"
    return replace(data, control=cached_maps(data, control, alpha=alpha, cache_dir=cache_dir))


def cached_maps(data: ImageSet, control: ControlConfig, *, alpha: bool, cache_dir=None) -> Tensor:
    """The computed maps of ``data``, from the cache when it has them."""
    digest = hashlib.sha256(data.images.numpy().tobytes())
    key = f"{control.kind} cells={control.layout_cells} alpha={alpha} format={CONTROL_FORMAT}"
    digest.update(key.encode())
    folder = Path(cache_dir or default_cache_dir()).expanduser() / "control"
    path = folder / f"{control.kind}-{digest.hexdigest()[:24]}.npz"
    maps = _read(path)
    if maps is not None and maps.shape[0] == len(data):
        return maps
    size = data.images.shape[-1]
    a = render_alpha(data.captions, size=size) if alpha else None
    maps = compute_maps(data.images, control.kind, cells=control.layout_cells, alpha=a)
    buf = io.BytesIO()
    np.savez_compressed(buf, maps=maps.numpy())
    try:
        atomic_write(path, buf.getvalue())
    except OSError as err:  # a read-only home must not stop training
        warnings.warn(f"could not cache control maps to {path} ({err})", stacklevel=2)
    return maps


def _read(path: Path) -> Tensor | None:
    """Cached maps at ``path``; None if absent or unreadable (with a warning)."""
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as npz:
            return torch.from_numpy(npz["maps"])
    except (OSError, ValueError, KeyError, EOFError) as err:
        warnings.warn(f"ignoring unreadable control map cache {path} ({err})", stacklevel=3)
        return None
