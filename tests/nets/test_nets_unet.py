"""U-Net: shapes, zero-init, conditioning paths, input validation, overfitting one batch."""

import json

import pytest
import torch

from pixdiff.conditioning import Cond
from pixdiff.nets import UNet, UNetConfig, preset


def tiny(**overrides) -> UNetConfig:
    return preset("unet-tiny", **overrides)


def test_fresh_net_outputs_exactly_zero():
    net = UNet(tiny(num_classes=3, context_dim=8, pooled_dim=5))
    cond = Cond(
        label=torch.tensor([0, 3]),
        context=torch.randn(2, 4, 8),
        pooled=torch.randn(2, 5),
    )
    out = net(torch.randn(2, 3, 32, 32), torch.tensor([10.0, 900.0]), cond)
    assert torch.equal(out, torch.zeros_like(out))


@pytest.mark.parametrize(
    ("overrides", "x_shape", "out_channels"),
    [
        ({}, (2, 3, 32, 32), 3),
        ({"learn_sigma": True}, (2, 3, 32, 32), 6),
        ({"image_size": 16, "attention_resolutions": (8,)}, (1, 3, 16, 24), 3),
        (
            {"in_channels": 1, "out_channels": 1, "image_size": 28, "channel_mult": (1, 2, 2)}
            | {"attention_resolutions": (7,), "learn_sigma": True},
            (3, 1, 28, 28),
            2,
        ),
    ],
)
def test_output_shape(perturb, overrides, x_shape, out_channels):
    net = perturb(UNet(tiny(**overrides)))
    out = net(torch.randn(x_shape), torch.rand(x_shape[0]) * 1000)
    assert out.shape == (x_shape[0], out_channels, *x_shape[2:])
    assert torch.isfinite(out).all() and out.abs().sum() > 0


def test_scalar_c_noise_broadcasts(perturb):
    net = perturb(UNet(tiny()))
    x = torch.randn(2, 3, 32, 32)
    assert torch.allclose(net(x, torch.tensor(250.0)), net(x, torch.full((2,), 250.0)))


def test_c_noise_changes_output(perturb):
    net = perturb(UNet(tiny()))
    x = torch.randn(1, 3, 32, 32)
    assert not torch.allclose(net(x, torch.tensor([1.0])), net(x, torch.tensor([700.0])))


def test_additive_embedding_and_resblock_updown(perturb):
    net = perturb(UNet(tiny(scale_shift_norm=False, resblock_updown=True, num_res_blocks=2)))
    assert net(torch.randn(2, 3, 32, 32), torch.tensor([3.0, 4.0])).shape == (2, 3, 32, 32)


def test_label_changes_output_and_null_label_is_accepted(perturb):
    net = perturb(UNet(tiny(num_classes=4)))
    x = torch.randn(1, 3, 32, 32).expand(3, -1, -1, -1)
    out = net(x, torch.tensor(100.0), Cond(label=torch.tensor([0, 1, 4])))  # 4 = null
    assert not torch.allclose(out[0], out[1]) and not torch.allclose(out[0], out[2])


def test_label_signal_survives_zero_init_through_training():
    """From the exact-zero start, a few optimizer steps make the output depend on the label."""
    net = UNet(tiny(num_classes=2))
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    x, t, label = torch.randn(4, 3, 32, 32), torch.rand(4) * 1000, torch.tensor([0, 1, 0, 1])
    target = torch.randn(4, 3, 32, 32)
    for _ in range(3):
        loss = (net(x, t, Cond(label=label)) - target).square().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        a = net(x[:1], t[:1], Cond(label=torch.tensor([0])))
        b = net(x[:1], t[:1], Cond(label=torch.tensor([1])))
    assert not torch.allclose(a, b)


def test_cross_attention_ignores_padding_tokens(perturb):
    net = perturb(UNet(tiny(context_dim=8)))
    x, t = torch.randn(2, 3, 32, 32), torch.tensor([5.0, 600.0])
    context = torch.randn(2, 3, 8)
    base = net(x, t, Cond(context=context))
    padded = torch.cat([context, 100 * torch.randn(2, 4, 8)], dim=1)
    mask = torch.tensor([[True] * 3 + [False] * 4] * 2)
    assert torch.allclose(net(x, t, Cond(context=padded, context_mask=mask)), base, atol=1e-5)
    other = net(x, t, Cond(context=torch.randn(2, 3, 8)))
    assert not torch.allclose(other, base)


def test_empty_context_row_is_finite(perturb):
    net = perturb(UNet(tiny(context_dim=8)))
    x = torch.randn(2, 3, 32, 32, requires_grad=True)
    mask = torch.tensor([[True, False], [False, False]])
    out = net(x, torch.tensor(1.0), Cond(context=torch.randn(2, 2, 8), context_mask=mask))
    out.sum().backward()
    assert torch.isfinite(out).all() and torch.isfinite(x.grad).all()


def test_pooled_and_low_res_change_output(perturb):
    net = perturb(UNet(tiny(pooled_dim=6, low_res_channels=3)))
    x, t = torch.randn(1, 3, 32, 32), torch.tensor([50.0])
    cond = Cond(pooled=torch.randn(1, 6), low_res=torch.randn(1, 3, 8, 8), low_res_noise=t)
    base = net(x, t, cond)
    for field, value in [
        ("pooled", torch.randn(1, 6)),
        ("low_res", torch.randn(1, 3, 8, 8)),
        ("low_res_noise", torch.tensor([400.0])),
    ]:
        changed = Cond(**{**{n: getattr(cond, n) for n in cond.present()}, field: value})
        assert not torch.allclose(net(x, t, changed), base), field


