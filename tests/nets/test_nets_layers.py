"""Shared layers: embeddings against their published formulas, attention masking, helpers."""

import math

import pytest
import torch

from pixdiff.nets.layers import (
    CrossAttention,
    LabelEmbedder,
    group_count,
    sincos_pos_embed_2d,
    timestep_embedding,
    zero_module,
)


def test_timestep_embedding_matches_adm_formula():
    t = torch.tensor([0.0, 1.0, 999.0])
    emb = timestep_embedding(t, 8)
    freqs = torch.tensor([math.exp(-math.log(10000) * i / 4) for i in range(4)])
    expected = torch.cat([torch.cos(t[:, None] * freqs), torch.sin(t[:, None] * freqs)], dim=1)
    assert emb.shape == (3, 8) and torch.allclose(emb, expected, atol=1e-5)


def test_timestep_embedding_is_float32_and_pads_odd_width():
    emb = timestep_embedding(torch.tensor([500.0], dtype=torch.bfloat16), 7)
    assert emb.dtype == torch.float32 and emb.shape == (1, 7) and emb[0, -1] == 0


def test_sincos_pos_embed_separates_columns_and_rows():
    pos = sincos_pos_embed_2d(16, 3, 5).reshape(3, 5, 16)
    # First half depends only on the column, second half only on the row (MAE / DiT order).
    assert torch.allclose(pos[0, :, :8], pos[2, :, :8])
    assert torch.allclose(pos[:, 0, 8:], pos[:, 4, 8:])
    assert torch.allclose(pos[0, 0], torch.tensor([0.0] * 4 + [1.0] * 4 + [0.0] * 4 + [1.0] * 4))
    with pytest.raises(ValueError, match="divisible by 4"):
        sincos_pos_embed_2d(6, 2, 2)


def test_label_embedder_has_a_null_row_and_checks_range():
    emb = LabelEmbedder(5, 4)
    assert emb.table.num_embeddings == 6
    assert emb(torch.tensor([5])).shape == (1, 4)
    with pytest.raises(ValueError, match=r"\[0, 5\]"):
        emb(torch.tensor([6]))


@pytest.mark.parametrize(("channels", "groups"), [(128, 32), (96, 32), (12, 12), (40, 20), (7, 7)])
def test_group_count_divides(channels, groups):
    assert group_count(channels, 32) == groups


def test_zero_module_zeroes_everything():
    layer = zero_module(torch.nn.Linear(3, 4))
    assert not layer.weight.any() and not layer.bias.any()


def test_cross_attention_masked_tokens_have_no_influence():
    attn = CrossAttention(8, 6, num_heads=2)
    x, ctx = torch.randn(2, 5, 8), torch.randn(2, 4, 6)
    mask = torch.tensor([[True, True, False, False], [True, False, True, False]])
    out = attn(x, ctx, mask)
    ctx2 = ctx.clone()
    ctx2[~mask] = 1e3 * torch.randn(int((~mask).sum()), 6)
    assert torch.allclose(attn(x, ctx2, mask), out, atol=1e-5)
    empty = attn(x, ctx, torch.zeros(2, 4, dtype=torch.bool))
    assert torch.equal(empty, torch.zeros_like(empty))
