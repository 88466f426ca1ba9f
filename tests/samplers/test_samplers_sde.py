"""Reverse-SDE predictor-corrector sampling (sde-pc) driven by exact denoisers."""

import math

import pytest
import torch
from order_oracle import GAUSS, MU, CountingDenoiser, S

import pixdiff
from pixdiff.samplers import SAMPLERS, sample_sde_pc
from pixdiff.schedule_registry import get_schedule
from pixdiff.timesteps import time_grid
from pixdiff.toy import GaussianMixture

MIXTURE = GaussianMixture(
    torch.tensor([[-2.0, 0.0], [2.0, 1.0]], dtype=torch.float64),
    torch.tensor([0.3, 0.5], dtype=torch.float64),
    torch.tensor([0.25, 0.75], dtype=torch.float64),
)


@pytest.mark.parametrize(
    ("schedule_name", "prediction", "predictor"),
    [
        ("vp-linear", "eps", "euler-maruyama"),  # Song et al.'s VP SDE
        ("vp-linear", "eps", "reverse-diffusion"),
        ("ve", "score", "reverse-diffusion"),  # Song et al.'s VE SDE (Alg. 2)
        ("flow", "flow", "reverse-diffusion"),  # from zero SNR at t = 1
    ],
)
def test_pc_matches_gaussian_moments(schedule_name, prediction, predictor):
    """200 steps with one Langevin correction each: mean and std of N(mu, s^2) data within
    sampling error (plus 0.01 for the discretization and the corrector's step-size bias)."""
    n = 4000
    gen = torch.Generator().manual_seed(1)
    schedule = get_schedule(schedule_name)
    d = GAUSS.denoiser(schedule, prediction)
    x_T = schedule.prior_std() * torch.randn(n, 2, generator=gen, dtype=torch.float64)
    x = sample_sde_pc(d, x_T, time_grid(schedule, 200), predictor=predictor, generator=gen)
    se_mean, se_std = S / math.sqrt(n), S / math.sqrt(2 * n)
    assert (x.mean(0) - torch.tensor(MU)).abs().max() < 4 * se_mean + 0.01, x.mean(0)
    assert (x.std(0) - S).abs().max() < 4 * se_std + 0.01, x.std(0)


def test_pc_recovers_mixture_mode_weights():
    n = 4000
    gen = torch.Generator().manual_seed(3)
    d = MIXTURE.denoiser(get_schedule("cosine"), "v")
    x_T = torch.randn(n, 2, generator=gen, dtype=torch.float64)
    x = sample_sde_pc(d, x_T, time_grid(d.schedule, 150), generator=gen)
    mode = MIXTURE.responsibilities(x, 1.0, 0.0).argmax(1)
    frac = (mode == 1).double().mean().item()
    assert abs(frac - 0.75) < 4 * math.sqrt(0.75 * 0.25 / n)
    for k, std in enumerate((0.3, 0.5)):  # samples sit inside their modes, at their widths
        spread = x[mode == k].std(0)
        assert (spread - std).abs().max() < 0.05, (k, spread)


@pytest.mark.parametrize("corrector_steps", [0, 1, 2])
def test_nfe_per_step_is_one_plus_corrector_steps(corrector_steps):
    d = CountingDenoiser(GAUSS.denoiser(get_schedule("linear")))
    ts = time_grid(d.schedule, 6)
    sample_sde_pc(d, torch.randn(3, 2), ts, corrector_steps=corrector_steps)
    assert d.calls == 6 * (1 + corrector_steps)
    assert SAMPLERS["sde-pc"].nfe_per_step == 2  # the default, corrector_steps = 1


def test_predictor_alone_does_not_depend_on_batch_size():
    """Per-sample generators make each sample its own; the Langevin step size is averaged
    over the batch (as in Song et al.'s code), so this holds without the corrector."""
    d = GAUSS.denoiser(get_schedule("linear"))
    options = {"corrector_steps": 0}
    big = pixdiff.sample(d, (6, 2), sampler="sde-pc", steps=20, seed=7, options=options)
    small = pixdiff.sample(d, (2, 2), sampler="sde-pc", steps=20, seed=7, options=options)
    torch.testing.assert_close(big[:2], small)


def test_bad_input():
    d = GAUSS.denoiser(get_schedule("flow"), "flow")
    with pytest.raises(ValueError, match="euler-maruyama needs alpha > 0"):
        pixdiff.sample(d, (2, 2), sampler="sde-pc", options={"predictor": "euler-maruyama"})
    with pytest.raises(ValueError, match="unknown SDE predictor 'euler'"):
        pixdiff.sample(d, (2, 2), sampler="sde-pc", options={"predictor": "euler"})
    with pytest.raises(ValueError, match="snr > 0"):
        pixdiff.sample(d, (2, 2), sampler="sde-pc", options={"snr": 0.0})
    with pytest.raises(ValueError, match=r"unknown sampler option\(s\) \['corector_steps'\]"):
        pixdiff.sample(d, (2, 2), sampler="sde-pc", options={"corector_steps": 2})
