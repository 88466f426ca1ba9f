"""Schedules: golden tables (with the posterior) against the published formulas, invariants,
inverses, bad input."""

import math

import numpy as np
import pytest
import torch

from pixdiff.discrete_schedules import DiscreteSchedule
from pixdiff.posterior import posterior
from pixdiff.schedule_registry import SCHEDULE_NAMES, get_schedule, schedule_from_dict
from pixdiff.schedules import VPSchedule, q_sample
from pixdiff.vlb import clipped_log_variance

T = 1000


def reference_betas(kind):
    """The published beta tables written independently in numpy float64."""
    if kind == "linear":  # Ho et al. 2020
        return np.linspace(1e-4, 0.02, T, dtype=np.float64)
    if kind == "scaled-linear":  # Rombach et al. 2022
        return np.linspace(0.00085**0.5, 0.012**0.5, T, dtype=np.float64) ** 2
    if kind == "quadratic":
        return np.linspace(1e-4**0.5, 0.02**0.5, T, dtype=np.float64) ** 2
    if kind == "sigmoid":
        x = np.linspace(-6, 6, T)
        return 1 / (1 + np.exp(-x)) * (0.02 - 1e-4) + 1e-4
    # cosine, Nichol & Dhariwal 2021 Eq. 17 (improved-diffusion's betas_for_alpha_bar)
    f = lambda t: math.cos((t + 0.008) / 1.008 * math.pi / 2) ** 2  # noqa: E731
    return np.array([min(1 - f((i + 1) / T) / f(i / T), 0.999) for i in range(T)])


@pytest.mark.parametrize("kind", ["linear", "scaled-linear", "quadratic", "sigmoid", "cosine"])
def test_discrete_tables_match_published_formulas(kind):
    """The beta and alpha_bar tables, and the posterior q(x_{t-1} | x_t, x0) that samplers and
    the bound use, at t = (i + 1) / T, s = i / T, against Ho et al. 2020, Eq. 6-7 (the usual
    ``posterior_*`` tables). The reference takes 1 - alpha_bar as expm1 of the summed log1p:
    float64 1 - cumprod loses ~6e-13 relative where alpha_bar ~ 1."""
    s = DiscreteSchedule(beta_kind=kind)
    betas = reference_betas(kind)
    ab = np.cumprod(1 - betas)
    ab_prev = np.append(1.0, ab[:-1])
    one_minus_ab = -np.expm1(np.cumsum(np.log1p(-betas)))
    one_minus_ab_prev = np.append(0.0, one_minus_ab[:-1])
    post_var = betas * one_minus_ab_prev / one_minus_ab
    np.testing.assert_allclose(s.betas.numpy(), betas, rtol=1e-13, atol=0)
    np.testing.assert_allclose(s.alphas_cumprod.numpy(), ab, rtol=1e-12, atol=0)
    i = torch.arange(T)
    q = posterior(s, (i.double() + 1) / T, i.double() / T)
    np.testing.assert_allclose(q.var_small.numpy(), post_var, rtol=1e-12)
    np.testing.assert_allclose(
        clipped_log_variance(s, i).numpy(),
        np.log(np.append(post_var[1], post_var[1:])),
        rtol=1e-12,
    )
    np.testing.assert_allclose(
        q.coef_x0.numpy(), betas * np.sqrt(ab_prev) / one_minus_ab, rtol=1e-12
    )
    np.testing.assert_allclose(
        q.coef_xt.numpy(), one_minus_ab_prev * np.sqrt(1 - betas) / one_minus_ab, rtol=1e-12
    )


def test_golden_values():
    lin = DiscreteSchedule()
    assert lin.alphas_cumprod[-1].item() == pytest.approx(4.0358e-05, rel=1e-4)  # DDPM T=1000
    cos = DiscreteSchedule(beta_kind="cosine")
    assert cos.betas[-1].item() == 0.999  # clipped (Nichol & Dhariwal 2021)
    assert cos.betas[0].item() == pytest.approx(4.1284e-05, rel=1e-4)  # improved-diffusion


def test_discrete_nodes_are_the_tables():
    s = DiscreteSchedule()
    i = torch.arange(T)
    t = (i + 1).double() / T
    torch.testing.assert_close(s.alpha(t) ** 2, s.alphas_cumprod, rtol=1e-14, atol=0)
    assert torch.equal(s.timestep(t).round().long(), i)
    assert s.alpha(0.0).item() == 1.0 and s.sigma(0.0).item() == 0.0


