"""DDPM and DDIM driven by exact denoisers (Gaussian and Gaussian-mixture data)."""

import math

import numpy as np
import pytest
import torch
from order_oracle import GAUSS, MU, S

import pixdiff
from pixdiff.samplers import SamplingError
from pixdiff.schedule_registry import get_schedule
from pixdiff.timesteps import time_grid
from pixdiff.toy import GaussianMixture


def ddim_vs_exact(schedule, steps, n=2000, prediction="eps"):
    """Max |DDIM - exact ODE solution| from the same starting points."""
    ts = time_grid(schedule, steps, spacing="trailing")
    a, s = schedule.alpha(ts[0]).item(), schedule.sigma(ts[0]).item()
    x_T = s * torch.randn(n, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    x = pixdiff.sample_ddim(GAUSS.denoiser(schedule, prediction), x_T, ts)
    return x, (x - GAUSS.ode_map_gaussian(x_T, a, s)).abs().max().item()


@pytest.mark.parametrize(
    ("name", "prediction"), [("linear", "eps"), ("cosine", "v"), ("flow", "flow")]
)
def test_ddim_error_falls_at_first_order(name, prediction):
    steps = [25, 50, 100, 200]
    errs = [ddim_vs_exact(get_schedule(name), n, prediction=prediction)[1] for n in steps]
    slope = -np.polyfit(np.log(steps), np.log(errs), 1)[0]
    assert abs(slope - 1) < 0.1, (errs, slope)


def test_ddim_moments_match_the_data():
    """DDIM is Euler in sigma/alpha: at 100 steps its std carries the first-order bias
    (~2.8% for s = 0.5 on the linear schedule); at 400 steps it is within 1%."""
    n = 20000
    x = pixdiff.sample(
        GAUSS.denoiser(get_schedule("linear")), (n, 2), steps=400, seed=0, dtype=torch.float64
    )
    se = S / math.sqrt(n)
    torch.testing.assert_close(x.mean(0), torch.tensor(MU).double(), rtol=0, atol=4 * se + 0.01)
    torch.testing.assert_close(x.std(0), torch.full((2,), S).double(), rtol=0.01, atol=0)
    x100 = pixdiff.sample(
        GAUSS.denoiser(get_schedule("linear")), (n, 2), steps=100, seed=0, dtype=torch.float64
    )
    torch.testing.assert_close(x100.mean(0), torch.tensor(MU).double(), rtol=0.01, atol=0)
    torch.testing.assert_close(x100.std(0), torch.full((2,), S).double(), rtol=0.03, atol=0)


@pytest.mark.parametrize("sampler", ["ddpm", "ddpm-large"])
def test_ddpm_ancestral_matches_moments_within_sampling_error(sampler):
    n = 8000
    gen = torch.Generator().manual_seed(1)
    x_T = torch.randn(n, 2, generator=gen, dtype=torch.float64)
    d = GAUSS.denoiser(get_schedule("linear"))
    variance = "large" if sampler == "ddpm-large" else "small"
    x = pixdiff.sample_ddpm(d, x_T, time_grid(d.schedule, 250), variance=variance, generator=gen)
    se_mean, se_std = S / math.sqrt(n), S / math.sqrt(2 * n)
    assert (x.mean(0) - torch.tensor(MU)).abs().max() < 4 * se_mean
    # fixed-large over-disperses by the extra beta variance (~beta_1 at the last steps only)
    assert (x.std(0) - S).abs().max() < 4 * se_std + 0.01


@pytest.mark.parametrize("prediction", pixdiff.PREDICTION_TYPES)
def test_every_parameterization_gives_the_same_ddim_path(prediction):
    ref, _ = ddim_vs_exact(get_schedule("cosine"), 20, n=64, prediction="x0")
    x, _ = ddim_vs_exact(get_schedule("cosine"), 20, n=64, prediction=prediction)
    # edm: the oracle recovers t from c_noise = ln(sigma)/4 through sigmoid(log_snr), which
    # loses digits where alpha_bar ~ 1; the Denoiser itself is exact.
    tol = 1e-7 if prediction == "edm" else 1e-9
    torch.testing.assert_close(x, ref, rtol=tol, atol=tol)


def test_ddim_eta_one_equals_ddpm_fixed_small():
    """Song et al. 2021 Eq. 16: eta = 1 recovers the DDPM posterior, identical in float64."""
    d = GAUSS.denoiser(get_schedule("linear"))
    x_T = torch.randn(16, 2, dtype=torch.float64)
    ts = time_grid(d.schedule, 50, spacing="linspace")
    gens = lambda: [torch.Generator().manual_seed(i) for i in range(16)]  # noqa: E731
    a = pixdiff.sample_ddim(d, x_T, ts, eta=1.0, generator=gens())
    b = pixdiff.sample_ddpm(d, x_T, ts, generator=gens())
    torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("sampler", ["ddim", "ddpm"])
def test_mixture_mode_weights_are_recovered(sampler):
    gm = GaussianMixture(
        torch.tensor([[-2.0, 0.0], [2.0, 1.0]], dtype=torch.float64),
        torch.tensor([0.3, 0.5], dtype=torch.float64),
        torch.tensor([0.25, 0.75], dtype=torch.float64),
    )
    n = 6000
    gen = torch.Generator().manual_seed(3)
    d = gm.denoiser(get_schedule("cosine"), "v")
    x_T = torch.randn(n, 2, generator=gen, dtype=torch.float64)
    sample_fn = pixdiff.sample_ddim if sampler == "ddim" else pixdiff.sample_ddpm
    x = sample_fn(d, x_T, time_grid(d.schedule, 100), generator=gen)
    mode = gm.responsibilities(x, 1.0, 0.0).argmax(1)
    frac = (mode == 1).double().mean().item()
    assert abs(frac - 0.75) < 4 * math.sqrt(0.75 * 0.25 / n)
    # samples sit inside their modes, not between them
    assert (x[mode == 1] - gm.means[1]).norm(dim=1).mean() < 3 * 0.5


def test_samples_do_not_depend_on_batch_size():
    d = GAUSS.denoiser(get_schedule("linear"))
    big = pixdiff.sample(d, (6, 2), sampler="ddpm", steps=20, seed=7)
    small = pixdiff.sample(d, (2, 2), sampler="ddpm", steps=20, seed=7)
    torch.testing.assert_close(big[:2], small)
    shifted = pixdiff.sample(d, (2, 2), sampler="ddpm", steps=20, seed=[9, 10])
    torch.testing.assert_close(big[2:4], shifted)


def test_sample_accepts_any_callable_model():
    """A plain function (x_t, timestep) -> eps with its schedule and prediction type."""
    sched = get_schedule("linear")

    def model(x_t, timestep):  # exact E[eps | x_t] = sigma x_t for N(0, 1) data (VP path)
        assert timestep.shape == (x_t.shape[0],) and timestep.max() <= 999
        return sched.sigma(sched.t_from_timestep(timestep)).float().view(-1, 1, 1, 1) * x_t

    x = pixdiff.sample(
        model, (1000, 1, 2, 2), schedule="linear", prediction="eps", steps=200, seed=0
    )
    assert x.shape == (1000, 1, 2, 2)
    assert abs(x.mean().item()) < 0.05 and abs(x.std().item() - 1.0) < 0.03


def test_bad_input():
    d = GAUSS.denoiser(get_schedule("linear"))
    with pytest.raises(ValueError, match="unknown sampler 'dpm'.*valid"):
        pixdiff.sample(d, (2, 2), sampler="dpm")
    with pytest.raises(ValueError, match=r"steps must be in \[1, 1000\]"):
        pixdiff.sample(d, (2, 2), steps=2000)
    with pytest.raises(ValueError, match=r"unknown sampler option\(s\) \['etta'\].*valid.*eta"):
        pixdiff.sample(d, (2, 2), options={"etta": 0.5})
    with pytest.raises(ValueError, match="eta must be in"):
        pixdiff.sample(d, (2, 2), options={"eta": 2.0})
    with pytest.raises(ValueError, match="needs schedule= and prediction="):
        pixdiff.sample(lambda x, t: x, (2, 2))
    with pytest.raises(ValueError, match="shape must be"):
        pixdiff.sample(d, (0, 2))

    def nan_model(x, t):
        return x * float("nan")

    with pytest.raises(SamplingError, match="step 1 of 10"):
        pixdiff.sample(nan_model, (2, 2), schedule="linear", prediction="eps", steps=10)


def test_ddim_inversion_then_sampling_returns_x0():
    from pixdiff.samplers.ddim import invert_ddim

    gm = GaussianMixture(
        torch.tensor([[-2.0, 0.0], [2.0, 1.0]], dtype=torch.float64),
        torch.tensor([0.3, 0.5], dtype=torch.float64),
        torch.tensor([0.5, 0.5], dtype=torch.float64),
    )
    d = gm.denoiser(get_schedule("cosine"), "eps")
    x0, _ = gm.sample(200, torch.Generator().manual_seed(0))
    errs = []
    for steps in (100, 400):
        ts = time_grid(d.schedule, steps, spacing="trailing")
        x_T = invert_ddim(d, x0, ts)
        assert abs(x_T.std().item() - 1) < 0.15  # inverted latents look like prior noise
        errs.append((pixdiff.sample_ddim(d, x_T, ts) - x0).abs().max().item())
    assert errs[1] < 0.05 and errs[1] < errs[0] / 2, errs
