"""Training batches: shuffled, sharded and resumable.

Batches are planned by :class:`BatchPlan` so that batch ``k`` of epoch ``e`` on rank ``r`` is a
pure function of ``(seed, e, k, r)``: a trainer resumes mid-epoch exactly from its step count.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import torch
from torch import Tensor

from pixdiff.data.image_set import ImageSet, to_model_space


class Batch(NamedTuple):
    """One training batch: images (B, C, H, W) float [-1, 1] (a ClipSet's: clips (B, F, C,
    H, W)), labels (B,) or None, captions, and control maps (B, C', H, W) float [-1, 1] or
    None (flipped with their images)."""

    images: Tensor
    labels: Tensor | None
    captions: list[str] | None
    control: Tensor | None = None


@dataclass(frozen=True)
class BatchPlan:
    """Which items form batch ``k`` of epoch ``e`` on one rank: shuffled, sharded, resumable.

    Each epoch draws a permutation (and a horizontal-flip coin per item) from
    ``numpy.random.default_rng([seed, epoch])``. The permutation is cut into ``world_size``
    disjoint, equal slices (``num_items % world_size`` items sit out that epoch, a different
    few each epoch) and rank ``r`` walks its slice in batches. Nothing depends on earlier
    batches, so a resumed run sees exactly the batches it would have seen. The flip coins are
    drawn whether or not ``flip`` is set, so turning flips on does not change the order.
    """

    num_items: int
    batch_size: int
    seed: int = 0
    rank: int = 0
    world_size: int = 1
    flip: bool = False
    drop_last: bool = True

    def __post_init__(self) -> None:
        if self.batch_size < 1 or self.world_size < 1 or self.seed < 0:
            raise ValueError(
                f"need batch_size >= 1, world_size >= 1 and seed >= 0; got batch_size="
                f"{self.batch_size}, world_size={self.world_size}, seed={self.seed}"
            )
        if not 0 <= self.rank < self.world_size:
            raise ValueError(f"rank {self.rank} is outside [0, world_size={self.world_size})")
        if self.steps_per_epoch == 0:
            raise ValueError(
                f"{self.num_items} images cannot fill one batch of {self.batch_size} on each of "
                f"{self.world_size} rank(s); lower the batch size or use more images"
            )

    @property
    def per_rank(self) -> int:
        """Items each rank sees per epoch."""
        return self.num_items // self.world_size

    @property
    def steps_per_epoch(self) -> int:
        """Batches per epoch (identical on every rank)."""
        if self.drop_last:
            return self.per_rank // self.batch_size
        return math.ceil(self.per_rank / self.batch_size)

    def locate(self, step: int) -> tuple[int, int]:
        """Global step -> (epoch, batch index within the epoch)."""
        return divmod(step, self.steps_per_epoch)

    def epoch_order(self, epoch: int) -> tuple[Tensor, Tensor]:
        """This rank's item indices (per_rank,) int64 and flip flags (per_rank,) bool."""
        rng = np.random.default_rng([self.seed, epoch])
        perm = rng.permutation(self.num_items)
        flips = rng.random(self.num_items) < 0.5
        if not self.flip:
            flips[:] = False
        start = self.rank * self.per_rank
        shard = slice(start, start + self.per_rank)
        return torch.from_numpy(perm[shard]), torch.from_numpy(flips[shard])

    def batch(self, epoch: int, k: int) -> tuple[Tensor, Tensor]:
        """Item indices and flip flags of batch ``k`` of ``epoch`` on this rank."""
        if not 0 <= k < self.steps_per_epoch:
            raise IndexError(f"batch {k} outside epoch of {self.steps_per_epoch} batches")
        order, flips = self.epoch_order(epoch)
        rows = slice(k * self.batch_size, (k + 1) * self.batch_size)
        return order[rows], flips[rows]


def gather_batch(
    data: ImageSet, indices: Tensor, flips: Tensor, *, device: torch.device | str | None = None
) -> Batch:
    """Select items, move them as uint8 (4x less traffic), flip, and convert to model space."""
    images = data.images[indices]
    if flips.any():
        images[flips] = images[flips].flip(-1)
    images = to_model_space(images.to(device, non_blocking=True))
    labels = None if data.labels is None else data.labels[indices].to(device)
    captions = None if data.captions is None else [data.captions[i] for i in indices.tolist()]
    control = None
    if data.control is not None:
        control = data.control[indices]
        if flips.any():
            control[flips] = control[flips].flip(-1)
        control = to_model_space(control.to(device, non_blocking=True))
    return Batch(images, labels, captions, control)


def batches(
    data: ImageSet,
    *,
    batch_size: int,
    seed: int = 0,
    start_step: int = 0,
    rank: int = 0,
    world_size: int = 1,
    flip: bool = False,
    drop_last: bool = True,
    device: torch.device | str | None = None,
) -> Iterator[Batch]:
    """Endless training batches, starting at global step ``start_step`` (for resuming).

    The batch yielded for global step ``s`` is ``BatchPlan.batch(*plan.locate(s))``: the same
    whether the run started at 0 or resumed at ``s``. Per-rank batches have ``batch_size``
    items; the global batch is ``batch_size * world_size``.
    """
    plan = BatchPlan(
        num_items=len(data), batch_size=batch_size, seed=seed, rank=rank,
        world_size=world_size, flip=flip, drop_last=drop_last,
    )  # fmt: skip
    epoch, first = plan.locate(start_step)
    while True:
        order, flips = plan.epoch_order(epoch)
        for k in range(first, plan.steps_per_epoch):
            rows = slice(k * batch_size, (k + 1) * batch_size)
            yield gather_batch(data, order[rows], flips[rows], device=device)
        epoch, first = epoch + 1, 0
