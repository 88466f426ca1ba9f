"""Loss weightings (training/weighting.py) against their formulas at known log-SNRs, the same
weighted loss whatever the network predicts, HDiT's own form of soft-min-SNR, and the sigmoid
objective's independence from the time sampling (Kingma & Gao 2023's importance sampling)."""

import math
from dataclasses import replace

import pytest
import torch

from pixdiff.config import FORMULATIONS, DiffusionConfig
from pixdiff.denoiser import Denoiser
from pixdiff.prediction import PREDICTION_TYPES, eps_error_gain, target_from_x0_eps
from pixdiff.schedule_registry import get_schedule, schedule_from_dict
from pixdiff.training.losses import diffusion_loss, distance, sample_time
from pixdiff.training.weighting import eps_weight, log_snr_density, loss_weight

SNR = torch.tensor([0.5, 5.0, 50.0], dtype=torch.float64)
LAM = SNR.log()
WEIGHTINGS = ["none", "min-snr", "soft-min-snr", "sigmoid"]
pytestmark = pytest.mark.usefixtures("one_thread")


def cfg(weighting, **kw):
    return DiffusionConfig(weighting=weighting, **kw)


def test_eps_weights_match_their_formulas():
    """At SNR 0.5, 5, 50 with gamma = 5 and b = 2 (Hang et al. 2023; HDiT; Kingma & Gao)."""
    torch.testing.assert_close(eps_weight(cfg("none"), LAM), torch.ones(3, dtype=torch.float64))
    torch.testing.assert_close(
        eps_weight(cfg("min-snr"), LAM), torch.tensor([1.0, 1.0, 0.1], dtype=torch.float64)
    )
    torch.testing.assert_close(
        eps_weight(cfg("soft-min-snr"), LAM),
        torch.tensor([5 / 5.5, 0.5, 5 / 55], dtype=torch.float64),
    )
    density = torch.tensor([0.1, 0.2, 0.4], dtype=torch.float64)
    sigmoid = 1 / (1 + SNR * math.exp(-2.0))  # sigmoid(b - lambda) = 1 / (1 + e^lambda e^-b)
    torch.testing.assert_close(eps_weight(cfg("sigmoid"), LAM, density), sigmoid / density)
    torch.testing.assert_close(
        eps_weight(cfg("sigmoid", sigmoid_bias=-3.0), LAM, density),
        1 / (1 + SNR * math.exp(3.0)) / density,
    )
    with pytest.raises(ValueError, match="density"):
        eps_weight(cfg("sigmoid"), LAM)


def test_min_snr_in_each_parameterization():
    """Hang et al. 2023, Eq. 9 on a VP path: min(SNR, 5) / SNR for eps, min(SNR, 5) for x0,
    min(SNR, 5) / (SNR + 1) for v; the eps row again for score up to sigma^2."""
    schedule = get_schedule("vp-linear-logsnr")
    t = schedule.t_from_log_snr(LAM)
    c = cfg("min-snr")
    clipped = SNR.clamp(max=5)
    expected = {"eps": clipped / SNR, "x0": clipped, "v": clipped / (SNR + 1)}
    for prediction, weight in expected.items():
        torch.testing.assert_close(loss_weight(c, schedule, prediction, t), weight)
    sigma2 = schedule.sigma(t) ** 2
    torch.testing.assert_close(loss_weight(c, schedule, "score", t), clipped / SNR * sigma2)


@pytest.mark.parametrize("kind", ["linear", "vp-cosine", "ve", "edm", "flow"])
@pytest.mark.parametrize("prediction", PREDICTION_TYPES)
def test_eps_error_gain_is_the_outputs_change(kind, prediction):
    """Moving eps by delta at a fixed x_t (x0 moves by -sigma/alpha delta) moves each type's
    target by k delta (prediction.target_from_x0_eps is the independent reference)."""
    schedule = get_schedule(kind)
    gen = torch.Generator().manual_seed(0)
    t = torch.rand(6, generator=gen, dtype=torch.float64) * 0.9 + 0.05
    c = schedule.coefs(t, 2)
    x0, eps, delta = (torch.randn(6, 3, generator=gen, dtype=torch.float64) for _ in range(3))
    x0_moved = x0 - c.sigma / c.alpha * delta
    change = target_from_x0_eps(prediction, x0_moved, eps + delta, c) - target_from_x0_eps(
        prediction, x0, eps, c
    )
    torch.testing.assert_close(change, eps_error_gain(prediction, c) * delta)