@pytest.mark.parametrize("kind", ["linear", "cosine", "scaled-linear"])
def test_zero_terminal_snr(kind):
    base, z = (
        DiscreteSchedule(beta_kind=kind),
        DiscreteSchedule(beta_kind=kind, zero_terminal_snr=True),
    )
    assert z.alphas_cumprod[-1].item() == 0.0
    assert z.log_snr(1.0).item() == -math.inf
    torch.testing.assert_close(z.alphas_cumprod[0], base.alphas_cumprod[0], rtol=1e-12, atol=0)
    assert bool((z.alphas_cumprod[1:] < z.alphas_cumprod[:-1]).all())


@pytest.mark.parametrize("name", SCHEDULE_NAMES)
def test_log_snr_decreasing_and_invertible(name):
    s = get_schedule(name)
    t = torch.linspace(max(s.t_min, 1e-3), 0.99, 200, dtype=torch.float64)
    lam = s.log_snr(t)
    assert bool((lam[1:] < lam[:-1]).all())
    torch.testing.assert_close(s.t_from_log_snr(lam), t, rtol=0, atol=1e-10)
    torch.testing.assert_close(s.t_from_timestep(s.timestep(t)), t, rtol=0, atol=1e-12)


@pytest.mark.parametrize("name", SCHEDULE_NAMES)
def test_derivatives_match_finite_differences(name):
    s = get_schedule(name)
    # between the nodes of a discrete schedule alpha_bar is linear; stay off the nodes
    t = torch.tensor([0.1234, 0.4567, 0.7891], dtype=torch.float64)
    h = 1e-7
    for f, df in [(s.alpha, s.alpha_dt), (s.sigma, s.sigma_dt)]:
        fd = (f(t + h) - f(t - h)) / (2 * h)
        torch.testing.assert_close(df(t), fd, rtol=1e-5, atol=1e-8)


@pytest.mark.parametrize(
    "name", [n for n in SCHEDULE_NAMES if isinstance(get_schedule(n), VPSchedule)]
)
def test_variance_preserving(name):
    s = get_schedule(name)
    t = torch.rand(100, dtype=torch.float64)
    torch.testing.assert_close(
        s.alpha(t) ** 2 + s.sigma(t) ** 2, torch.ones_like(t), rtol=0, atol=1e-12
    )


def test_q_sample():
    x0, noise = torch.randn(4, 3, 8, 8), torch.randn(4, 3, 8, 8)
    for name in ["linear", "cosine", "vp-linear", "flow"]:
        s = get_schedule(name)
        assert torch.equal(q_sample(s, x0, 0.0, noise), x0)
    # clipped log-SNR schedules stop at log_snr_max: sigma(0) = sigmoid(-15)^0.5 ~ 5.5e-4
    torch.testing.assert_close(
        q_sample(get_schedule("vp-cosine"), x0, 0.0, noise), x0, rtol=0, atol=5e-3
    )
    s = get_schedule("flow")
    torch.testing.assert_close(q_sample(s, x0, 1.0, noise), noise)
    t = torch.tensor([0.1, 0.5, 0.9, 1.0])
    out = q_sample(get_schedule("linear"), x0, t, noise)
    a = get_schedule("linear").alpha(t).float()
    torch.testing.assert_close(out[1], a[1] * x0[1] + (1 - a[1] ** 2).sqrt() * noise[1])


def test_round_trip_config():
    for name in SCHEDULE_NAMES:
        s = get_schedule(name)
        assert schedule_from_dict(s.to_dict()).to_dict() == s.to_dict()


def test_bad_input():
    with pytest.raises(ValueError, match="unknown schedule 'lineer'.*valid"):
        get_schedule("lineer")
    with pytest.raises(ValueError, match=r"unknown option\(s\) \['sigma_mx'\].*valid"):
        schedule_from_dict({"kind": "edm", "sigma_mx": 3})
    with pytest.raises(ValueError, match="t must lie in \\[0, 1\\], got 1.5"):
        get_schedule("cosine").alpha(torch.tensor([0.5, 1.5]))
    with pytest.raises(ValueError, match="noise shape"):
        q_sample(get_schedule("linear"), torch.zeros(2, 3), 0.5, torch.zeros(2, 4))
    with pytest.raises(ValueError, match="unknown beta schedule"):
        DiscreteSchedule(beta_kind="cubic")
