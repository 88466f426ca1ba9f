"""pixdiff's U-Net and diffusers' UNet2DModel are the same network: configs map both ways,
every weight has a counterpart, and the two compute the same function."""

from __future__ import annotations

import pytest
import torch
from diffusers_helpers import diffusers, randomized, tiny_unet2d

from pixdiff.conditioning import Cond
from pixdiff.formats.diffusers_unet import (
    NoCounterpart,
    key_pairs,
    unet_from_diffusers_config,
    unet_state_from_diffusers,
    unet_state_to_diffusers,
    unet_to_diffusers_config,
)
from pixdiff.nets import UNet, UNetConfig

BASE = dict(in_channels=3, out_channels=3, image_size=8, model_channels=8, channel_mult=(1, 2),
            num_res_blocks=1, attention_resolutions=(4,), num_heads=2, num_groups=4)  # fmt: skip


def _unet2d(config: dict) -> torch.nn.Module:
    return diffusers.UNet2DModel(**{k: v for k, v in config.items() if not k.startswith("_")})


@pytest.mark.parametrize(
    "options",
    [
        {},
        {"scale_shift_norm": False, "num_classes": 3},
        {
            "learn_sigma": True,
            "attention_resolutions": (8, 4),
            "head_channels": 4,
            "num_res_blocks": 2,
        },
        {"channel_mult": (1, 2, 2), "attention_resolutions": (2,), "head_channels": 4},
    ],
)
def test_same_function_and_weights_both_ways(options):
    config = UNetConfig(**{**BASE, **options})
    net = randomized(UNet(config))
    theirs = _unet2d(unet_to_diffusers_config(config)).eval()
    theirs.load_state_dict(unet_state_to_diffusers(net.state_dict(), config), strict=True)
    x, t = torch.randn(3, 3, 8, 8), torch.tensor([999.0, 421.5, 0.0])
    labels = torch.tensor([0, 2, 3]) if config.num_classes else None
    with torch.no_grad():
        ours = net(x, t, Cond(label=labels) if labels is not None else None)
        torch.testing.assert_close(
            theirs(x, t, class_labels=labels).sample, ours, atol=1e-5, rtol=0
        )
    back = unet_from_diffusers_config(dict(theirs.config), null_label=True)
    assert unet_to_diffusers_config(back) == unet_to_diffusers_config(config)
    state = unet_state_from_diffusers(theirs.state_dict(), back)
    assert state.keys() == net.state_dict().keys()
    assert all(torch.equal(v, state[k]) for k, v in net.state_dict().items())


def test_every_weight_of_a_unet2dmodel_is_mapped():
    unet = tiny_unet2d()
    config = unet_from_diffusers_config(dict(unet.config), null_label=False)
    theirs = {k for _, keys in key_pairs(config) for k in keys}
    assert set(unet.state_dict()) <= theirs  # the pairs list ResBlock skips whether present or not
    assert len(unet_state_from_diffusers(unet.state_dict(), config)) == len(
        UNet(config).state_dict()
    )


@pytest.mark.parametrize(
    ("options", "reason"),
    [
        ({"context_dim": 8}, "context_dim"),
        ({"channel_mult": (2, 2)}, "first level"),
        ({"num_groups": 8, "model_channels": 12}, "GroupNorm"),
        ({"channel_mult": (1, 2), "attention_resolutions": (8, 4)}, "head width"),
    ],
)
def test_networks_without_a_counterpart_say_why(options, reason):
    with pytest.raises(NoCounterpart, match=reason):
        unet_to_diffusers_config(UNetConfig(**{**BASE, **options}))


@pytest.mark.parametrize(
    ("overrides", "null_label", "reason"),
    [
        ({"flip_sin_to_cos": False}, False, "flip_sin_to_cos"),
        ({"down_block_types": ("DownBlock2D", "SkipDownBlock2D")}, False, "block types"),
        ({"num_class_embeds": 4}, False, "null label"),
        ({"resnet_time_scale_shift": "scale_shift"}, False, "attn_norm_num_groups"),
    ],
)
def test_unet2dmodels_without_a_counterpart_say_why(overrides, null_label, reason):
    config = {**dict(tiny_unet2d().config), **overrides}
    with pytest.raises(NoCounterpart, match=reason):
        unet_from_diffusers_config(config, null_label=null_label)