@pytest.mark.parametrize("weighting", WEIGHTINGS[1:])  # "none": unit weight on each own output
@pytest.mark.parametrize(
    "kind", ["linear", "vp-cosine", "ve", "edm", "flow", "shifted-cosine", "interpolated-flow"]
)
def test_weighted_loss_is_the_same_whatever_the_network_predicts(kind, weighting):
    """For one wrong estimate x0^ at x_t, loss_weight x MSE(output) equals the eps weight x
    MSE(eps^ - eps) for every prediction type (and so is one number for all of them)."""
    schedule = {
        "shifted-cosine": lambda: schedule_from_dict({"kind": "vp-cosine", "shift": -2.0}),
        "interpolated-flow": lambda: schedule_from_dict(
            {"kind": "flow", "shift": 1.5, "interpolate": True}
        ),
    }.get(kind, lambda: get_schedule(kind))()
    c_dist = cfg(weighting, time_sampling="logit-normal", p_mean=0.0, p_std=1.0)
    gen = torch.Generator().manual_seed(1)
    t = sample_time(c_dist, schedule, 8, gen)
    c = schedule.coefs(t, 2)
    x0 = torch.randn(8, 5, generator=gen, dtype=torch.float64)
    eps = torch.randn(8, 5, generator=gen, dtype=torch.float64)
    x_t = c.alpha * x0 + c.sigma * eps
    x0_hat = 0.7 * x0 + 0.1  # a wrong estimate, and its eps at the same x_t
    eps_hat = (x_t - c.alpha * x0_hat) / c.sigma
    lam = schedule.log_snr(t)
    density = log_snr_density(c_dist, schedule, t)
    reference = eps_weight(c_dist, lam, density) * distance(eps_hat, eps, "mse", 0.0)
    for prediction in PREDICTION_TYPES:
        out = target_from_x0_eps(prediction, x0_hat, eps_hat, c)
        target = target_from_x0_eps(prediction, x0, eps, c)
        mse = distance(out, target, "mse", 0.0)
        weighted = loss_weight(c_dist, schedule, prediction, t) * mse
        torch.testing.assert_close(weighted, reference, rtol=1e-9, atol=0, msg=prediction)


def test_soft_min_snr_is_hdits_weighting():
    """Crowson et al. 2024 (HDiT; k-diffusion's Denoiser) weight EDM's F-loss by
    (sigma sigma_data)^2 / (sigma^2 + sigma_data^2)^2: soft-min-snr with gamma = 1 / sigma_data^2
    on the edm prediction."""
    schedule = get_schedule("edm")
    sigma = torch.tensor([0.01, 0.2, 0.5, 3.0, 40.0], dtype=torch.float64)
    t = sigma / 80
    for sd in (0.5, 1.0):
        c = cfg("soft-min-snr", min_snr_gamma=1 / sd**2, sigma_data=sd)
        hdit = (sigma * sd) ** 2 / (sigma**2 + sd**2) ** 2
        torch.testing.assert_close(loss_weight(c, schedule, "edm", t), hdit)


@pytest.mark.parametrize("kind", ["vp-cosine", "flow", "edm", "linear"])
@pytest.mark.parametrize("sampling", ["uniform", "logit-normal", "log-normal"])
def test_log_snr_density_integrates_to_one(kind, sampling):
    """p(lambda(t)) |d lambda/dt| integrates to 1 over t: the density of each time sampling,
    moved to lambda, is a density (up to the clamped tails)."""
    schedule = get_schedule(kind)
    c = DiffusionConfig(time_sampling=sampling, p_mean=-0.5, p_std=1.0)
    t = torch.linspace(schedule.t_min, schedule.t_max, 50001, dtype=torch.float64)[1:-1]
    coefs = schedule.coefs(t, 1)
    jac = (2 * (coefs.alpha_dt / coefs.alpha - coefs.sigma_dt / coefs.sigma)).abs()
    mass = torch.trapezoid(log_snr_density(c, schedule, t) * jac, t).item()
    assert abs(mass - 1) < 2e-3, mass


