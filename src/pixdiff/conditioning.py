"""Conditioning passed from the denoiser to a network: one typed record, no catch-all dict.

A network is called as ``net(x_t, c_noise, cond)`` where ``cond`` is a :class:`Cond` or None.
Each field is optional; a network raises a ValueError when given a field it was not built for,
so a misrouted condition is an error rather than silently ignored.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace

import torch
from torch import Tensor


@dataclass(frozen=True)
class Cond:
    """Per-sample conditioning; every tensor has the batch as its first dimension.

    Attributes:
        label: (N,) int64 class ids; the id ``num_classes`` is the null (unconditional) label.
        context: (N, L, D) token embeddings for cross-attention (text).
        context_mask: (N, L) bool, True where a token is real (not padding).
        pooled: (N, D) pooled embedding added to the timestep embedding.
        low_res: (N, C, h, w) low-resolution image for super-resolution models, already noised
            by conditioning augmentation (see :mod:`pixdiff.low_res`).
        low_res_noise: (N,) float, the augmentation time t in [0, 1] of ``low_res`` on the
            run's ``sr.aug_schedule`` (0: the clean low-res image).
        guidance: (N,) float, the classifier-free guidance scale w as an input, for a network
            distilled from a guided teacher (guided distillation, Meng et al. 2023); sampled
            with one pass per step instead of the two of CFG.
        self_cond: (N, C, H, W) the denoiser's previous x0 estimate of the same samples, for a
            self-conditioned network (Chen et al. 2023, "Analog Bits", Sec. 3); absent: zeros,
            as at the first step. Filled in at sampling time by
            :class:`pixdiff.self_conditioning.SelfConditioning`, never by the user.
        control: (N, C', H, W) a spatial control map in [-1, 1] at the image's size (edges,
            sketch, mask, colour layout; :mod:`pixdiff.data.control`): concatenated to x_t by a
            network trained with it, or read by a ControlNet adapter
            (:mod:`pixdiff.nets.control`). All zeros is the null map (no uint8 map gives 0),
            what a dropped map is replaced by in training.
        independent_frames: (N,) bool, for a video network (:mod:`pixdiff.nets.video`) only:
            True where a clip's frames are unrelated images, so each frame attends only to
            itself (joint image and video training, Ho et al. 2022a, Sec. 3). Set by the
            trainer's image share (``data.image_share``); image networks reject it.
        known: (N, F, C + 1, H, W), for a video network trained with known frames only
            (``known_frames``): per frame, the given frame's pixels (zeros where the frame is
            not given) and a mask channel, 1 on given frames (Ho et al. 2022a, Sec. 3.1;
            Blattmann et al. 2023, SVD, Sec. 4.4). Concatenated to x_t as a control map is;
            absent: nothing given, as all zeros. Built by :mod:`pixdiff.pipelines.known_frames`.
    """

    label: Tensor | None = None
    context: Tensor | None = None
    context_mask: Tensor | None = None
    pooled: Tensor | None = None
    low_res: Tensor | None = None
    low_res_noise: Tensor | None = None
    guidance: Tensor | None = None
    self_cond: Tensor | None = None
    control: Tensor | None = None
    independent_frames: Tensor | None = None
    known: Tensor | None = None

    def present(self) -> list[str]:
        """Names of the fields that are set."""
        return [f.name for f in fields(self) if getattr(self, f.name) is not None]

    def map(self, fn) -> Cond:
        """Apply ``fn`` to every tensor that is set, returning a new Cond."""
        return replace(self, **{n: fn(getattr(self, n)) for n in self.present()})

    def index(self, idx: Tensor | slice) -> Cond:
        """Select samples along the batch dimension."""
        return self.map(lambda v: v[idx])

    def to(self, device: torch.device | str) -> Cond:
        return self.map(lambda v: v.to(device))

    @staticmethod
    def cat(conds: list[Cond]) -> Cond:
        """Concatenate along the batch dimension; all must set the same fields."""
        names = conds[0].present()
        for c in conds[1:]:
            if c.present() != names:
                raise ValueError(f"cannot concatenate Cond with fields {names} and {c.present()}")
        return Cond(**{n: torch.cat([getattr(c, n) for c in conds]) for n in names})


def merge(cond: Cond | None, extra: Cond | None) -> Cond | None:
    """``cond`` with the fields of ``extra`` added (e.g. a low-res image to a class condition);
    a field set in both is an error."""
    if cond is None or extra is None:
        return extra if cond is None else cond
    both = sorted(set(cond.present()) & set(extra.present()))
    if both:
        raise ValueError(f"conditioning fields {both} are given twice")
    return replace(cond, **{n: getattr(extra, n) for n in extra.present()})


def without_self_cond(cond: Cond) -> Cond | None:
    """``cond`` less its previous x0 estimate (None when nothing else is set)."""
    rest = replace(cond, self_cond=None)
    return rest if rest.present() else None


def check_supported(cond: Cond | None, supported: set[str], who: str) -> None:
    """Raise a ValueError naming the fields ``who`` cannot consume."""
    if cond is None:
        return
    extra = [n for n in cond.present() if n not in supported]
    if extra:
        raise ValueError(
            f"{who} got conditioning {extra} it was not built for; "
            f"it accepts {sorted(supported) or 'no conditioning'}"
        )
