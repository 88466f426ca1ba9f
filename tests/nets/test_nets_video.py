"""Video networks (nets/video_unet.py, nets/video_dit.py): with zeroed temporal layers a video
net is its image net on every frame, an image net's weights load into it, joint-training's
independent frames do not see each other, conditioning is per clip, zero-initialised temporal
outputs get gradients, presets' sizes and FLOPs, and configs round-trip through a run's
config.json."""

from __future__ import annotations

import json

import pytest
import torch

from pixdiff.checkpoint import (
    load,
    net_config_from_dict,
    net_config_to_dict,
    save_tensors,
    write_json,
)
from pixdiff.conditioning import Cond
from pixdiff.nets import (
    DiT,
    UNet,
    VideoDiT,
    VideoDiTConfig,
    VideoUNet,
    VideoUNetConfig,
    build_net,
    count_parameters,
    init_from_image,
    preset,
)
from pixdiff.nets.flops import measure_flops, video_dit_flops

B, F = 2, 4
LABELS = torch.tensor([3, 10])  # 10: the null label


def small_unet(**overrides) -> VideoUNetConfig:
    """video-unet-tiny at 16x16 with 8-channel levels: fast, with every kind of block."""
    fields = dict(image_size=16, model_channels=8, num_classes=10, num_groups=4, num_heads=2)
    return preset("video-unet-tiny", **{**fields, **overrides})


def small_dit(**overrides) -> VideoDiTConfig:
    fields = dict(image_size=16, hidden_size=32, depth=2, num_classes=10)
    return preset("video-dit-tiny", **{**fields, **overrides})


NETS = {"unet": small_unet, "dit": small_dit}
IMAGE_NETS = {"unet": UNet, "dit": DiT}


def clips(batch: int = B, frames: int = F) -> torch.Tensor:
    return torch.randn(batch, frames, 3, 16, 16)


def per_frame(image_net, x: torch.Tensor, c_noise: torch.Tensor, cond: Cond) -> torch.Tensor:
    """The image net on every frame, each with its clip's noise level and condition."""
    frames = x.shape[1]
    repeated = cond.map(lambda v: v.repeat_interleave(frames, dim=0))
    out = image_net(x.flatten(0, 1), c_noise.repeat_interleave(frames), repeated)
    return out.unflatten(0, x.shape[:2])


def perturb_temporal(net, perturb):
    """Random weights in the temporal layers (the zero-initialised outputs included)."""
    perturb(net.temporal, std=0.1)
    return net.eval()


@pytest.mark.parametrize("kind", list(NETS))
def test_zeroed_temporal_layers_make_the_image_net_per_frame(perturb, kind):
    net = VideoUNet(small_unet()) if kind == "unet" else VideoDiT(small_dit())
    perturb(net.spatial)  # trained-looking spatial layers; temporal ones as initialised
    x, c_noise, cond = clips(), torch.tensor([10.0, 700.0]), Cond(label=LABELS)
    out = net(x, c_noise, cond)
    assert out.shape == x.shape
    assert torch.equal(out, per_frame(net.spatial, x, c_noise, cond))


@pytest.mark.parametrize("kind", list(NETS))
def test_init_from_image_gives_that_image_model_per_frame(perturb, kind):
    config = NETS[kind]()
    image = perturb(IMAGE_NETS[kind](config.image_config()))
    net = build_net(config)
    kept = init_from_image(net, image.state_dict())
    assert kept and all(k.startswith("temporal.") for k in kept)
    assert set(kept) == {k for k in net.state_dict() if not k.startswith("spatial.")}
    x, c_noise, cond = clips(), torch.tensor([10.0, 700.0]), Cond(label=LABELS)
    assert torch.equal(net.eval()(x, c_noise, cond), per_frame(image, x, c_noise, cond))


