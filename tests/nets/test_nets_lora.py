"""LoRA (Hu et al. 2021) on pixdiff networks (issue #19): an untrained adapter leaves outputs
bit-identical, a merged adapter equals the applied one, stacking adds, bad ranks and targets
are refused with one line."""

import pytest
import torch
from torch import nn

from pixdiff.nets import build_net, preset
from pixdiff.nets.lora import LoRAConfig, LoRAError, LoRASet, resolve_targets


def net_and_inputs():
    torch.manual_seed(0)
    cfg = preset("unet-tiny", in_channels=3, out_channels=3, image_size=8,
                 attention_resolutions=(4,))  # fmt: skip
    net = build_net(cfg).eval()
    with torch.no_grad():  # the zero-initialised output layers would hide every change
        for p in net.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    x = torch.randn(2, 3, 8, 8)
    t = torch.tensor([0.3, 0.7])
    return net, x, t


def randomise(lora: LoRASet) -> None:
    """Non-zero B, so the update is visible."""
    with torch.no_grad():
        for p in lora.parameters():
            p.normal_(0, 0.05)


def test_zero_b_is_bit_identical():
    net, x, t = net_and_inputs()
    before = net(x, t)
    lora = LoRASet(net, LoRAConfig(rank=2, targets=("attn", "conv")))
    assert lora.module_names and all(lora.layers[k].up.weight.abs().sum() == 0 for k in lora.layers)
    with lora.applied(net):
        after = net(x, t)
    assert before.abs().max() > 0.1
    assert torch.equal(before, after)


def test_merge_equals_applied_and_stacking_adds():
    net, x, t = net_and_inputs()
    base = net(x, t)
    first = LoRASet(net, LoRAConfig(rank=2, alpha=4, targets=("attn", "conv")))
    second = LoRASet(net, LoRAConfig(rank=1, targets=("*emb_proj",)))
    randomise(first), randomise(second)
    first.scale = 0.7
    with first.applied(net), second.applied(net):
        stacked = net(x, t)
    assert not torch.allclose(stacked, base)
    merged = type(net)(net.config).eval()
    merged.load_state_dict(net.state_dict())
    first.merge_into(merged)
    second.merge_into(merged)
    torch.testing.assert_close(merged(x, t), stacked, rtol=1e-5, atol=1e-5)
    # a hook removed: the network is the base again
    assert torch.equal(net(x, t), base)


def test_conv_delta_matches_conv_path():
    conv = nn.Conv2d(4, 6, 3, stride=2, padding=1)
    lora = LoRASet(nn.Sequential(conv), LoRAConfig(rank=3, targets=("0",)))
    randomise(lora)
    x = torch.randn(2, 4, 9, 9)
    layer = lora.layers["0"]
    expected = nn.functional.conv2d(x, layer.weight_delta(), stride=2, padding=1)
    torch.testing.assert_close(layer(x), expected, rtol=1e-5, atol=1e-6)


def test_bad_rank_and_targets_are_one_line():
    net, _, _ = net_and_inputs()
    with pytest.raises(LoRAError, match=r"--lora-rank 0 .*must be in \[1, "):
        LoRASet(net, LoRAConfig(rank=0))
    with pytest.raises(LoRAError, match=r"--lora-rank 10000 for .*attn"):
        LoRASet(net, LoRAConfig(rank=10000))
    with pytest.raises(LoRAError, match=r"'nothing\*' matches no .*modules: .*in_conv"):
        resolve_targets(net, ["nothing*"])


def test_scale_zero_is_the_base():
    net, x, t = net_and_inputs()
    base = net(x, t)
    lora = LoRASet(net, LoRAConfig(rank=2))
    randomise(lora)
    lora.scale = 0.0
    with lora.applied(net):
        assert torch.equal(net(x, t), base)


def test_dit_with_cross_attention_self_and_cross_projections():
    from pixdiff.conditioning import Cond

    torch.manual_seed(0)
    cfg = preset("dit-tiny", in_channels=3, image_size=8, context_dim=8,
                 pooled_dim=8)  # fmt: skip
    net = build_net(cfg).eval()
    with torch.no_grad():
        for p in net.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    x, t = torch.randn(2, 3, 8, 8), torch.tensor([0.2, 0.9])
    cond = Cond(context=torch.randn(2, 5, 8), context_mask=torch.ones(2, 5, dtype=torch.bool),
                pooled=torch.randn(2, 8))  # fmt: skip
    base = net(x, t, cond)
    lora = LoRASet(net, LoRAConfig(rank=2, targets=("attn", "mlp")))
    names = lora.module_names
    assert any(n.endswith("attn.qkv") for n in names)
    assert any(n.endswith("cross_attn.kv") for n in names)
    assert any(n.endswith("mlp.2") for n in names)
    with lora.applied(net):
        assert torch.equal(net(x, t, cond), base)
    randomise(lora)
    with lora.applied(net):
        adapted = net(x, t, cond)
    lora.merge_into(net)
    torch.testing.assert_close(net(x, t, cond), adapted, rtol=1e-5, atol=1e-5)
