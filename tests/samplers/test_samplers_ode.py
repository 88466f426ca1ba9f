"""Deterministic samplers of euler.py and dpm_solver.py against the exact probability-flow ODE."""

from dataclasses import replace

import numpy as np
import pytest
import torch
from order_oracle import GAUSS, PATHS, CountingDenoiser, log_snr_grid

import pixdiff
from pixdiff.samplers import SAMPLERS, sample_ddim
from pixdiff.samplers.common import large_stage_ratio
from pixdiff.samplers.dpm_solver import dpmpp_update
from pixdiff.samplers.euler import lms_coefficients
from pixdiff.sampling import default_spacing
from pixdiff.schedule_registry import get_schedule
from pixdiff.toy import GaussianMixture

MIXTURE = GaussianMixture(
    torch.tensor([[-2.0, 0.0], [2.0, 1.0]], dtype=torch.float64),
    torch.tensor([0.3, 0.5], dtype=torch.float64),
    torch.tensor([0.25, 0.75], dtype=torch.float64),
)


@pytest.mark.parametrize(("schedule_name", "prediction"), PATHS)
def test_first_order_methods_are_ddim(schedule_name, prediction):
    """DDIM (eta = 0) = DPM-Solver-1 = DPM-Solver++(1) = Euler in x/alpha vs sigma/alpha: one
    map written four ways (Lu et al. 2022, Sec. 4.1; Karras et al. 2022, Sec. 4), including the
    zero-SNR start of the flow path and the final step to t = 0."""
    schedule = get_schedule(schedule_name)
    d = MIXTURE.denoiser(schedule, prediction)
    ts = pixdiff.time_grid(schedule, 12, spacing=default_spacing(schedule))
    gen = torch.Generator().manual_seed(0)
    x_T = schedule.prior_std() * torch.randn(64, 2, generator=gen, dtype=torch.float64)
    ref = sample_ddim(d, x_T, ts)
    for name, options in [
        ("dpm-solver-1", {}),
        ("dpmpp-2m", {"order": 1}),
        ("euler", {}),
        ("lms", {"order": 1}),
        ("euler-ancestral", {"eta": 0.0}),
        ("dpmpp-2m-sde", {"order": 1, "eta": 0.0}),
    ]:
        x = SAMPLERS[name].bind(options)(d, x_T, ts)
        torch.testing.assert_close(x, ref, rtol=1e-12, atol=1e-12, msg=name)


# the deterministic samplers of euler.py and dpm_solver.py
DETERMINISTIC = [
    *("euler", "heun", "lms", "dpm-solver-1", "dpm-solver-2", "dpm-solver-3"),
    *("dpmpp-2s", "dpmpp-2m", "dpmpp-3m"),
]


@pytest.mark.parametrize(("schedule_name", "prediction"), PATHS)
def test_every_path_lands_near_the_ode_solution(schedule_name, prediction):
    """Each deterministic sampler on each path, down to t = 0 (sigma = 0, or the clipped
    sigma(0) of vp-cosine and VE; from zero SNR on the flow path), lands near the exact ODE
    endpoint. Grids: log-SNR-uniform (Lu et al. 2022) where lambda(t_max) is finite, else the
    path's default. (On uniform-t VP grids the last step before t = 0 is long in lambda and
    multistep extrapolation there can be no better than first order.)"""
    schedule = get_schedule(schedule_name)
    d = GAUSS.denoiser(schedule, prediction)
    spacing = "log-snr" if schedule_name not in ("edm", "flow") else default_spacing(schedule)
    ts = pixdiff.time_grid(schedule, 30, spacing=spacing)
    gen = torch.Generator().manual_seed(0)
    x_T = schedule.prior_std() * torch.randn(64, 2, generator=gen, dtype=torch.float64)
    a_T, s_T = schedule.alpha(ts[0]).item(), schedule.sigma(ts[0]).item()
    a_0, s_0 = schedule.alpha(0.0).item(), schedule.sigma(0.0).item()
    exact = GAUSS.ode_map_gaussian(x_T, a_T, s_T, alpha_to=a_0, sigma_to=s_0)
    errs = {
        n: (SAMPLERS[n].bind(None)(d, x_T, ts) - exact).abs().max().item() for n in DETERMINISTIC
    }
    first_order = ("euler", "dpm-solver-1")
    assert all(err < (0.25 if n in first_order else 0.08) for n, err in errs.items()), errs


@pytest.mark.parametrize("name", DETERMINISTIC)
def test_nfe_per_step_is_honest(name):
    """nfe_per_step NFE on every step of a grid ending at t > 0; on a grid ending at t = 0
    the singlestep methods spend 1 on the last step (a first-order step to sigma = 0)."""
    spec, schedule = SAMPLERS[name], get_schedule("edm")
    d = CountingDenoiser(GAUSS.exact_denoiser(schedule))
    spec.bind(None)(d, torch.randn(4, 2, dtype=torch.float64), log_snr_grid(schedule, 6))
    assert d.calls == 6 * spec.nfe_per_step
    d.calls = 0
    ts = pixdiff.time_grid(schedule, 6)
    spec.bind(None)(d, torch.randn(4, 2, dtype=torch.float64), ts)
    expected = 5 * spec.nfe_per_step + 1
    if name in ("heun", "dpm-solver-2", "dpm-solver-3"):
        # steps where large_stage_ratio holds are first-order steps
        sig = schedule.edm_sigma(ts)
        big = sum(large_stage_ratio(a, b) for a, b in zip(sig[:-2], sig[1:-1], strict=True))
        expected -= big * (spec.nfe_per_step - 1)
    assert d.calls == expected


