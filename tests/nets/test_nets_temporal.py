"""Temporal layers (nets/temporal.py): T5's offset buckets, frame-order equivariance of
temporal attention without a position bias and its loss with one, the diagonal mask and the
convolution bypass of independent frames, and zero-initialised outputs."""

from __future__ import annotations

import pytest
import torch

from pixdiff.nets.temporal import (
    RelativePositionBias,
    TemporalAttention,
    TemporalConv,
    across_frames,
    relative_position_bucket,
    within_frames,
)
from pixdiff.nets.video import TemporalOptions

B, F, C, H, W = 2, 5, 16, 4, 4


def frames_of(clips: torch.Tensor) -> torch.Tensor:
    """(B, F, C, H, W) -> (B * F, C, H, W), the temporal layers' layout."""
    return clips.flatten(0, 1)


def attention(perturb, *, pos_bias: bool) -> TemporalAttention:
    layer = TemporalAttention(
        C, num_heads=2, num_groups=4, options=TemporalOptions(temporal_pos_bias=pos_bias)
    )
    return perturb(layer, std=0.3)


def test_buckets_match_t5_exact_small_offsets_and_log_large_ones():
    offsets = torch.arange(-200, 201)
    bucket = relative_position_bucket(offsets, num_buckets=32, max_distance=128)
    small = offsets.abs() < 8
    # T5: negative offsets (key before query) in 0..15, positive in 16..31; exact below 8
    assert torch.equal(bucket[small & (offsets <= 0)], -offsets[small & (offsets <= 0)])
    assert torch.equal(bucket[small & (offsets > 0)], 16 + offsets[small & (offsets > 0)])
    assert bucket[offsets == -200].item() == 15 and bucket[offsets == 200].item() == 31
    assert bucket[offsets == -128].item() == 15 and bucket[offsets == -127].item() == 15
    # 8 + floor(log(64 / 8) / log(128 / 8) * (16 - 8)) = 8 + 6
    assert bucket[offsets == -64].item() == 14 and bucket[offsets == 64].item() == 30
    assert (bucket[offsets <= 0].diff() <= 0).all()  # monotone in the distance


def test_layouts_round_trip():
    tokens = torch.randn(B * F, 7, C)
    sequences = across_frames(tokens, F)
    assert sequences.shape == (B * 7, F, C)
    assert torch.equal(sequences[1 * 7 + 3, 2], tokens[1 * F + 2, 3])  # clip 1, position 3
    assert torch.equal(within_frames(sequences, 7), tokens)


def test_fresh_layers_are_the_identity():
    options = TemporalOptions()
    h = torch.randn(B * F, C, H, W)
    assert torch.equal(TemporalAttention(C, num_heads=2, num_groups=4, options=options)(h, F), h)
    assert torch.equal(TemporalConv(C, num_groups=4)(h, F), h)


@pytest.mark.parametrize("pos_bias", [False, True])
def test_attention_is_frame_permutation_equivariant_only_without_position_bias(perturb, pos_bias):
    layer = attention(perturb, pos_bias=pos_bias)
    clips = torch.randn(B, F, C, H, W)
    order = torch.tensor([3, 0, 4, 1, 2])
    permuted_out = layer(frames_of(clips[:, order]), F).unflatten(0, (B, F))
    out_permuted = layer(frames_of(clips), F).unflatten(0, (B, F))[:, order]
    gap = (permuted_out - out_permuted).abs().max().item()
    if pos_bias:
        assert layer.position.table.weight.abs().min() > 0  # the bias is not zero
        assert gap > 1e-2
    else:
        assert gap < 1e-5


def test_position_bias_depends_only_on_the_offset():
    bias = RelativePositionBias(3, num_buckets=32, max_distance=128)
    torch.nn.init.normal_(bias.table.weight)
    b = bias(6)[0]  # (heads, F, F)
    assert b.shape == (3, 6, 6)
    assert torch.equal(b[:, 1, 3], b[:, 2, 4]) and not torch.equal(b[:, 1, 3], b[:, 3, 1])


def test_independent_frames_do_not_see_each_other(perturb):
    attn = attention(perturb, pos_bias=True)
    conv = perturb(TemporalConv(C, num_groups=4), std=0.3)
    independent = torch.tensor([True, False])
    clips = torch.randn(B, F, C, H, W)
    moved = clips.clone()
    moved[:, 2] += torch.randn(B, C, H, W)  # change frame 2 of both clips
    for layer in (attn, conv):
        before = layer(frames_of(clips), F, independent).unflatten(0, (B, F))
        after = layer(frames_of(moved), F, independent).unflatten(0, (B, F))
        others = [0, 1, 3, 4]
        assert torch.allclose(before[0, others], after[0, others], atol=1e-6, rtol=0)
        assert (before[1, others] - after[1, others]).abs().max() > 1e-3  # a video mixes


def test_an_independent_clip_is_its_frames_one_by_one(perturb):
    """Diagonal attention gives each frame exactly its own value: the same as a clip of one
    frame; the convolution is bypassed altogether."""
    attn = attention(perturb, pos_bias=True)
    conv = perturb(TemporalConv(C, num_groups=4), std=0.3)
    h = torch.randn(F, C, H, W)  # one clip
    flag = torch.tensor([True])
    alone = torch.cat([attn(h[i : i + 1], 1) for i in range(F)])
    assert torch.allclose(attn(h, F, flag), alone, atol=1e-6, rtol=0)
    assert torch.equal(conv(h, F, flag), h)


def test_zero_initialised_outputs_get_gradients():
    attn = TemporalAttention(C, num_heads=2, num_groups=4, options=TemporalOptions())
    conv = TemporalConv(C, num_groups=4)
    h = torch.randn(B * F, C, H, W)
    (conv(attn(h, F), F) * torch.randn(B * F, C, H, W)).sum().backward()
    assert attn.attn.proj.weight.grad.abs().sum() > 0
    assert conv.conv.weight.grad.abs().sum() > 0
