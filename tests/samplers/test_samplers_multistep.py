"""UniPC, DEIS, PLMS and the adaptive RK45 ODE solver against the exact probability-flow ODE."""

import numpy as np
import pytest
import torch
from order_oracle import (
    GAUSS,
    PATHS,
    CountingDenoiser,
    log_snr_grid,
    start_and_exact,
)

import pixdiff
from pixdiff.discrete_schedules import DiscreteSchedule
from pixdiff.samplers import SAMPLERS, SamplingError, sample_ddim, sample_ode_rk45
from pixdiff.samplers.deis import deis_coefficients
from pixdiff.samplers.unipc import phi_moments
from pixdiff.sampling import default_spacing
from pixdiff.schedule_registry import get_schedule

MULTISTEP = ["unipc-bh1", "unipc-bh2", "deis", "plms"]


@pytest.mark.parametrize(("schedule_name", "prediction"), PATHS)
def test_first_order_forms_are_ddim(schedule_name, prediction):
    """DEIS order 1, UniP-1 (no corrector) and PLMS's first step are DDIM written three ways,
    including the zero-SNR start of the flow path and the final step to t = 0."""
    schedule = get_schedule(schedule_name)
    d = GAUSS.denoiser(schedule, prediction)
    ts = pixdiff.time_grid(schedule, 12, spacing=default_spacing(schedule))
    x_T = schedule.prior_std() * torch.randn(64, 2, dtype=torch.float64)
    ref = sample_ddim(d, x_T, ts)
    x = SAMPLERS["deis"].bind({"order": 1})(d, x_T, ts)
    torch.testing.assert_close(x, ref, rtol=1e-12, atol=1e-12)
    for name in ("unipc-bh1", "unipc-bh2"):
        x = SAMPLERS[name].bind({"order": 1, "corrector": False})(d, x_T, ts)
        torch.testing.assert_close(x, ref, rtol=1e-12, atol=1e-12 * schedule.prior_std())
    x = SAMPLERS["plms"].bind(None)(d, x_T, ts[:2])
    torch.testing.assert_close(x, sample_ddim(d, x_T, ts[:2]), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize(("schedule_name", "prediction"), [*PATHS, ("zero-snr", "v")])
def test_every_path_lands_near_the_ode_solution(schedule_name, prediction):
    """Each sampler (default options) on each path down to t = 0 (sigma = 0, or the clipped
    sigma(0) of vp-cosine and VE; from zero SNR on flow and zero-terminal-SNR), through the
    full Denoiser chain, lands near the exact ODE endpoint. ode-rk45 cannot start where the
    velocity is infinite (zero-terminal-SNR at t = 1) and says so."""
    if schedule_name == "zero-snr":
        schedule = DiscreteSchedule(zero_terminal_snr=True)
    else:
        schedule = get_schedule(schedule_name)
    d = GAUSS.denoiser(schedule, prediction)
    finite = schedule_name not in ("flow", "zero-snr")
    ts = pixdiff.time_grid(schedule, 30, spacing="log-snr" if finite else "trailing")
    gen = torch.Generator().manual_seed(0)
    x_T = schedule.prior_std() * torch.randn(64, 2, generator=gen, dtype=torch.float64)
    a_T, s_T = schedule.alpha(ts[0]).item(), schedule.sigma(ts[0]).item()
    a_0, s_0 = schedule.alpha(0.0).item(), schedule.sigma(0.0).item()
    exact = GAUSS.ode_map_gaussian(x_T, a_T, s_T, alpha_to=a_0, sigma_to=s_0)
    names = MULTISTEP if schedule_name == "zero-snr" else [*MULTISTEP, "ode-rk45"]
    for name in names:
        err = (SAMPLERS[name].bind(None)(d, x_T, ts) - exact).abs().max().item()
        # about dpmpp-2m's error: 30 steps, the last one first order
        assert err < (2e-3 if name == "ode-rk45" else 0.05), (name, err)
    if schedule_name == "zero-snr":  # alpha = sqrt(alpha_bar) has alpha' = -inf at t = 1
        with pytest.raises(SamplingError, match="velocity dx/dt is not finite at t=1"):
            sample_ode_rk45(d, x_T, ts)


@pytest.mark.parametrize("name", MULTISTEP)
def test_one_network_evaluation_per_step(name):
    schedule = get_schedule("edm")
    for ts in (log_snr_grid(schedule, 7), pixdiff.time_grid(schedule, 7)):
        d = GAUSS.exact_denoiser(schedule)
        SAMPLERS[name].bind(None)(d, torch.randn(4, 2, dtype=torch.float64), ts)
        assert d.calls == 7 * SAMPLERS[name].nfe_per_step


def test_coefficients_against_closed_forms():
    """J_n(h) = h^{n+1} phi_{n+1}(-h) on both sides of the series/recursion switch at h = 1,
    and DEIS's two-point weight C_1/sigma~_t = (e^{-h} - 1 + h)/h1 (linear eps in lambda)."""
    for h in (0.3, 0.999, 1.001, 2.5):
        J = phi_moments(h, 3)
        em = np.exp(-h)
        exact = [1 - em, em - 1 + h, 1 - em - h + h**2 / 2, em - 1 + h - h**2 / 2 + h**3 / 6]
        np.testing.assert_allclose(J, exact, rtol=1e-12)
        (w,) = deis_coefficients(0.0, h, [-0.4])
        # eps_0 + (eps_1 - eps_0)(-u/0.4): weight of eps_1 is -int_0^h (-u/0.4) e^{-u} du
        np.testing.assert_allclose(w, (1 - em * (1 + h)) / 0.4, rtol=1e-12)
    assert phi_moments(float("inf"), 0) == [1.0]


def test_bad_options():
    d = GAUSS.denoiser(get_schedule("linear"))
    for name, options, match in [
        ("unipc-bh1", {"order": 4}, "order must be 1, 2 or 3"),
        ("unipc-bh1", {"variant": "bh3"}, "unknown UniPC variant"),
        ("deis", {"order": 0}, "order must be 1, 2 or 3"),
        ("ode-rk45", {"rtol": 0.0}, "need rtol, atol > 0"),
    ]:
        with pytest.raises(ValueError, match=match):
            pixdiff.sample(d, (2, 2), sampler=name, steps=5, options=options)


# ----------------------------------------------------------------------------- ode-rk45


@pytest.mark.parametrize("schedule_name", ["edm", "vp-cosine", "flow"])
def test_rk45_meets_its_tolerance(schedule_name):
    """The adaptive solve from t_max to t_end > 0 lands on the exact solution to within a
    small multiple of the tolerance; tightening the tolerance costs more NFE and gains
    accuracy."""
    schedule = get_schedule(schedule_name)
    t_end = schedule.t_from_log_snr(torch.tensor(1.4, dtype=torch.float64))
    ts = torch.stack([torch.tensor(schedule.t_max).double(), t_end])  # only the ends matter
    x_T, exact = start_and_exact(schedule, ts)
    scale = exact.abs().max().item()
    nfes, errs = [], []
    for tol in (1e-4, 1e-7):
        stats: dict = {}
        d = GAUSS.exact_denoiser(schedule)
        x = sample_ode_rk45(d, x_T, ts, rtol=tol, atol=tol, stats=stats)
        nfes.append(stats["nfe"])
        errs.append((x - exact).abs().max().item())
        assert stats["nfe"] == d.calls
        assert errs[-1] < 30 * tol * scale, (tol, errs[-1], stats)
    assert nfes[1] > nfes[0] and errs[1] < errs[0] / 100, (nfes, errs)


def test_rk45_to_t0_takes_a_final_x0_step():
    """On a grid ending at sigma = 0 the solve stops at ts[-2] (here EDM's sigma_min) and the
    last evaluation returns x0; the steps in between are ignored."""
    schedule = get_schedule("edm")
    x_T = 80 * torch.randn(100, 2, generator=torch.Generator().manual_seed(1)).double()
    exact = GAUSS.ode_map_gaussian(x_T, 1.0, 80.0)
    xs = []
    for steps in (2, 40):
        stats: dict = {}
        ts = pixdiff.time_grid(schedule, steps)
        xs.append(sample_ode_rk45(GAUSS.exact_denoiser(schedule), x_T, ts, stats=stats))
        assert (xs[-1] - exact).abs().max() < 1e-3
    torch.testing.assert_close(xs[0], xs[1], rtol=0, atol=1e-12)


def test_rk45_max_nfe_raises():
    d = GAUSS.denoiser(get_schedule("vp-cosine"), "v")
    stats: dict = {}
    with pytest.raises(SamplingError, match="max_nfe=5 .*raise max_nfe or loosen rtol"):
        pixdiff.sample(
            d, (4, 2), sampler="ode-rk45", steps=1, options={"max_nfe": 5, "stats": stats}
        )
    assert stats["nfe"] == 5


@pytest.mark.parametrize("schedule_name", ["edm", "vp-cosine", "flow"])
def test_pndm_pseudo_runge_kutta_step_is_fourth_order(schedule_name):
    """One pseudo-RK step (Liu et al. 2022, Eq. 13) of size h in lambda: local error O(h^5),
    against DDIM's O(h^2), on paths where t is and is not proportional to sigma / alpha."""
    schedule, hs = get_schedule(schedule_name), [0.4, 0.2, 0.1, 0.05]
    errs = {}
    for name in ("pndm", "ddim"):
        errs[name] = []
        for h in hs:
            ts = schedule.t_from_log_snr(2 * torch.tensor([0.0, h], dtype=torch.float64))
            x_T, exact = start_and_exact(schedule, ts)
            x = SAMPLERS[name].bind(None)(GAUSS.exact_denoiser(schedule), x_T, ts)
            errs[name].append((x - exact).abs().max().item())
    slopes = {n: np.polyfit(np.log(hs), np.log(e), 1)[0] for n, e in errs.items()}
    assert abs(slopes["pndm"] - 5) < 0.3 and abs(slopes["ddim"] - 2) < 0.3, (slopes, errs)


@pytest.mark.parametrize(
    ("name", "options"),
    [(n, None) for n in sorted(SAMPLERS) if n not in ("ode-rk45", "ddpm-learned")]
    + [("dpm-solver-2", {"order": 3}), ("sde-pc", {"corrector_steps": 2})],
)
def test_registry_counts_the_evaluations_a_run_makes(name, options):
    """total_nfe is exact, or an upper bound for methods that skip stages on huge steps."""
    spec = SAMPLERS[name]
    for steps in range(1, 7):
        d = CountingDenoiser(GAUSS.exact_denoiser(get_schedule("edm")))
        ts = pixdiff.time_grid(d.schedule, steps)
        x_T = torch.randn(3, 2, dtype=torch.float64)
        spec.bind(options)(d, x_T, ts, generator=torch.Generator().manual_seed(0))
        if name in ("heun", "pndm") or name.startswith("dpm-solver"):
            # upper bounds: steps where large_stage_ratio holds are first order
            assert d.calls <= spec.total_nfe(steps, options), steps
            continue
        assert d.calls == spec.total_nfe(steps, options), steps
        budget = spec.total_nfe(steps, options)
        assert spec.steps_for(budget, options) == steps
        assert spec.steps_for(budget - 1, options) == steps - 1 or steps == 1


def test_nfe_budget_errors():
    assert pixdiff.sampling.steps_for_nfe("pndm", 19) == 10  # 3 x 4 warm-up + 7 x 1
    assert pixdiff.sampling.steps_for_nfe("dpm-solver-3", 9) == 3  # 3 + 3 + 1 (the last step)
    with pytest.raises(ValueError, match="too small for 'dpm-solver-3': it needs at least 1"):
        pixdiff.sampling.steps_for_nfe("dpm-solver-3", 0)
