"""Samplers on clips (N, F, C, H, W): an analytic video oracle, a Gaussian whose frames are
correlated as rho^|i - j| (pixdiff.toy.FrameCorrelatedGaussian), must come out with that
correlation across frames, through samplers that never learned about frames."""

import pytest
import torch

import pixdiff
from pixdiff.schedule_registry import get_schedule
from pixdiff.toy import FrameCorrelatedGaussian

RHO, FRAMES, STD = 0.8, 4, 0.5


def frame_correlation(x: torch.Tensor, lag: int) -> float:
    """Pearson correlation of frames lag apart, pooled over clips, frames and pixels."""
    a, b = x[:, :-lag].flatten(), x[:, lag:].flatten()
    return torch.corrcoef(torch.stack([a, b]))[0, 1].item()


@pytest.mark.parametrize(("sampler", "steps"), [("ddim", 250), ("dpmpp-2m", 100), ("heun", 100)])
def test_samplers_reproduce_the_frame_correlation(sampler, steps):
    """At 25 steps DPM-Solver++(2M) gives 0.850 and Heun 0.841 (the least-variance mode,
    std 0.17, needs fine steps near t = 0); at these step counts all are within 0.015."""
    data = FrameCorrelatedGaussian(FRAMES, RHO, STD)
    denoiser = data.exact_denoiser(get_schedule("linear"))
    x = pixdiff.sample(
        denoiser, (2000, FRAMES, 1, 4, 4), sampler=sampler, steps=steps, seed=0,
        dtype=torch.float64,
    )  # fmt: skip
    assert x.shape == (2000, FRAMES, 1, 4, 4)
    # 32,000 pixels per lag: the sampling error of a correlation of 0.8 is ~0.002
    for lag in (1, 2):
        assert abs(frame_correlation(x, lag) - RHO**lag) < 0.015, (lag, frame_correlation(x, lag))
    assert abs(x.std().item() - STD) < 0.02


def test_oracle_posterior_mean_is_the_data_at_t0_and_shrinks_at_t1():
    data = FrameCorrelatedGaussian(FRAMES, RHO, STD)
    x = torch.randn(3, FRAMES, 1, 2, 2, dtype=torch.float64)
    torch.testing.assert_close(data.posterior_mean(x, torch.ones(3), torch.zeros(3)), x)
    assert data.posterior_mean(x, torch.zeros(3), torch.ones(3)).abs().max() == 0
