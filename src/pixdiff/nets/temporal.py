"""Temporal layers of the factorised space-time video networks (:mod:`.video_unet`,
:mod:`.video_dit`): attention over the frames at each spatial position, with a learned relative
position bias, and a 1-D convolution over frames.

Video Diffusion Models (Ho et al. 2022a, Sec. 3) factorise a 3D U-Net into per-frame spatial
layers and temporal attention over frames at each position, with relative position embeddings
(Shaw et al. 2018) so that frame order is known without an absolute notion of time; Make-A-Video
(Singer et al. 2022, Sec. 3.2) and Imagen Video (Ho et al. 2022b) add a kernel-3 convolution
over frames after the spatial layers. Both layers here are residual branches whose output layer
starts at zero, so a fresh video network is exactly its image network applied frame by frame.

Joint image and video training (Ho et al. 2022a, Sec. 3; Imagen Video, "video-image joint
training"): a clip flagged as independent frames attends from each frame only to itself and
bypasses the temporal convolution, so it trains only what an image model has.

Layouts: a U-Net feature map of a batch of B clips of F frames is (B * F, C, H, W), frames of
one clip adjacent; tokens are (B * F, S, D) with S positions per frame.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pixdiff.nets.layers import SelfAttention, group_norm, zero_module
from pixdiff.nets.unet_blocks import to_map, to_tokens
from pixdiff.nets.video import TemporalOptions

# ----------------------------------------------------------------------------- layouts


def across_frames(tokens: Tensor, frames: int) -> Tensor:
    """(B * F, S, D) tokens of each frame -> (B * S, F, D) sequences over the frames."""
    bf, s, d = tokens.shape
    return tokens.reshape(bf // frames, frames, s, d).transpose(1, 2).reshape(-1, frames, d)


def within_frames(sequences: Tensor, positions: int) -> Tensor:
    """(B * S, F, D) sequences over frames -> (B * F, S, D); inverse of :func:`across_frames`."""
    bs, f, d = sequences.shape
    return (
        sequences.reshape(bs // positions, positions, f, d)
        .transpose(1, 2)
        .reshape(-1, positions, d)
    )


def frame_keep(independent: Tensor | None, frames: int, dtype: torch.dtype) -> Tensor | None:
    """(B * F, 1, 1, 1): 0 for the frames of clips flagged independent, else 1; None if no flag."""
    if independent is None:
        return None
    return (~independent).to(dtype).repeat_interleave(frames)[:, None, None, None]


# ----------------------------------------------------------------------------- position bias


def relative_position_bucket(relative: Tensor, *, num_buckets: int, max_distance: int) -> Tensor:
    """T5's bucket of each key-minus-query offset (Raffel et al. 2020, Sec. 2.1).

    Half of the buckets hold positive offsets; in each half, offsets below ``num_buckets / 4``
    get a bucket each and larger ones logarithmically wider buckets up to ``max_distance``
    (T5's bidirectional ``_relative_position_bucket``).
    """
    half = num_buckets // 2
    exact = half // 2
    n = relative.abs()
    log_ratio = torch.log(n.float().clamp(min=1) / exact) / math.log(max_distance / exact)
    large = (exact + (log_ratio * (half - exact)).long()).clamp(max=half - 1)
    return (relative > 0).long() * half + torch.where(n < exact, n, large)


class RelativePositionBias(nn.Module):
    """One learned scalar per head and offset bucket added to the attention logits:
    ``softmax(q_i . k_j / sqrt(d) + b[bucket(j - i)])`` (relative position representations,
    Shaw et al. 2018, reduced to one scalar per bucketed offset and head as in T5, Raffel et
    al. 2020, Sec. 2.1; VDM's temporal attention uses them, Ho et al. 2022a, Sec. 3).

    Starts at zero: a fresh bias prefers no offset, and attention without it is equivariant to
    a permutation of the frames.
    """

    def __init__(self, num_heads: int, *, num_buckets: int, max_distance: int):
        super().__init__()
        self.num_buckets, self.max_distance = num_buckets, max_distance
        self.table = zero_module(nn.Embedding(num_buckets, num_heads))

    def forward(self, frames: int) -> Tensor:
        """(1, heads, F, F) logit bias, query frames along dim 2 and key frames along dim 3."""
        position = torch.arange(frames, device=self.table.weight.device)
        relative = position[None, :] - position[:, None]  # (F, F) key - query
        bucket = relative_position_bucket(
            relative, num_buckets=self.num_buckets, max_distance=self.max_distance
        )
        return self.table(bucket).permute(2, 0, 1)[None]


def position_bias(options: TemporalOptions, num_heads: int) -> RelativePositionBias | None:
    """The relative position bias ``options`` ask for (None with ``temporal_pos_bias`` off)."""
    if not options.temporal_pos_bias:
        return None
    return RelativePositionBias(
        num_heads, num_buckets=options.pos_bias_buckets, max_distance=options.pos_bias_max_distance
    )


def attention_bias(
    position: RelativePositionBias | None,
    frames: int,
    independent: Tensor | None,
    *,
    positions: int,
) -> Tensor | None:
    """The logit bias of temporal attention over the (B * positions, F, D) sequences.

    The relative position bias, plus -inf off the diagonal for the clips flagged in
    ``independent`` (B,), so each of their frames attends only to itself (VDM joint training,
    Ho et al. 2022a, Sec. 3). Returns (1, heads, F, F), (B * positions, heads or 1, F, F) or None.
    """
    bias = None if position is None else position(frames)
    if independent is None:
        return bias
    eye = torch.eye(frames, dtype=torch.bool, device=independent.device)
    blocked = (independent[:, None, None] & ~eye).repeat_interleave(positions, dim=0)
    mask = torch.zeros(blocked.shape, device=independent.device).masked_fill(blocked, -math.inf)
    mask = mask[:, None]  # (B * positions, 1, F, F)
    return mask if bias is None else mask + bias


# ----------------------------------------------------------------------------- layers


class TemporalAttention(nn.Module):
    """Self-attention over the frames at each spatial position of a feature map (VDM's
    temporal attention block, Ho et al. 2022a, Sec. 3): ``h + Attn(GN(h))`` with the sequence
    running over frames, a relative position bias, and a zero-initialised output projection.

    The GroupNorm normalises each frame on its own, so a frame's statistics never mix others.
    """

    def __init__(self, ch: int, *, num_heads: int, num_groups: int, options: TemporalOptions):
        super().__init__()
        self.norm = group_norm(ch, max_groups=num_groups)
        self.attn = SelfAttention(ch, num_heads=num_heads, zero_init_out=True)
        self.position = position_bias(options, num_heads)

    def forward(self, h: Tensor, frames: int, independent: Tensor | None = None) -> Tensor:
        """h (B * F, C, H, W), independent (B,) bool or None -> (B * F, C, H, W)."""
        height, width = h.shape[-2:]
        sequences = across_frames(to_tokens(self.norm(h)), frames)  # (B * H * W, F, C)
        bias = attention_bias(self.position, frames, independent, positions=height * width)
        out = within_frames(self.attn(sequences, bias=bias), height * width)  # (B * F, H * W, C)
        return h + to_map(out, height, width)


class TemporalConv(nn.Module):
    """A kernel-3 convolution over frames at each spatial position, as a residual branch
    ``h + Conv1d(SiLU(GN(h)))`` with the convolution zero-initialised (the temporal conv after
    each spatial conv of Make-A-Video, Singer et al. 2022, Sec. 3.2, and Imagen Video, Ho et al.
    2022b). Clips are zero-padded by one frame at each end.

    Clips flagged as independent frames bypass the branch (Imagen Video's joint training masks
    the temporal convolutions' computation path), so no frame of theirs sees another.
    """

    def __init__(self, ch: int, *, num_groups: int):
        super().__init__()
        self.norm = group_norm(ch, max_groups=num_groups)
        self.conv = zero_module(nn.Conv1d(ch, ch, 3, padding=1))

    def forward(self, h: Tensor, frames: int, independent: Tensor | None = None) -> Tensor:
        """h (B * F, C, H, W), independent (B,) bool or None -> (B * F, C, H, W)."""
        height, width = h.shape[-2:]
        sequences = across_frames(to_tokens(F.silu(self.norm(h))), frames)  # (B * H * W, F, C)
        out = self.conv(sequences.transpose(1, 2)).transpose(1, 2)
        branch = to_map(within_frames(out, height * width), height, width)
        keep = frame_keep(independent, frames, branch.dtype)
        return h + (branch if keep is None else branch * keep)
