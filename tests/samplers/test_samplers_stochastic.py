"""Stochastic samplers of euler.py and dpm_solver.py: moments and mode weights with exact
denoisers, and the DDPM identity of SDE-DPM-Solver++(1)."""

import math

import pytest
import torch
from order_oracle import GAUSS, MU, S

import pixdiff
from pixdiff.posterior import learned_log_variance
from pixdiff.samplers import SAMPLERS, sample_ddpm
from pixdiff.sampling import default_spacing
from pixdiff.schedule_registry import get_schedule
from pixdiff.toy import GaussianMixture

MIXTURE = GaussianMixture(
    torch.tensor([[-2.0, 0.0], [2.0, 1.0]], dtype=torch.float64),
    torch.tensor([0.3, 0.5], dtype=torch.float64),
    torch.tensor([0.25, 0.75], dtype=torch.float64),
)
# (sampler, options, schedule, prediction, spacing, steps): each on a different path
CASES = [
    ("euler-ancestral", {}, "vp-cosine", "v", "log-snr", 300),  # first order in its std
    ("heun", {"s_churn": 20.0, "s_tmin": 0.05, "s_tmax": 50.0}, "edm", "edm", "karras", 60),
    ("dpmpp-2m-sde", {}, "linear", "eps", "trailing", 50),
    ("dpmpp-1-sde", {}, "flow", "flow", "uniform-t", 100),
]
IDS = [c[0] for c in CASES]


def draw(gm, case, n, seed):
    name, options, schedule_name, prediction, spacing, steps = case
    schedule = get_schedule(schedule_name)
    gen = torch.Generator().manual_seed(seed)
    x_T = schedule.prior_std() * torch.randn(n, 2, generator=gen, dtype=torch.float64)
    ts = pixdiff.time_grid(schedule, steps, spacing=spacing)
    run = SAMPLERS[name].bind(options)
    return run(gm.denoiser(schedule, prediction), x_T, ts, generator=gen)


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_moments_match_gaussian_data(case):
    n = 4000
    x = draw(GAUSS, case, n, seed=1)
    se_mean, se_std = S / math.sqrt(n), S / math.sqrt(2 * n)
    # 0.01: discretization bias, and the linear schedule's non-zero terminal SNR (0.3% of mu)
    assert (x.mean(0) - torch.tensor(MU)).abs().max() < 4 * se_mean + 0.01
    assert (x.std(0) - S).abs().max() < 4 * se_std + 0.01


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_mixture_mode_weights_are_recovered(case):
    n = 4000
    x = draw(MIXTURE, case, n, seed=3)
    mode = MIXTURE.responsibilities(x, 1.0, 0.0).argmax(1)
    frac = (mode == 1).double().mean().item()
    assert abs(frac - 0.75) < 4 * math.sqrt(0.75 * 0.25 / n)
    # samples sit inside their modes, not between them
    for k, s in enumerate((0.3, 0.5)):
        assert (x[mode == k] - MIXTURE.means[k]).norm(dim=1).mean() < 1.5 * s * math.sqrt(2)


@pytest.mark.parametrize("schedule_name", ["linear", "vp-cosine", "ve", "edm", "flow"])
def test_sde_dpm_solver_pp_1_is_ddpm(schedule_name):
    """SDE-DPM-Solver++(1) (eta = 1) is the DDPM posterior step with fixed-small variance:
    (sigma_s/sigma_t) e^-h = alpha_ts sigma_s^2/sigma_t^2 and sigma_s^2 (1 - e^-2h) = beta~."""
    schedule = get_schedule(schedule_name)
    d = GAUSS.denoiser(schedule)
    ts = pixdiff.time_grid(schedule, 20, spacing=default_spacing(schedule))
    x_T = schedule.prior_std() * torch.randn(16, 2, dtype=torch.float64)

    def gens():
        return [torch.Generator().manual_seed(i) for i in range(16)]

    a = SAMPLERS["dpmpp-1-sde"].bind(None)(d, x_T, ts, generator=gens())
    b = sample_ddpm(d, x_T, ts, generator=gens())
    torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


def test_no_churn_heun_is_deterministic_heun():
    d = GAUSS.denoiser(get_schedule("edm"), "edm")
    x_T = 80 * torch.randn(8, 2, dtype=torch.float64)
    ts = pixdiff.time_grid(d.schedule, 10)
    a = SAMPLERS["heun"].bind({"s_churn": 40.0, "s_tmin": 1e3})(d, x_T, ts)  # range excludes all
    torch.testing.assert_close(a, SAMPLERS["heun"].bind(None)(d, x_T, ts), rtol=0, atol=0)


@pytest.mark.parametrize("name", ["euler-ancestral", "dpmpp-2m-sde", "dpmpp-1-sde"])
def test_samples_do_not_depend_on_batch_size(name):
    d = GAUSS.denoiser(get_schedule("cosine"), "v")
    big = pixdiff.sample(d, (6, 2), sampler=name, steps=10, seed=7, dtype=torch.float64)
    small = pixdiff.sample(d, (2, 2), sampler=name, steps=10, seed=9, dtype=torch.float64)
    torch.testing.assert_close(big[2:4], small)
    heun = pixdiff.sample(d, (6, 2), sampler="heun", steps=10, seed=7, options={"s_churn": 5.0})
    assert heun.isfinite().all()


class _WithVariance:
    """An oracle network that also outputs a constant variance channel v (learn_sigma)."""

    def __init__(self, net, v: float):
        self.net, self.v = net, v

    def __call__(self, x_in, c_noise):
        out = self.net(x_in, c_noise)
        return torch.cat([out, torch.full_like(out, self.v)], dim=1)


@pytest.mark.parametrize(("v", "fixed"), [(-1.0, "small"), (1.0, "large")])
def test_learned_variance_interpolates_between_the_fixed_ones(v, fixed):
    """v = -1 is beta~ and v = +1 is beta (Nichol & Dhariwal 2021, Eq. 15): the learned-variance
    sampler then draws exactly what the fixed-variance one draws from the same noise."""
    schedule = get_schedule("linear")
    plain = GAUSS.denoiser(schedule, "eps")
    learned = pixdiff.Denoiser(_WithVariance(plain.net, v), schedule, "eps", learn_sigma=True)
    ts = pixdiff.time_grid(schedule, 20, spacing="trailing")
    x_T = torch.randn(64, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    draws = [
        SAMPLERS[name].bind(None)(d, x_T, ts, generator=torch.Generator().manual_seed(1))
        for name, d in (
            ("ddpm-learned", learned),
            (f"ddpm-{fixed}" if fixed == "large" else "ddpm", plain),
        )
    ]
    torch.testing.assert_close(draws[0], draws[1], rtol=1e-10, atol=1e-10)


def test_learned_variance_in_between_and_refused_without_it():
    x = torch.zeros(3)
    small, large = torch.tensor(0.01).log(), torch.tensor(0.04).log()
    log_var = learned_log_variance(x, small, large)  # v = 0: the geometric mean
    torch.testing.assert_close(log_var.exp(), torch.full((3,), 0.02))
    d = GAUSS.denoiser(get_schedule("linear"), "eps")
    with pytest.raises(ValueError, match="needs a model that predicts its variance"):
        pixdiff.sample(d, (2, 2), sampler="ddpm-learned", steps=5)