def test_init_from_image_names_the_keys_that_do_not_fit():
    net = VideoUNet(small_unet())
    before = {k: v.clone() for k, v in net.state_dict().items()}
    other = UNet(small_unet(num_classes=0).image_config()).state_dict()
    with pytest.raises(ValueError) as err:
        init_from_image(net, {**other, "extra.weight": torch.zeros(1)})
    message = str(err.value)
    assert "missing ['embed.label.table.weight']; unexpected ['extra.weight']" in message
    assert "\n" not in message
    wider = UNet(small_unet(model_channels=16).image_config()).state_dict()
    with pytest.raises(ValueError, match=r"shape mismatch \["):
        init_from_image(net, wider)
    assert all(torch.equal(v, before[k]) for k, v in net.state_dict().items())  # none loaded


@pytest.mark.parametrize("kind", list(NETS))
def test_independent_frames_do_not_see_each_other(perturb, kind):
    net = perturb_temporal(perturb(build_net(NETS[kind]())), perturb)
    x, c_noise, cond = clips(), torch.tensor([10.0, 700.0]), Cond(label=LABELS)
    independent = torch.tensor([True, False])
    moved = x.clone()
    moved[:, 1] += torch.randn(B, 3, 16, 16)
    before = net(x, c_noise, cond, independent_frames=independent)
    after = net(moved, c_noise, cond, independent_frames=independent)
    others = [0, 2, 3]
    assert torch.allclose(before[0, others], after[0, others], atol=1e-5, rtol=0)
    assert (before[1, others] - after[1, others]).abs().max() > 1e-3
    # an independent clip is its frames as one-frame clips
    flag, first = torch.tensor([True]), Cond(label=LABELS[:1])
    alone = [net(x[:1, i : i + 1], c_noise[:1], first, independent_frames=flag) for i in range(F)]
    assert torch.allclose(before[:1], torch.cat(alone, dim=1), atol=1e-5, rtol=0)


@pytest.mark.parametrize("kind", list(NETS))
def test_frame_order_without_position_bias(perturb, kind):
    """Without a position bias (and without the U-Net's temporal convolution) a video net is
    equivariant to the order of the frames; with a non-zero bias it is not."""
    overrides = {"temporal_conv_resolutions": ()} if kind == "unet" else {}
    order = torch.tensor([2, 0, 3, 1])
    x, c_noise, cond = clips(), torch.tensor([10.0, 700.0]), Cond(label=LABELS)
    for pos_bias in (False, True):
        config = NETS[kind](temporal_pos_bias=pos_bias, **overrides)
        net = perturb_temporal(perturb(build_net(config)), perturb)
        gap = (net(x[:, order], c_noise, cond) - net(x, c_noise, cond)[:, order]).abs().max()
        assert gap > 1e-3 if pos_bias else gap < 1e-5


@pytest.mark.parametrize("kind", list(NETS))
def test_label_and_text_are_per_clip(perturb, kind):
    config = NETS[kind](num_classes=0, context_dim=12, pooled_dim=6)
    net = build_net(config)
    perturb(net.spatial)  # temporal layers at zero: the image net per frame
    x, c_noise = clips(), torch.tensor([10.0, 700.0])
    mask = torch.tensor([[True, True, False], [True, False, False]])
    cond = Cond(context=torch.randn(B, 3, 12), context_mask=mask, pooled=torch.randn(B, 6))
    assert torch.equal(net(x, c_noise, cond), per_frame(net.spatial, x, c_noise, cond))
    perturb_temporal(net, perturb)
    changed = Cond(context=cond.context.clone(), context_mask=mask, pooled=cond.pooled)
    changed.context[1] += 1.0
    out, out_changed = net(x, c_noise, cond), net(x, c_noise, changed)
    assert torch.allclose(out[0], out_changed[0], atol=1e-6, rtol=0)
    assert not torch.allclose(out[1], out_changed[1], atol=1e-3)