def test_dpmpp_3m_update_is_exact_for_quadratic_x0():
    """The third-order term is -2 phi_3 D2 with D2 = (D1_0 - D1_1) / (r0 + r1) = h^2 x0''/2:
    exact when x0(lambda) is quadratic (the k-diffusion/diffusers form -phi_3 D2 is not)."""

    def x0(lam):
        return torch.tensor(0.3 + 0.7 * lam - 0.45 * lam**2, dtype=torch.float64)

    lams = [torch.tensor(v, dtype=torch.float64) for v in (0.7, 0.2, -0.1, -0.5)]
    one = torch.tensor(1.0, dtype=torch.float64)
    got = dpmpp_update(
        torch.zeros(()),
        [x0(v.item()) for v in lams[1:]],
        lams,
        sigma_t=one,
        alpha_s=one,
        sigma_s=one,
    )
    # x_s - (sigma_s/sigma_t) x_t = alpha_s int_0^h e^-(h-u) x0(lambda_t + u) du
    u, w = np.polynomial.legendre.leggauss(20)
    h, lam_t = 0.5, 0.2
    uu = (u + 1) * h / 2
    exact = np.sum(w * np.exp(-(h - uu)) * (0.3 + 0.7 * (lam_t + uu) - 0.45 * (lam_t + uu) ** 2))
    assert abs(got.item() - exact * h / 2) < 1e-14


def test_lms_coefficients_integrate_polynomials_exactly():
    nodes, to = [2.0, 2.7, 3.9, 5.0], 1.2
    for k in range(1, 5):
        c = lms_coefficients(nodes[:k], to)
        for p in range(k):
            integral = (to ** (p + 1) - nodes[0] ** (p + 1)) / (p + 1)
            assert abs(sum(cj * s**p for cj, s in zip(c, nodes, strict=False)) - integral) < 1e-12


def test_bad_input(monkeypatch):
    d = GAUSS.denoiser(get_schedule("edm"), "edm")
    monkeypatch.setitem(SAMPLERS, "three-step", replace(SAMPLERS["ddim"], min_steps=3))
    with pytest.raises(ValueError, match="'three-step' needs at least 3 steps, got 2"):
        pixdiff.sample(d, (2, 2), sampler="three-step", steps=2)
    for name, spec in SAMPLERS.items():
        if spec.min_steps > 1:
            with pytest.raises(ValueError, match=f"needs at least {spec.min_steps} steps"):
                pixdiff.sample(d, (2, 2), sampler=name, steps=spec.min_steps - 1)
    # lower-order warm-up: every method here runs with one step
    for name in ("dpmpp-3m", "lms", "dpm-solver-3", "heun", "dpmpp-2m-sde"):
        assert pixdiff.sample(d, (2, 2), sampler=name, steps=1, seed=0).isfinite().all()
    with pytest.raises(ValueError, match="LMS order must be 1, 2, 3 or 4, got 5"):
        pixdiff.sample(d, (2, 2), sampler="lms", options={"order": 5})
    with pytest.raises(ValueError, match="DPM-Solver order must be 1, 2 or 3"):
        pixdiff.sample(d, (2, 2), sampler="dpm-solver-2", options={"order": 4})
    with pytest.raises(ValueError, match=r"unknown sampler option\(s\) \['s_chrun'\]"):
        pixdiff.sample(d, (2, 2), sampler="heun", options={"s_chrun": 1.0})
    with pytest.raises(ValueError, match="eta must be >= 0"):
        pixdiff.sample(d, (2, 2), sampler="dpmpp-2m-sde", options={"eta": -1.0})


def test_heun_survives_a_huge_first_step():
    """The trailing grid on the discrete cosine schedule shrinks sigma~ ~1000-fold on its first
    step; Heun's trapezoid there would amplify x0 changes ~500x, so it takes an Euler step and
    stays more accurate than DDIM (which it was not, before the guard)."""
    schedule = get_schedule("cosine")
    ts = pixdiff.time_grid(schedule, 25, spacing="trailing")
    a_T, s_T = schedule.alpha(ts[0]).item(), schedule.sigma(ts[0]).item()
    x_T = s_T * torch.randn(200, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    exact = GAUSS.ode_map_gaussian(x_T, a_T, s_T)
    err = {
        n: (SAMPLERS[n].bind(None)(GAUSS.exact_denoiser(schedule), x_T, ts) - exact).abs().max()
        for n in ("heun", "ddim")
    }
    assert err["heun"] < err["ddim"], err
