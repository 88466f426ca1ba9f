"""Spatial control in the networks (issue #18): the map concatenated to x_t (U-Net and DiT),
and the ControlNet adapter (Zhang et al. 2023), whose zero-initialised outputs leave its frozen
base bit-identical until it is trained."""

import pytest
import torch

from pixdiff.conditioning import Cond
from pixdiff.nets import DiT, TextConditionedNet, TextEncoder, UNet, preset
from pixdiff.nets.control import ControlAdapter, ControlledNet


def tiny(**overrides):
    return preset("unet-tiny", image_size=16, attention_resolutions=(8,), **overrides)


def inputs(n=3, channels=1, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 3, 16, 16, generator=g)
    c_noise = torch.tensor([5.0, 300.0, 900.0])[:n]
    control = torch.rand(n, channels, 16, 16, generator=g) * 2 - 1
    return x, c_noise, control


@pytest.mark.parametrize("kind", ["unet", "dit"])
def test_a_concatenated_map_is_an_input_that_changes_the_output(perturb, kind):
    if kind == "unet":
        net = perturb(UNet(tiny(num_classes=2, control_channels=3)))
    else:
        net = perturb(DiT(preset("dit-tiny", image_size=16, num_classes=2, control_channels=3)))
    x, c_noise, control = inputs(channels=3)
    label = torch.tensor([0, 1, 2])
    out = net(x, c_noise, Cond(label=label, control=control))
    assert out.shape == x.shape and torch.isfinite(out).all()
    other = net(x, c_noise, Cond(label=label, control=torch.zeros_like(control)))
    assert not torch.allclose(out, other)  # the null map is another input
    with pytest.raises(ValueError, match=r"lacks \['control'\]"):
        net(x, c_noise, Cond(label=label))
    with pytest.raises(ValueError, match=r"cond.control must have shape \(3, 3, 16, 16\)"):
        net(x, c_noise, Cond(label=label, control=control[:, :1]))


def bases(perturb):
    """A class-conditional U-Net and a text-conditioned one, weights randomised."""
    unet = perturb(UNet(tiny(num_classes=2)))
    encoder = TextEncoder(width=8, layers=1, heads=2, max_length=16)
    text = perturb(TextConditionedNet(UNet(tiny(context_dim=8, pooled_dim=8)), encoder))
    return {"class": (unet, Cond(label=torch.tensor([0, 1, 2]))),
            "text": (text, text.encode(["a cat", "", "red apple"]))}  # fmt: skip


@pytest.mark.parametrize("which", ["class", "text"])
def test_an_untrained_adapter_leaves_the_base_bit_identical(perturb, which):
    base, cond = bases(perturb)[which]
    adapter = ControlAdapter.from_base(base, control_channels=1)
    controlled = ControlledNet(base, adapter)
    x, c_noise, control = inputs()
    with torch.no_grad():
        expected = base(x, c_noise, cond)
        out = controlled(x, c_noise, Cond(**{n: getattr(cond, n) for n in cond.present()},
                                          control=control))  # fmt: skip
    assert torch.equal(out, expected)
    # ... while its copied encoder is the base's, so its skips are not zero before the 1x1s
    unet = base.net if which == "text" else base
    for name in ("embed", "input_blocks", "middle"):
        own, copied = getattr(unet, name).state_dict(), getattr(adapter, name).state_dict()
        assert all(torch.equal(own[k], copied[k]) for k in own)


def test_a_trained_adapter_steers_rows_with_a_map_only(perturb):
    base, cond = bases(perturb)["class"]
    adapter = perturb(ControlAdapter.from_base(base, control_channels=1))
    x, c_noise, control = inputs()
    control[1] = 0  # row 1 has the null map
    with torch.no_grad():
        plain = base(x, c_noise, cond)
        steered = ControlledNet(base, adapter)(x, c_noise, Cond(label=cond.label, control=control))
        off = ControlledNet(base, adapter, scale=0.0)(
            x, c_noise, Cond(label=cond.label, control=control)
        )
        half = ControlledNet(base, adapter).at_scale(0.5)(
            x, c_noise, Cond(label=cond.label, control=control)
        )
    assert not torch.allclose(steered[[0, 2]], plain[[0, 2]])
    assert torch.equal(steered[1], plain[1])  # the null map: exactly the base
    assert torch.equal(off, plain)  # strength 0: the base
    assert not torch.allclose(half[0], steered[0]) and not torch.allclose(half[0], plain[0])


def test_residuals_have_the_shapes_of_the_skips_and_middle(perturb):
    base = UNet(tiny())
    adapter = ControlAdapter(base.config, control_channels=3)
    x, c_noise, control = inputs(channels=3)
    skips, middle = adapter(x, c_noise, None, control)
    assert [s.shape[1] for s in skips] == list(base.skip_channels)
    assert middle.shape == (3, base.config.model_channels * base.config.channel_mult[-1], 8, 8)
    assert all(torch.equal(s, torch.zeros_like(s)) for s in [*skips, middle])  # zero 1x1s


def test_only_the_adapter_is_trainable_and_saved_apart(perturb):
    base, _ = bases(perturb)["class"]
    base.requires_grad_(False)
    net = ControlledNet(base, ControlAdapter.from_base(base, control_channels=1))
    keys = net.state_dict().keys()
    assert {k.split(".")[0] for k in keys} == {"net", "adapter"}
    assert all(p.requires_grad for p in net.adapter.parameters())
    assert not any(p.requires_grad for p in net.net.parameters())
    assert net.config is base.config and net.required_cond() == ["label", "control"]


def test_an_adapter_needs_a_unet_and_a_map():
    dit = DiT(preset("dit-tiny", image_size=16))
    with pytest.raises(ValueError, match="needs a U-Net base model, this one is a DiT"):
        ControlAdapter.from_base(dit, control_channels=1)
    base = UNet(tiny())
    net = ControlledNet(base, ControlAdapter.from_base(base, control_channels=1))
    x, c_noise, _ = inputs()
    with pytest.raises(ValueError, match=r"needs the control map \(cond.control\)"):
        net(x, c_noise, None)