def test_clip_inputs_are_checked_with_one_clear_message():
    net = VideoUNet(small_unet())
    x, c_noise = clips(), torch.tensor([10.0, 700.0])
    with pytest.raises(ValueError, match=r"expects clips x of shape \(B, F, 3, H, W\)"):
        net(x[:, 0], c_noise, Cond(label=LABELS))
    with pytest.raises(ValueError, match="cond.label has batch 8, x has 2"):
        net(x, c_noise, Cond(label=LABELS.repeat_interleave(F)))
    with pytest.raises(
        ValueError, match=r"independent_frames must be a bool tensor of shape \(2,\)"
    ):
        net(x, c_noise, Cond(label=LABELS), independent_frames=torch.ones(2))
    self_cond = VideoUNet(small_unet(self_condition=True))
    with pytest.raises(ValueError, match=r"cond.self_cond is given per frame, \(B=2, F=4, ...\)"):
        self_cond(x, c_noise, Cond(label=LABELS, self_cond=x[:, 0]))
    assert self_cond(x, c_noise, Cond(label=LABELS, self_cond=x)).shape == x.shape


@pytest.mark.parametrize("kind", list(NETS))
def test_zero_initialised_temporal_outputs_get_gradients(perturb, kind):
    net = build_net(NETS[kind]())
    perturb(net.spatial)  # as after init_from_image: the output layer is no longer zero
    out = net.train()(clips(), torch.tensor([10.0, 700.0]), Cond(label=LABELS))
    (out * torch.randn_like(out)).sum().backward()
    zero_init = [
        p for name, p in net.temporal.named_parameters()
        if name.endswith(("conv.conv.weight", "attn.attn.proj.weight", "adaLN_modulation.1.weight"))
    ]  # fmt: skip
    assert zero_init and all(p.abs().sum() == 0 for p in zero_init)
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in zero_init)


def test_preset_parameter_counts():
    assert count_parameters(build_net(preset("video-unet-tiny"))) == 1_427_587
    assert count_parameters(build_net(preset("video-unet-tiny", num_classes=10))) == 1_428_995
    assert count_parameters(build_net(preset("video-unet-tiny")).spatial) == 1_192_387
    assert count_parameters(build_net(preset("video-dit-tiny"))) == 1_401_104
    assert count_parameters(build_net(preset("video-dit-tiny")).spatial) == 731_280


def test_a_new_image_size_keeps_the_temporal_layers_at_their_levels():
    config = preset("video-unet-tiny", image_size=28)
    assert config.temporal_conv_resolutions == (28, 14, 7)
    assert config.temporal_attention_resolutions == (14, 7)
    with pytest.raises(ValueError, match=r"temporal_attention_resolutions \[5\] never occur"):
        preset("video-unet-tiny", temporal_attention_resolutions=(5,))


def test_video_dit_flops_match_the_flop_counter():
    config = small_dit(context_dim=8)
    cond = Cond(label=torch.zeros(1, dtype=torch.long), context=torch.zeros(1, 5, 8))
    counted = measure_flops(build_net(config), (6, 3, 16, 16), cond)
    assert video_dit_flops(config, 6, context_len=5)["total"] == counted


@pytest.mark.parametrize("kind", list(NETS))
def test_config_round_trips_through_a_run_directory(perturb, kind, tmp_path):
    config = NETS[kind](num_frames=6, temporal_pos_bias=False)
    d = net_config_to_dict(config)
    assert d["type"] == f"video-{kind}" and d["num_frames"] == 6
    assert net_config_from_dict(json.loads(json.dumps(d))) == config
    net = perturb_temporal(perturb(build_net(config)), perturb)
    diffusion = {"schedule": {"kind": "linear"}, "prediction": "eps", "sigma_data": 0.5}
    write_json(tmp_path / "config.json", {"net": d, "train": {"diffusion": diffusion}})
    save_tensors(tmp_path / "model.safetensors", net.state_dict())
    model = load(tmp_path, ema=False)
    assert type(model.net) is type(net) and model.net.config == config
    x, c_noise, cond = clips(), torch.tensor([10.0, 700.0]), Cond(label=LABELS)
    assert torch.equal(model.net(x, c_noise, cond), net(x, c_noise, cond))
    assert model.denoiser(x, torch.tensor([0.3, 0.9]), cond).x0.shape == x.shape
