"""The dynamic threshold's default percentile keeps a flat background: the case of both shipped
models (half of a Fashion-MNIST image is exactly black), where Imagen's 0.995 greys it."""

import torch

from pixdiff.guidance import DEFAULT_PERCENTILE, GuidanceOptions, dynamic_threshold


def half_background(n: int = 4, d: int = 1000) -> torch.Tensor:
    """x0 estimates (n, d): half exactly -1 (background), 49% object in [0, 1), and 1% of
    pixels overshooting to 1.5, as strong guidance makes them."""
    x0 = torch.empty(n, d)
    x0[:, : d // 2] = -1.0
    x0[:, d // 2 : d - d // 100] = torch.linspace(0, 0.99, d // 2 - d // 100)
    x0[:, d - d // 100 :] = 1.5
    return x0


def test_the_default_keeps_the_background_and_clips_only_the_overshoot():
    x0 = half_background()
    out = dynamic_threshold(x0)  # the 90th percentile of |x0| is 1: s = 1, a plain clip
    assert DEFAULT_PERCENTILE == GuidanceOptions().percentile == 0.9
    assert torch.equal(out[:, :500], x0[:, :500])  # background still exactly black
    assert torch.equal(out[:, 500:990], x0[:, 500:990])  # the object unchanged
    assert torch.equal(out[:, 990:], torch.ones(4, 10))  # the overshoot clipped to 1


def test_imagens_percentile_greys_that_background():
    out = dynamic_threshold(half_background(), 0.995)  # s = 1.5: everything divided by it
    assert torch.allclose(out[:, :500], torch.full((4, 500), -1 / 1.5))
