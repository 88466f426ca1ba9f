"""The in-memory clip set every clip loader returns: :class:`ImageSet`'s counterpart for video.

Clips stay compact as uint8 (N, F, C, H, W); :func:`pixdiff.data.to_model_space` turns a batch
into float [-1, 1] (it works on any shape), as for images.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from pixdiff.data.image_set import ImageSet, count_classes
from pixdiff.data.motions import MOTIONS


@dataclass(frozen=True)
class ClipSet:
    """A captioned and/or labelled set of clips held in memory.

    Attributes:
        clips: (N, F, C, H, W) uint8, C in {1, 3}.
        captions: one string per clip, or None.
        labels: (N,) int64 object (class) ids, or None.
        class_names: the name of each object id (``class_names[label]``), or None.
        motions: (N,) int64 motion ids, indices into :data:`pixdiff.data.motions.MOTIONS`
            (the motion classifier's classes), or None (a user's clips).
        name: short name for logs and run configs, e.g. ``"clips-fashion-mnist-train"``.
    """

    clips: Tensor
    captions: list[str] | None = None
    labels: Tensor | None = None
    class_names: list[str] | None = None
    motions: Tensor | None = None
    name: str = "clips"

    def __post_init__(self) -> None:
        if self.clips.dtype != torch.uint8 or self.clips.ndim != 5:
            raise ValueError(
                f"ClipSet {self.name!r}: clips must be uint8 (N, F, C, H, W), "
                f"got {self.clips.dtype} {tuple(self.clips.shape)}"
            )
        n = len(self.clips)
        for what, ids, top in (
            ("labels", self.labels, None if self.class_names is None else len(self.class_names)),
            ("motions", self.motions, len(MOTIONS)),
        ):
            if ids is None:
                continue
            if ids.dtype != torch.int64 or ids.shape != (n,):
                raise ValueError(
                    f"ClipSet {self.name!r}: {what} must be int64 of shape ({n},), "
                    f"got {ids.dtype} {tuple(ids.shape)}"
                )
            if n and (ids.min() < 0 or (top is not None and ids.max() >= top)):
                raise ValueError(f"ClipSet {self.name!r}: {what} outside 0..{top}")
        if self.captions is not None and len(self.captions) != n:
            raise ValueError(f"ClipSet {self.name!r}: {len(self.captions)} captions for {n} clips")

    def __len__(self) -> int:
        return len(self.clips)

    @property
    def images(self) -> Tensor:
        """The clips, under the name the trainer's batching reads from an ImageSet
        (:func:`pixdiff.data.batches` works on either: a batch's images are then clips)."""
        return self.clips

    @property
    def control(self) -> None:
        """Clips carry no control maps (what the batching reads from an ImageSet)."""
        return None

    @property
    def frames(self) -> int:
        """Frames per clip, F."""
        return self.clips.shape[1]

    @property
    def num_classes(self) -> int | None:
        """Number of objects: ``len(class_names)``, else ``max(label) + 1``, else None."""
        return count_classes(self.class_names, self.labels)

    def subset(self, rows: Tensor, *, name: str) -> ClipSet:
        """The clips (and their captions, labels and motions) at ``rows``, a 1-D index tensor."""
        captions = None if self.captions is None else [self.captions[i] for i in rows.tolist()]
        labels = None if self.labels is None else self.labels[rows]
        motions = None if self.motions is None else self.motions[rows]
        return ClipSet(self.clips[rows], captions, labels, self.class_names, motions, name)

    def frame_set(self) -> ImageSet:
        """Every frame as an image set (N * F images, clip by clip), each frame with its clip's
        label and caption: the data of a per-frame image model and of frame-level FD."""
        f = self.frames
        labels = None if self.labels is None else self.labels.repeat_interleave(f)
        captions = None if self.captions is None else [c for c in self.captions for _ in range(f)]
        return ImageSet(
            self.clips.flatten(0, 1), labels, self.class_names, captions, f"{self.name}-frames"
        )
