"""Scores of spatial control (bench/control.py): how well samples follow their maps, and how
well they follow their prompts.

- **Edge F1 with a tolerance** (the boundary F-measure of the BSDS benchmark, Martin et al.
  2004, with matching by distance instead of a one-to-one assignment): precision is the share of
  a sample's edge pixels that lie within ``tolerance`` pixels (the chessboard distance) of an
  edge pixel of its map, recall the share of the map's edge pixels within that distance of one
  of the sample's; F1 = 2 P R / (P + R). The sample's edges are the same Canny edges the map was
  made with (:mod:`pixdiff.data.control_signals`).
- **Mask IoU** (a silhouette map): |A and B| / |A or B| of the sample's silhouette and the map.
- **Layout L1** (a colour layout): the mean absolute difference of the sample's layout and the
  map, in [0, 1].
- **Prompt retrieval** (top-k in a feature space, as bench/text_prompts.py): the share of
  samples among whose k nearest real images (Euclidean, in an extractor's features) one has the
  sample's own prompt or class.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from pixdiff.data import compute_maps
from pixdiff.data.control_signals import canny


def _near(edges: Tensor, tolerance: int) -> Tensor:
    """bool (N, 1, H, W): within ``tolerance`` pixels (chessboard) of an edge pixel."""
    k = 2 * tolerance + 1
    return F.max_pool2d(edges.float(), k, stride=1, padding=tolerance) > 0


def edge_f1(pred: Tensor, ref: Tensor, *, tolerance: int = 1) -> Tensor:
    """Per-image F1 (N,) float64 of the edge maps ``pred`` and ``ref``, bool (N, 1, H, W),
    matched within ``tolerance`` pixels. Two empty maps agree (1); one empty map scores 0."""
    pred, ref = pred.bool(), ref.bool()
    dims = (1, 2, 3)
    n_pred, n_ref = pred.sum(dims).double(), ref.sum(dims).double()
    precision = (pred & _near(ref, tolerance)).sum(dims) / n_pred.clamp_min(1)
    recall = (ref & _near(pred, tolerance)).sum(dims) / n_ref.clamp_min(1)
    f1 = 2 * precision * recall / (precision + recall).clamp_min(1e-12)
    return torch.where((n_pred == 0) & (n_ref == 0), torch.ones_like(f1), f1)


def mask_iou(pred: Tensor, ref: Tensor) -> Tensor:
    """Per-image IoU (N,) float64 of two masks (N, 1, H, W), nonzero = inside; 1 if both empty."""
    pred, ref = pred.bool(), ref.bool()
    inter = (pred & ref).sum((1, 2, 3)).double()
    union = (pred | ref).sum((1, 2, 3)).double()
    return torch.where(union == 0, torch.ones_like(union), inter / union.clamp_min(1))


def agreement(kind: str, samples: Tensor, maps: Tensor, sources: Tensor, *, cells: int = 8):
    """How well uint8 samples (N, C, H, W) follow the ``kind`` maps (N, C', H, W) they were
    drawn from (``sources``: the images the maps were made from): {metric name: (N,) float64}.
    edges and sketch: edge F1 at 1 px against the source's edges; mask: IoU; layout: L1."""
    if kind in ("edges", "sketch"):
        return {"edge_f1": edge_f1(canny(samples), canny(sources), tolerance=1)}
    own = compute_maps(samples, kind, cells=cells)
    if kind == "mask":
        return {"mask_iou": mask_iou(own, maps)}
    if kind == "layout":
        diff = (own.double() - maps.double()).abs() / 255
        return {"layout_l1": diff.mean((1, 2, 3))}
    raise ValueError(f"no agreement measure for maps of kind {kind!r}")


def retrieval(feats: Tensor, bank: Tensor, keys: Sequence, bank_keys: Sequence, *, k: int = 5):
    """(N,) float64: 1 where one of the k nearest ``bank`` rows of a sample's features has the
    sample's key (its prompt or class), else 0."""
    k = min(k, len(bank))
    nearest = torch.cdist(feats.double(), bank.double()).topk(k, largest=False).indices
    hits = [
        any(bank_keys[j] == key for j in row.tolist())
        for key, row in zip(keys, nearest, strict=True)
    ]
    return torch.tensor(hits, dtype=torch.float64)
