"""The low-resolution input of a super-resolution model, with noise conditioning augmentation.

A super-resolution model sees x_t and a low-resolution image y upsampled and concatenated to it
(SR3, Saharia et al. 2021, Sec. 2.4). Noise conditioning augmentation (CDM, Ho et al. 2022,
Gaussian conditioning augmentation; Imagen, Saharia et al. 2022, Sec. 2.4) corrupts y by the
forward process of a schedule to a time t_aug and gives the network t_aug too:

    y_aug = alpha(t_aug) y + sigma(t_aug) eps,   eps ~ N(0, I)

Training draws t_aug ~ U[0, sr.aug_max] per image (:func:`aug_levels`; a training batch's Cond
is made in :mod:`pixdiff.training.batch_inputs`); sampling fixes it (``sr.aug_level``), so a
cascade's SR stage reads the previous stage's imperfect output as a noisy view of a clean image
instead of copying its artefacts. In training y is the image area-downsampled.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from pixdiff.conditioning import Cond
from pixdiff.samplers.common import per_sample_generators, randn
from pixdiff.schedules import Schedule, q_sample

# The augmentation noise of sample i is seeded seed + i + AUG_SEED_OFFSET, so it never shares a
# stream with the sampler noise of any sample (seeded seed + i) for seeds below 2**32.
AUG_SEED_OFFSET = 2**32


def downsample(images: Tensor, size: int) -> Tensor:
    """Area downsampling (N, C, H, W) -> (N, C, size, size): each low-res pixel is the mean of
    the pixels it covers (torch's ``area`` mode, adaptive average pooling)."""
    return F.interpolate(images, size=(size, size), mode="area")


def upsample_bicubic(images: Tensor, size: int) -> Tensor:
    """Bicubic upsampling (Keys 1981, a = -0.75 as in torch) of model-space images (N, C, h, w)
    to size x size, clipped to [-1, 1]: the baseline a super-resolution model must beat."""
    up = F.interpolate(images, size=(size, size), mode="bicubic", align_corners=False)
    return up.clamp(-1, 1)


def random_crop(images: Tensor, size: int, stride: int, generator: torch.Generator) -> Tensor:
    """A random ``size`` x ``size`` crop of each image (N, C, H, W), at offsets that are
    multiples of ``stride``.

    Super-resolution models are fully convolutional, so they can train on crops and sample
    whole images (Imagen, Saharia et al. 2022, Sec. 4.1, trains its 256 -> 1024 model on
    64 -> 256 crops). With ``stride`` the downsampling factor, the crop's area-downsampled copy
    is exactly the matching crop of the downsampled image.
    """
    n, _, h, w = images.shape
    rows = torch.randint(0, (h - size) // stride + 1, (n,), generator=generator) * stride
    cols = torch.randint(0, (w - size) // stride + 1, (n,), generator=generator) * stride
    return torch.stack(
        [
            img[:, r : r + size, c : c + size]
            for img, r, c in zip(images, rows.tolist(), cols.tolist(), strict=True)
        ]
    )


def aug_levels(n: int, aug_max: float, generator: torch.Generator) -> Tensor:
    """(n,) float64 augmentation times t_aug ~ U[0, aug_max], one per image (non-truncated
    conditioning augmentation, CDM, Ho et al. 2022)."""
    return aug_max * torch.rand(n, generator=generator, dtype=torch.float64)


def low_res_cond(low_res: Tensor, levels: Tensor, schedule: Schedule, noise: Tensor) -> Cond:
    """The Cond of a super-resolution model: ``low_res`` (N, C, h, w) noised by q(y_t | y) of
    ``schedule`` to the times ``levels`` (N,) (Ho et al. 2020, Eq. 4), and those times."""
    levels = levels.to(low_res.device)
    augmented = q_sample(schedule, low_res, levels, noise.to(low_res.device, low_res.dtype))
    return Cond(low_res=augmented, low_res_noise=levels.float())


def sampling_cond(low_res: Tensor, level: float, schedule: Schedule, *, seed: int) -> Cond:
    """The low-res Cond for sampling: every image augmented at the time ``level``, with
    per-sample seeded noise (sample i: ``seed + i + AUG_SEED_OFFSET``)."""
    if not 0 <= level <= 1:
        raise ValueError(f"the augmentation level is a time in [0, 1], got {level}")
    n = low_res.shape[0]
    noise = randn(low_res.shape, per_sample_generators(seed + AUG_SEED_OFFSET, n))
    levels = torch.full((n,), float(level), dtype=torch.float64)
    return low_res_cond(low_res, levels, schedule, noise)