@pytest.mark.parametrize("kind", ["vp-cosine", "flow", "shifted-vp-linear"])
def test_sigmoid_objective_does_not_depend_on_the_time_sampling(kind):
    """E_t[w(lambda_t) e(lambda_t)] over each time sampling equals the quadrature of
    int sigmoid(b - lambda) e(lambda) dlambda, for a smooth stand-in e of the eps error."""
    schedule = (
        schedule_from_dict({"kind": "vp-linear", "shift": -1.0})
        if kind == "shifted-vp-linear"
        else get_schedule(kind)
    )
    base = cfg("sigmoid", sigmoid_bias=1.0)

    def error(lam):  # a smooth, bounded stand-in for E||eps^ - eps||^2 at lambda
        return torch.exp(-((lam + 1) ** 2) / 18)

    lo = schedule.log_snr(schedule.t_max).clamp(min=-60).item()
    hi = schedule.log_snr(max(schedule.t_min, 1e-5)).clamp(max=60).item()
    lam = torch.linspace(lo, hi, 100001, dtype=torch.float64)
    exact = torch.trapezoid(torch.sigmoid(1.0 - lam) * error(lam), lam).item()
    gen = torch.Generator().manual_seed(0)
    for sampling, mean, std in [("uniform", 0, 1), ("logit-normal", 0, 2), ("log-normal", 0, 1.5)]:
        c = replace(base, time_sampling=sampling, p_mean=mean, p_std=std)
        t = sample_time(c, schedule, 100000, gen)
        w = eps_weight(c, schedule.log_snr(t), log_snr_density(c, schedule, t))
        estimate = (w * error(schedule.log_snr(t))).mean().item()
        assert abs(estimate / exact - 1) < 0.02, (sampling, estimate, exact)


@pytest.mark.parametrize("formulation", sorted(FORMULATIONS))
def test_every_weighting_and_time_sampling_trains_every_formulation(formulation):
    """Each weighting with each time sampling gives a finite loss and gradient on every
    formulation preset, including the zero-SNR end of v-ztsnr (weight 0 there)."""
    torch.manual_seed(0)
    net = torch.nn.Conv2d(1, 1, 3, padding=1)
    base = FORMULATIONS[formulation]
    d = Denoiser(lambda x, c_noise: net(x), schedule_from_dict(base.schedule), base.prediction)
    x0 = torch.linspace(-1, 1, 64).reshape(1, 1, 8, 8).repeat(4, 1, 1, 1)
    for weighting in WEIGHTINGS:
        for sampling in ("uniform", "log-normal", "logit-normal"):
            c = replace(base, weighting=weighting, time_sampling=sampling)
            loss = diffusion_loss(d, x0, None, cfg=c, generator=torch.Generator().manual_seed(3))
            net.zero_grad()
            loss.backward()
            grads = torch.cat([p.grad.flatten() for p in net.parameters()])
            assert loss.isfinite() and loss > 0 and grads.isfinite().all(), (weighting, sampling)
    if formulation == "v-ztsnr":
        c = replace(base, weighting="sigmoid")
        w = loss_weight(c, d.schedule, "v", torch.tensor([0.5, 1.0], dtype=torch.float64))
        assert w[0] > 0 and w[1] == 0


@pytest.mark.parametrize("kind", ["vp-cosine", "linear"])
def test_time_sampling_takes_its_mean_and_std(kind):
    """log-normal: ln sigma~ = -lambda / 2 ~ N(p_mean, p_std^2) (Karras et al. 2022);
    logit-normal: logit t ~ N(p_mean, p_std^2) (Esser et al. 2024), on any schedule."""
    schedule = get_schedule(kind)
    gen = torch.Generator().manual_seed(0)
    c = DiffusionConfig(time_sampling="log-normal", p_mean=0.5, p_std=0.7)
    z = -schedule.log_snr(sample_time(c, schedule, 20000, gen)) / 2
    assert abs(z.mean().item() - 0.5) < 0.03 and abs(z.std().item() - 0.7) < 0.03
    c = DiffusionConfig(time_sampling="logit-normal", p_mean=-0.8, p_std=0.6)
    z = torch.logit(sample_time(c, schedule, 20000, gen))
    assert abs(z.mean().item() + 0.8) < 0.03 and abs(z.std().item() - 0.6) < 0.03
