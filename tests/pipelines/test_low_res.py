"""Low-res conditioning: area downsampling, the statistics of noise conditioning augmentation,
per-sample seeded sampling-time augmentation, the sr config, and an SR net overfitting."""

import math

import pytest
import torch
import torch.nn.functional as F

from pixdiff.conditioning import Cond
from pixdiff.config import SRConfig, TrainConfig, apply_overrides
from pixdiff.denoiser import Denoiser
from pixdiff.low_res import downsample, random_crop, sampling_cond, upsample_bicubic
from pixdiff.nets import UNet, preset
from pixdiff.schedule_registry import get_schedule, schedule_from_dict
from pixdiff.schedules import q_sample
from pixdiff.training.batch_inputs import training_cond

pytestmark = pytest.mark.usefixtures("one_thread")


def blocky(n: int, low: int, high: int, seed: int = 0) -> torch.Tensor:
    """(n, 3, high, high) images made of constant low x low blocks, in [-1, 1]."""
    blocks = torch.rand(n, 3, low, low, generator=torch.Generator().manual_seed(seed)) * 2 - 1
    return F.interpolate(blocks, size=(high, high), mode="nearest")


def test_downsample_averages_each_block():
    x = torch.arange(16.0).reshape(1, 1, 4, 4)
    assert downsample(x, 2).flatten().tolist() == [2.5, 4.5, 10.5, 12.5]
    images = blocky(2, 4, 16)
    assert torch.allclose(downsample(images, 4), images[..., ::4, ::4])


def test_random_crops_sit_on_the_stride_and_match_the_low_res_crop():
    images = torch.rand(6, 3, 16, 16, generator=torch.Generator().manual_seed(1)) * 2 - 1
    crops = random_crop(images, 8, 2, torch.Generator().manual_seed(0))
    low = downsample(images, 8)
    for img, crop, lo in zip(images, crops, low, strict=True):
        ((r, c),) = [
            (r, c)
            for r in range(9)
            for c in range(9)
            if torch.equal(img[:, r : r + 8, c : c + 8], crop)
        ]
        assert r % 2 == 0 and c % 2 == 0
        assert torch.allclose(
            downsample(crop[None], 4)[0], lo[:, r // 2 : r // 2 + 4, c // 2 : c // 2 + 4]
        )
    sr = SRConfig(low_res_size=8, aug_max=0.0)
    cond = training_cond(crops, sr, torch.Generator().manual_seed(0), size=4)
    # aug_max 0: the vp-cosine path at t = 0 (alpha just below 1, sigma just above 0)
    assert cond.low_res.shape == (6, 3, 4, 4)
    assert torch.allclose(cond.low_res, downsample(crops, 4), atol=5e-3)


def test_augmentation_has_the_forward_process_moments_at_uniform_levels():
    """y_aug = alpha(t) y + sigma(t) eps with t ~ U[0, aug_max] (CDM; Imagen, Sec. 2.4): the
    standardised residual (y_aug - alpha(t) y) / sigma(t) is N(0, 1) at every level."""
    n, aug_max = 4000, 0.4
    sr = SRConfig(low_res_size=4, aug_max=aug_max, aug_schedule={"kind": "vp-cosine"})
    images = blocky(n, 4, 8)
    cond = training_cond(images, sr, torch.Generator().manual_seed(0))
    t = cond.low_res_noise.double()
    assert cond.low_res.shape == (n, 3, 4, 4) and t.shape == (n,)
    ks = (t.sort().values / aug_max - torch.arange(1, n + 1) / n).abs().max()
    assert 0 <= t.min() and t.max() <= aug_max and ks < 1.63 / math.sqrt(n)  # KS at 1%
    c = get_schedule("vp-cosine").coefs(t)
    z = (cond.low_res.double() - c.alpha * downsample(images, 4).double()) / c.sigma
    for part in z.chunk(4):  # ordered by sample, so each quarter spans all levels
        assert abs(float(part.mean())) < 0.02 and abs(float(part.var()) - 1) < 0.03
    bins = torch.bucketize(t, torch.tensor([0.1, 0.2, 0.3], dtype=torch.float64))
    for b in range(4):  # and within each quarter of the level range
        assert abs(float(z[bins == b].var()) - 1) < 0.04, b


def test_sampling_augmentation_is_per_sample_seeded():
    low, schedule = blocky(3, 4, 4), get_schedule("vp-cosine")
    full = sampling_cond(low, 0.3, schedule, seed=7)
    assert torch.equal(sampling_cond(low[1:], 0.3, schedule, seed=8).low_res, full.low_res[1:])
    assert full.low_res_noise.tolist() == pytest.approx([0.3] * 3)
    exact = sampling_cond(low, 0.0, get_schedule("linear"), seed=0)  # t = 0 is the data
    assert torch.equal(exact.low_res, low)
    with pytest.raises(ValueError, match=r"time in \[0, 1\]"):
        sampling_cond(low, 1.5, schedule, seed=0)


def test_sr_config_is_validated():
    with pytest.raises(ValueError, match="sr.aug_max"):
        SRConfig(aug_max=1.5)
    with pytest.raises(ValueError, match="unknown schedule"):
        SRConfig(aug_schedule={"kind": "nope"})
    cfg = apply_overrides(TrainConfig(), ["sr.low_res_size=16", "sr.aug_schedule.kind=linear"])
    assert (
        cfg.sr.low_res_size == 16 and schedule_from_dict(cfg.sr.aug_schedule).beta_kind == "linear"
    )


def test_sr_net_overfits_a_tiny_batch():
    """A tiny SR U-Net learns 4 blocky 16x16 images from their 4x4 low-res versions: the x0
    loss at random times and augmentation levels falls > 8x in 150 steps, and at t = 0.99
    (x_t nearly pure noise) it is the low-res input that tells the images apart."""
    torch.manual_seed(0)
    net = UNet(preset("unet-tiny", image_size=16, attention_resolutions=(8,), low_res_channels=3))
    denoiser = Denoiser(net, get_schedule("linear"), "x0")
    x0, sr = blocky(4, 4, 16), SRConfig(low_res_size=4, aug_max=0.2)
    gen = torch.Generator().manual_seed(0)
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)

    def loss_at(t, cond):
        x_t = q_sample(denoiser.schedule, x0, t, torch.randn(x0.shape, generator=gen))
        return (denoiser(x_t, t, cond).x0 - x0).square().mean()

    losses = []
    for _ in range(150):
        t = torch.rand(4, generator=gen, dtype=torch.float64) * 0.98 + 0.01
        loss = loss_at(t, training_cond(x0, sr, gen))
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert sum(losses[-5:]) < sum(losses[:5]) / 8, (losses[:5], losses[-5:])
    with torch.no_grad():
        cond = training_cond(x0, sr, gen)
        shuffled = Cond(low_res=cond.low_res.roll(1, 0), low_res_noise=cond.low_res_noise)
        t = torch.full((4,), 0.99, dtype=torch.float64)
        assert 3 * loss_at(t, cond) < loss_at(t, shuffled)


def test_bicubic_baseline_keeps_constants_and_clips_overshoot():
    flat = torch.full((1, 3, 4, 4), 0.3)
    assert torch.allclose(upsample_bicubic(flat, 8), torch.full((1, 3, 8, 8), 0.3))
    edge = torch.ones(1, 1, 4, 4)
    edge[..., :2] = -1  # a hard edge: bicubic overshoots past +-1 next to it
    up = upsample_bicubic(edge, 16)
    assert up.shape == (1, 1, 16, 16) and up.min() == -1 and up.max() == 1
