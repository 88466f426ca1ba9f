"""Text conditioning: byte tokenizer, builtin encoder, padding invariance, and the wiring into
the U-Net and the DiT."""

import warnings

import pytest
import torch

from pixdiff.conditioning import Cond
from pixdiff.config import TextConfig
from pixdiff.nets import DiT, DiTConfig, UNet, UNetConfig
from pixdiff.nets.prompts import masked_mean
from pixdiff.nets.text import (
    BOS,
    EOS,
    PAD,
    ByteTokenizer,
    TextConditionedNet,
    TextEncoder,
    text_encoder_of,
)

WIDTH = 16


def encoder(max_length: int = 24) -> TextEncoder:
    return TextEncoder(width=WIDTH, layers=2, heads=2, max_length=max_length).eval()


def unet() -> UNet:
    return UNet(
        UNetConfig(
            image_size=8, model_channels=8, channel_mult=(1, 2), num_res_blocks=1,
            attention_resolutions=(4,), num_heads=2, num_groups=4, context_dim=WIDTH,
            pooled_dim=WIDTH,
        )
    )  # fmt: skip


def dit() -> DiT:
    return DiT(
        DiTConfig(
            image_size=8, patch_size=2, hidden_size=16, depth=1, num_heads=2,
            context_dim=WIDTH, pooled_dim=WIDTH,
        )
    )  # fmt: skip


def test_tokenizer_round_trip_and_special_ids():
    tok = ByteTokenizer(max_length=32)
    tokens = tok(["Red  Apple", "café ☕", ""])
    assert [ByteTokenizer.decode(row) for row in tokens.ids] == ["red apple", "café ☕", ""]
    assert tokens.ids[0, 0] == BOS and tokens.ids[0, 10] == EOS  # 9 bytes between
    assert tokens.ids[2].tolist()[:2] == [BOS, EOS]  # the empty prompt is BOS, EOS


def test_tokenizer_pads_right_with_a_mask():
    tokens = ByteTokenizer(max_length=32)(["ab", "abcd"], pad_to=10)
    assert tokens.ids.shape == (2, 10) and tokens.mask.dtype == torch.bool
    assert tokens.mask.sum(1).tolist() == [4, 6]
    assert (tokens.ids[~tokens.mask] == PAD).all()
    assert tokens.mask[0].tolist() == [True] * 4 + [False] * 6


def test_truncation_warns_once_per_call_naming_the_limit():
    tok = ByteTokenizer(max_length=8)
    with pytest.warns(UserWarning, match="max_length=8") as record:
        tokens = tok(["a very long prompt", "another long one", "ok", "ok", ""])
    assert len(record) == 1 and "2 of 3 distinct" in str(record[0].message)
    assert tokens.ids.shape == (5, 8) and tokens.ids[0, -1] == EOS
    assert ByteTokenizer.decode(tokens.ids[0]) == "a very"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        tok(["a very long prompt"], warn=False)
        tok(["ok"])


def test_bad_prompts_and_configs_are_one_line_errors():
    with pytest.raises(ValueError, match="list of strings"):
        ByteTokenizer(8)("red apple")
    with pytest.raises(ValueError, match="pad_to"):
        ByteTokenizer(8)(["a"], pad_to=9)
    with pytest.raises(ValueError, match="divisible"):
        TextConfig(width=10, heads=4)
    with pytest.raises(ValueError, match="prompt_dropout"):
        TextConfig(prompt_dropout=1.0)


def test_encoder_shapes_and_build():
    cond = encoder().encode(["red apple", "a dog"])
    assert cond.context.shape == (2, 11, WIDTH) and cond.context_mask.shape == (2, 11)
    assert cond.pooled.shape == (2, WIDTH)
    built = TextConfig(width=32, layers=3, heads=4, max_length=40).build_encoder()
    assert isinstance(built, TextEncoder) and len(built.blocks) == 3
    assert built.pos_embed.shape == (40, 32)


def test_masked_mean_ignores_padding():
    h = torch.tensor([[[1.0], [3.0], [100.0]]])
    assert masked_mean(h, torch.tensor([[True, True, False]])).item() == 2.0
    assert masked_mean(h, torch.zeros(1, 3, dtype=torch.bool)).item() == 0.0


@pytest.mark.parametrize("make_net", [unet, dit])
def test_padding_does_not_change_pooled_or_the_denoiser_output(make_net, perturb):
    """The same prompt padded to 11 and to 24 tokens: same pooled vector, same net output."""
    enc = perturb(encoder())
    model = perturb(TextConditionedNet(make_net(), enc))
    short = enc(enc.tokenize(["red apple"]))
    long = enc(enc.tokenizer(["red apple"], pad_to=24))
    assert long.context.shape[1] == 24
    assert torch.allclose(short.pooled, long.pooled, atol=1e-6)
    assert torch.allclose(short.context, long.context[:, :11], atol=1e-6)
    x, t = torch.randn(1, 3, 8, 8), torch.tensor([0.5])
    assert torch.allclose(model(x, t, short), model(x, t, long), atol=1e-5)


@pytest.mark.parametrize("make_net", [unet, dit])
def test_cross_attention_ignores_embeddings_at_padded_positions(make_net, perturb):
    enc = perturb(encoder())
    model = perturb(TextConditionedNet(make_net(), enc))
    cond = enc(enc.tokenizer(["red apple"], pad_to=16))
    junk = torch.where(cond.context_mask[..., None], cond.context, 50 * torch.randn(1, 16, WIDTH))
    x, t = torch.randn(1, 3, 8, 8), torch.tensor([0.5])
    base = model(x, t, cond)
    assert torch.allclose(
        model(x, t, Cond(context=junk, context_mask=cond.context_mask, pooled=cond.pooled)),
        base,
        atol=1e-5,
    )
    other = enc.encode(["blue car"])
    assert not torch.allclose(model(x, t, other), base, atol=1e-4)  # the text matters


def test_encoder_trains_through_the_denoiser():
    """One backward pass reaches every encoder parameter (trained jointly, not frozen)."""
    enc = TextEncoder(width=WIDTH, layers=1, heads=2, max_length=24)
    model = TextConditionedNet(dit(), enc)
    torch.nn.init.normal_(model.net.blocks[0].cross_attn.proj.weight)  # zero-init otherwise
    torch.nn.init.normal_(model.net.final_layer.linear.weight)
    torch.nn.init.normal_(model.net.blocks[0].adaLN_modulation[-1].weight)
    cond = model.encode(["red apple", ""])
    model(torch.randn(2, 3, 8, 8), torch.tensor([0.2, 0.7]), cond).square().mean().backward()
    missing = [n for n, p in enc.named_parameters() if p.grad is None or not p.grad.any()]
    assert missing == []
    assert text_encoder_of(model) is enc and text_encoder_of(model.net) is None
    assert {k.split(".")[0] for k in model.state_dict()} == {"net", "text_encoder"}
