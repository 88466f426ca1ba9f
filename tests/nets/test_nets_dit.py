"""DiT: shapes, adaLN-Zero init, conditioning paths, input validation, overfitting one batch."""

import json

import pytest
import torch

from pixdiff.conditioning import Cond
from pixdiff.nets import DiT, DiTConfig, preset


def tiny(**overrides) -> DiTConfig:
    return preset("dit-tiny", **overrides)


def test_fresh_net_outputs_exactly_zero():
    net = DiT(tiny(num_classes=3, context_dim=8, pooled_dim=5, learn_sigma=True))
    cond = Cond(label=torch.tensor([1, 3]), context=torch.randn(2, 4, 8), pooled=torch.randn(2, 5))
    out = net(torch.randn(2, 3, 32, 32), torch.tensor([10.0, 900.0]), cond)
    assert out.shape == (2, 6, 32, 32)
    assert torch.equal(out, torch.zeros_like(out))


def test_zero_init_is_where_dit_puts_it():
    net = DiT(tiny(context_dim=8))
    zeroed = [net.final_layer.linear, net.final_layer.adaLN_modulation[-1]]
    for block in net.blocks:
        zeroed += [block.adaLN_modulation[-1], block.cross_attn.proj]
    assert all(not p.any() for m in zeroed for p in m.parameters())
    assert net.blocks[0].attn.qkv.weight.std() > 0 and net.x_embedder.weight.std() > 0


@pytest.mark.parametrize(
    ("overrides", "x_shape", "out_channels"),
    [
        ({}, (2, 3, 32, 32), 3),
        ({"learn_sigma": True}, (2, 3, 32, 32), 6),
        ({"in_channels": 1, "image_size": 28, "learn_sigma": True}, (3, 1, 28, 28), 2),
        ({"patch_size": 2}, (1, 3, 16, 24), 3),
    ],
)
def test_output_shape(perturb, overrides, x_shape, out_channels):
    net = perturb(DiT(tiny(**overrides)))
    out = net(torch.randn(x_shape), torch.rand(x_shape[0]) * 1000)
    assert out.shape == (x_shape[0], out_channels, *x_shape[2:])
    assert torch.isfinite(out).all() and out.abs().sum() > 0


def test_unpatchify_inverts_patch_layout():
    """Token k, channel (i, j, c) lands at pixel (row_k * p + i, col_k * p + j) of channel c."""
    net = DiT(tiny(patch_size=2, in_channels=1))
    img = torch.arange(4 * 6, dtype=torch.float32).reshape(1, 1, 4, 6)
    tokens = img.reshape(1, 1, 2, 2, 3, 2).permute(0, 2, 4, 3, 5, 1).reshape(1, 6, 4)
    assert torch.equal(net.unpatchify(tokens, 2, 3), img)


def test_position_embedding_is_a_fixed_unsaved_buffer():
    net = DiT(tiny())
    assert "pos_embed" not in dict(net.named_parameters())
    assert "pos_embed" not in net.state_dict()
    assert net.pos_embed.shape == (1, 64, 64)


def test_label_changes_output_and_null_label_is_accepted(perturb):
    net = perturb(DiT(tiny(num_classes=4)))
    x = torch.randn(1, 3, 32, 32).expand(3, -1, -1, -1)
    out = net(x, torch.tensor(100.0), Cond(label=torch.tensor([0, 1, 4])))
    assert not torch.allclose(out[0], out[1]) and not torch.allclose(out[0], out[2])


def test_label_signal_survives_adaln_zero_through_training():
    """adaLN-Zero starts label-blind; after a few optimizer steps the label reaches the output."""
    net = DiT(tiny(num_classes=2))
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    x, t, label = torch.randn(4, 3, 32, 32), torch.rand(4) * 1000, torch.tensor([0, 1, 0, 1])
    target = torch.randn(4, 3, 32, 32)
    for _ in range(4):
        loss = (net(x, t, Cond(label=label)) - target).square().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        a = net(x[:1], t[:1], Cond(label=torch.tensor([0])))
        b = net(x[:1], t[:1], Cond(label=torch.tensor([1])))
    assert not torch.allclose(a, b)


def test_cross_attention_ignores_padding_tokens(perturb):
    net = perturb(DiT(tiny(context_dim=8)))
    x, t = torch.randn(2, 3, 32, 32), torch.tensor([5.0, 600.0])
    context = torch.randn(2, 3, 8)
    base = net(x, t, Cond(context=context))
    padded = torch.cat([context, 100 * torch.randn(2, 5, 8)], dim=1)
    mask = torch.tensor([[True] * 3 + [False] * 5] * 2)
    assert torch.allclose(net(x, t, Cond(context=padded, context_mask=mask)), base, atol=1e-5)
    assert not torch.allclose(net(x, t, Cond(context=torch.randn(2, 3, 8))), base)