def test_channels_last_matches_contiguous(perturb):
    net = perturb(UNet(tiny(num_classes=2)))
    x, t, cond = (
        torch.randn(2, 3, 32, 32),
        torch.tensor([3.0, 9.0]),
        Cond(label=torch.tensor([0, 1])),
    )
    ref = net(x, t, cond)
    net = net.to(memory_format=torch.channels_last)
    out = net(x.to(memory_format=torch.channels_last), t, cond)
    assert torch.allclose(out, ref, atol=1e-5)


def test_bf16_autocast_runs_and_tracks_float32(perturb):
    net = perturb(UNet(tiny(context_dim=8)))
    x, t = torch.randn(2, 3, 32, 32), torch.tensor([1.0, 999.0])
    cond = Cond(context=torch.randn(2, 3, 8))
    ref = net(x, t, cond)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = net(x, t, cond)
    assert out.shape == ref.shape and torch.isfinite(out).all()
    assert (out.float() - ref).abs().mean() < 0.05 * ref.abs().mean() + 1e-3


@pytest.mark.parametrize(
    ("overrides", "x", "cond", "match"),
    [
        ({}, torch.randn(1, 1, 32, 32), None, "expects x of shape"),
        ({}, torch.randn(1, 3, 32, 31), None, "divisible by 2"),
        ({}, torch.randn(1, 3, 32, 32), Cond(label=torch.tensor([0])), "not built for"),
        ({"num_classes": 3}, torch.randn(1, 3, 32, 32), Cond(label=torch.tensor([4])), r"\[0, 3\]"),
        ({"num_classes": 3}, torch.randn(1, 3, 32, 32), Cond(label=torch.tensor([-1])), "null"),
        ({"num_classes": 3}, torch.randn(1, 3, 32, 32), Cond(label=torch.tensor([0.0])), "integer"),
        ({"num_classes": 3}, torch.randn(1, 3, 32, 32), None, "lacks"),
        ({}, torch.randn(1, 3, 32, 32), Cond(context=torch.randn(1, 2, 8)), "not built for"),
        ({"context_dim": 8}, torch.randn(1, 3, 32, 32), Cond(context=torch.randn(1, 2, 7)), "8"),
        (
            {"context_dim": 8},
            torch.randn(1, 3, 32, 32),
            Cond(context=torch.randn(1, 2, 8), context_mask=torch.ones(1, 2)),
            "bool",
        ),
        ({"num_classes": 3}, torch.randn(2, 3, 32, 32), Cond(label=torch.tensor([0])), "batch"),
        ({"pooled_dim": 4}, torch.randn(1, 3, 32, 32), Cond(pooled=torch.randn(1, 5)), "pooled"),
        (
            {"low_res_channels": 3},
            torch.randn(1, 3, 32, 32),
            Cond(low_res=torch.randn(1, 1, 8, 8), low_res_noise=torch.zeros(1)),
            "low_res",
        ),
    ],
)
def test_bad_inputs_raise_value_error(overrides, x, cond, match):
    net = UNet(tiny(**overrides))
    with pytest.raises(ValueError, match=match):
        net(x, torch.zeros(x.shape[0]), cond)


def test_bad_c_noise_shape_raises():
    with pytest.raises(ValueError, match="c_noise"):
        UNet(tiny())(torch.randn(2, 3, 32, 32), torch.zeros(3))


@pytest.mark.parametrize(
    ("overrides", "match"),
    [
        ({"image_size": 31}, "divisible"),
        ({"attention_resolutions": (8,)}, "never occur"),
        ({"model_channels": 0}, "model_channels"),
        ({"channel_mult": ()}, "channel_mult"),
        ({"dropout": 1.5}, "dropout"),
        ({"head_channels": 5}, "heads"),
    ],
)
def test_invalid_config_raises(overrides, match):
    with pytest.raises(ValueError, match=match):
        tiny(**overrides)


def test_group_norm_handles_small_widths():
    """Widths not divisible by 32 fall back to the largest dividing group count."""
    net = UNet(tiny(model_channels=12, num_heads=1))
    assert net.input_blocks[1][0].in_norm.num_groups == 6
    assert net(torch.randn(1, 3, 32, 32), torch.zeros(1)).shape == (1, 3, 32, 32)


def test_config_round_trips_through_json():
    config = tiny(num_classes=10, context_dim=16, attention_resolutions=(16, 32))
    restored = UNetConfig.from_dict(json.loads(json.dumps(config.to_dict())))
    assert restored == config and isinstance(restored.channel_mult, tuple)
    with pytest.raises(ValueError, match="valid keys"):
        UNetConfig.from_dict({**config.to_dict(), "chanel_mult": [1]})


def test_tiny_unet_overfits_one_batch():
    """A tiny U-Net memorises a fixed denoising batch: loss falls by > 10x in 150 steps."""
    net = UNet(tiny(image_size=16, attention_resolutions=(8,), num_classes=2))
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
