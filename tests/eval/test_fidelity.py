"""PSNR and SSIM against closed forms: a known MSE, constant images, identities."""

import math

import pytest
import torch

from pixdiff.eval.fidelity import SSIM_K1, mean_finite, psnr, ssim


def test_psnr_of_a_known_error():
    x = torch.zeros(2, 3, 8, 8)
    y = x + 0.1  # 0.05 on the [0, 1] scale: MSE 0.0025, PSNR 10 log10(400)
    assert torch.allclose(psnr(y, x), torch.full((2,), 10 * math.log10(400), dtype=torch.float64))
    assert torch.isinf(psnr(x, x)).all() and mean_finite(torch.tensor([math.inf, 2.0])) == 2.0


def test_ssim_of_constant_images_is_the_luminance_term():
    a, b = 0.3, 0.7  # on [0, 1]; variances and covariance are 0, so only luminance remains
    x, y = torch.full((1, 3, 16, 16), 2 * a - 1), torch.full((1, 3, 16, 16), 2 * b - 1)
    c1 = SSIM_K1**2
    expected = (2 * a * b + c1) / (a * a + b * b + c1)
    assert ssim(x, y).item() == pytest.approx(expected, rel=1e-6)  # float32 inputs


def test_ssim_is_one_for_identical_images_symmetric_and_falls_with_noise():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(4, 3, 32, 32, generator=g) * 2 - 1
    assert torch.allclose(ssim(x, x), torch.ones(4, dtype=torch.float64))
    noise = torch.randn(x.shape, generator=g)
    mild, strong = x + 0.05 * noise, x + 0.3 * noise
    assert torch.allclose(ssim(mild, x), ssim(x, mild))
    assert (ssim(strong, x) < ssim(mild, x)).all() and (ssim(mild, x) < 1).all()


def test_bad_shapes_are_named():
    with pytest.raises(ValueError, match="differ in shape"):
        psnr(torch.zeros(1, 3, 8, 8), torch.zeros(1, 3, 8, 9))
    with pytest.raises(ValueError, match="at least 11x11"):
        ssim(torch.zeros(1, 3, 8, 8), torch.zeros(1, 3, 8, 8))
    with pytest.raises(ValueError, match=r"\(N, C, H, W\)"):
        psnr(torch.zeros(3, 8, 8), torch.zeros(3, 8, 8))