def test_pooled_changes_output(perturb):
    net = perturb(DiT(tiny(pooled_dim=6)))
    x, t = torch.randn(1, 3, 32, 32), torch.tensor([50.0])
    a = net(x, t, Cond(pooled=torch.randn(1, 6)))
    assert not torch.allclose(a, net(x, t, Cond(pooled=torch.randn(1, 6))))


def test_low_res_input_makes_a_super_resolution_dit(perturb):
    """SR3 / CDM conditioning: the upsampled low-res image enters beside x_t, its augmentation
    time beside the timestep; a fresh SR DiT still outputs exactly zero."""
    config = tiny(low_res_channels=3)
    x, t = torch.randn(2, 3, 32, 32), torch.tensor([50.0, 500.0])
    cond = Cond(low_res=torch.randn(2, 3, 8, 8), low_res_noise=torch.tensor([0.0, 0.2]))
    assert not DiT(config)(x, t, cond).any()
    net = perturb(DiT(config))
    base = net(x, t, cond)
    assert base.shape == x.shape
    for field, value in [("low_res", torch.randn(2, 3, 8, 8)), ("low_res_noise", t / 1000)]:
        changed = Cond(**{**{n: getattr(cond, n) for n in cond.present()}, field: value})
        assert not torch.allclose(net(x, t, changed), base), field
    with pytest.raises(ValueError, match="lacks"):
        net(x, t, None)


def test_bf16_autocast_runs_and_tracks_float32(perturb):
    net = perturb(DiT(tiny(num_classes=3)))
    x, t, cond = (
        torch.randn(2, 3, 32, 32),
        torch.tensor([1.0, 999.0]),
        Cond(label=torch.tensor([0, 2])),
    )
    ref = net(x, t, cond)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = net(x, t, cond)
    assert out.shape == ref.shape and torch.isfinite(out).all()
    assert (out.float() - ref).abs().mean() < 0.05 * ref.abs().mean() + 1e-3


@pytest.mark.parametrize(
    ("overrides", "x", "cond", "match"),
    [
        ({}, torch.randn(1, 1, 32, 32), None, "expects x of shape"),
        ({}, torch.randn(1, 3, 32, 30), None, "divisible by 4"),
        ({}, torch.randn(1, 3, 32, 32), Cond(label=torch.tensor([0])), "not built for"),
        ({"num_classes": 3}, torch.randn(1, 3, 32, 32), Cond(label=torch.tensor([4])), r"\[0, 3\]"),
        ({"num_classes": 3}, torch.randn(1, 3, 32, 32), None, "lacks"),
        ({}, torch.randn(1, 3, 32, 32), Cond(context=torch.randn(1, 2, 8)), "not built for"),
        (
            {},
            torch.randn(1, 3, 32, 32),
            Cond(low_res=torch.randn(1, 3, 8, 8), low_res_noise=torch.zeros(1)),
            "not built for",
        ),
        ({"context_dim": 8}, torch.randn(1, 3, 32, 32), Cond(context=torch.randn(1, 2, 7)), "8"),
    ],
)
def test_bad_inputs_raise_value_error(overrides, x, cond, match):
    net = DiT(tiny(**overrides))
    with pytest.raises(ValueError, match=match):
        net(x, torch.zeros(x.shape[0]), cond)


@pytest.mark.parametrize(
    ("overrides", "match"),
    [
        ({"image_size": 30}, "patch_size"),
        ({"num_heads": 5}, "num_heads"),
        ({"hidden_size": 66, "num_heads": 2}, "by 4"),
        ({"depth": 0}, "depth"),
    ],
)
def test_invalid_config_raises(overrides, match):
    with pytest.raises(ValueError, match=match):
        tiny(**overrides)


def test_config_round_trips_through_json():
    config = tiny(num_classes=10, context_dim=16, mlp_ratio=2.5)
    assert DiTConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config
    with pytest.raises(ValueError, match="valid keys"):
        DiTConfig.from_dict({**config.to_dict(), "hidden": 3})


def test_tiny_dit_overfits_one_batch():
    """A tiny DiT memorises a fixed denoising batch: loss falls by > 10x in 150 steps."""
    net = DiT(tiny(image_size=16, num_classes=2))
    x0 = torch.rand(4, 3, 1, 1) * 2 - 1 + 0.3 * torch.randn(4, 3, 16, 16)
    eps = torch.randn_like(x0)
    t = torch.tensor([0.2, 0.4, 0.6, 0.8])
    x_t = (1 - t).sqrt()[:, None, None, None] * x0 + t.sqrt()[:, None, None, None] * eps
    cond = Cond(label=torch.tensor([0, 1, 0, 1]))
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    losses = []
    for _ in range(150):
        loss = (net(x_t, t * 1000, cond) - x0).square().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert min(losses[-10:]) < losses[0] / 10, (losses[0], losses[-10:])
