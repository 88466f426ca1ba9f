"""Paired image fidelity: PSNR and SSIM of images against their ground truth.

Both take images in model space [-1, 1] and score them on the [0, 1] scale (data range 1),
per image; the caller averages. They are the standard super-resolution scores (SR3, Saharia
et al. 2021, Table 1), which reward the mean of the plausible images: a sharp sample can score
below a blurry upsampling, so read them beside a feature distance.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

# SSIM constants (Wang et al. 2004, Sec. III-C): C1 = (K1 L)^2, C2 = (K2 L)^2 with L = 1,
# and an 11x11 Gaussian window of std 1.5
SSIM_K1, SSIM_K2, SSIM_WINDOW, SSIM_SIGMA = 0.01, 0.03, 11, 1.5


def _unit_range(images: Tensor, name: str) -> Tensor:
    """(N, C, H, W) model-space images as float64 in [0, 1] (clipped)."""
    if images.ndim != 4:
        raise ValueError(f"{name} must be (N, C, H, W), got shape {tuple(images.shape)}")
    return ((images.double() + 1) / 2).clamp(0, 1)


def _pair(images: Tensor, reference: Tensor) -> tuple[Tensor, Tensor]:
    """Both batches in [0, 1], after checking that their shapes match."""
    if images.shape != reference.shape:
        raise ValueError(
            f"images {tuple(images.shape)} and reference {tuple(reference.shape)} differ in shape"
        )
    return _unit_range(images, "images"), _unit_range(reference, "reference")


def psnr(images: Tensor, reference: Tensor) -> Tensor:
    """Peak signal-to-noise ratio per image, (N,) float64 in dB: 10 log10(1 / MSE) on [0, 1].

    Identical images score +inf.
    """
    x, y = _pair(images, reference)
    mse = (x - y).pow(2).flatten(1).mean(1)
    return 10 * torch.log10(1 / mse)


def _gaussian_window(size: int, sigma: float) -> Tensor:
    """(size, size) float64 Gaussian weights summing to 1."""
    r = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    g = torch.exp(-(r**2) / (2 * sigma**2))
    g = g / g.sum()
    return g[:, None] * g[None, :]


def ssim(images: Tensor, reference: Tensor) -> Tensor:
    """Structural similarity per image, (N,) float64 (Wang et al. 2004, Eq. 13).

    Local means, variances and covariance under an 11x11 Gaussian window (std 1.5) over the
    windows that fit inside the image ("valid", as the authors' reference code), per channel;
    the SSIM map is averaged over positions and channels. Images must be at least 11x11.
    """
    x, y = _pair(images, reference)
    n, c, h, w = x.shape
    if min(h, w) < SSIM_WINDOW:
        raise ValueError(f"SSIM needs images of at least {SSIM_WINDOW}x{SSIM_WINDOW}, got {h}x{w}")
    window = _gaussian_window(SSIM_WINDOW, SSIM_SIGMA).to(x.device)
    window = window.expand(c, 1, SSIM_WINDOW, SSIM_WINDOW)

    def blur(z: Tensor) -> Tensor:
        return F.conv2d(z, window, groups=c)

    mu_x, mu_y = blur(x), blur(y)
    var_x = blur(x * x) - mu_x**2
    var_y = blur(y * y) - mu_y**2
    cov = blur(x * y) - mu_x * mu_y
    c1, c2 = SSIM_K1**2, SSIM_K2**2
    num = (2 * mu_x * mu_y + c1) * (2 * cov + c2)
    den = (mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2)
    return (num / den).flatten(1).mean(1)


def mean_finite(values: Tensor) -> float:
    """Mean of the finite entries (PSNR of an exact copy is +inf); NaN when there are none."""
    finite = values[torch.isfinite(values)]
    return finite.mean().item() if len(finite) else math.nan
