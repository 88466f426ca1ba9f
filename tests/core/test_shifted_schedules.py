"""Resolution-shifted schedules (simple diffusion, Hoogeboom et al. 2023, Sec. 3.1): the log-SNR
moves by exactly the shift, both ways; the inverse round-trips; the path family, derivatives
and closed forms of the paper (and SD3's flow shift) hold; samplers land on the exact ODE
solution; the config round-trips; bad input gives one line."""

import math

import pytest
import torch

from pixdiff.config import TrainConfig, apply_overrides, from_dict, to_dict
from pixdiff.samplers import SAMPLERS
from pixdiff.sampling import default_spacing
from pixdiff.schedule_registry import get_schedule, schedule_from_dict
from pixdiff.shifted_schedules import ShiftedSchedule, resolution_shift
from pixdiff.timesteps import time_grid
from pixdiff.toy import GaussianMixture

CONTINUOUS = ["vp-cosine", "vp-linear", "vp-linear-logsnr", "ve", "edm", "flow"]
# shifts that keep every interpolated schedule's log-SNR decreasing (EDM's slope is only 2 / t)
SHIFTS = [-1.5, 1.5]


def inner_times(schedule, n=201):
    """Times strictly inside the schedule's range, where every log-SNR is finite."""
    return torch.linspace(schedule.t_min, schedule.t_max, n, dtype=torch.float64)[1:-1]


@pytest.mark.parametrize("interpolate", [False, True])
@pytest.mark.parametrize("shift", SHIFTS)
@pytest.mark.parametrize("kind", CONTINUOUS)
def test_log_snr_moves_by_the_shift_and_inverts(kind, shift, interpolate):
    base = get_schedule(kind)
    s = schedule_from_dict({"kind": kind, "shift": shift, "interpolate": interpolate})
    t = inner_times(s)
    added = shift * (1 - t) if interpolate else torch.full_like(t, shift)
    lam = s.log_snr(t)
    torch.testing.assert_close(lam, base.log_snr(t) + added, rtol=0, atol=1e-12)
    # alpha and sigma carry that log-SNR, and t_from_log_snr inverts it
    torch.testing.assert_close(2 * torch.log(s.alpha(t) / s.sigma(t)), lam, rtol=0, atol=1e-10)
    torch.testing.assert_close(s.t_from_log_snr(lam), t, rtol=0, atol=1e-12)
    assert bool((lam[1:] < lam[:-1]).all())


@pytest.mark.parametrize("kind", CONTINUOUS)
def test_interpolated_matches_its_endpoints(kind):
    """lambda(0) is the shifted schedule's, lambda(1) the unshifted one's (finite ends only)."""
    base, shift = get_schedule(kind), -1.5
    s = schedule_from_dict({"kind": kind, "shift": shift, "interpolate": True})
    full = schedule_from_dict({"kind": kind, "shift": shift})
    for t, ref in [(0.0, full), (1.0, base)]:
        lam, lam_ref = s.log_snr(t).item(), ref.log_snr(t).item()
        assert lam == lam_ref or abs(lam - lam_ref) < 1e-12, (t, lam, lam_ref)
        assert abs(s.alpha(t).item() - ref.alpha(t).item()) < 1e-12
        assert abs(s.sigma(t).item() - ref.sigma(t).item()) < 1e-12


@pytest.mark.parametrize("interpolate", [False, True])
@pytest.mark.parametrize("kind", CONTINUOUS)
def test_path_family_and_derivatives(kind, interpolate):
    """A shift keeps VP on VP, the straight path straight and alpha = 1; alpha' and sigma'
    match central differences."""
    s = schedule_from_dict({"kind": kind, "shift": -1.5, "interpolate": interpolate})
    t = inner_times(s, 41)
    a, sig = s.alpha(t), s.sigma(t)
    if kind.startswith("vp"):
        torch.testing.assert_close(a**2 + sig**2, torch.ones_like(t), rtol=0, atol=1e-14)
    elif kind == "flow":
        torch.testing.assert_close(a + sig, torch.ones_like(t), rtol=0, atol=1e-14)
    else:
        assert bool((a == 1).all())
    h = 1e-6
    for f, df in [(s.alpha, s.alpha_dt), (s.sigma, s.sigma_dt)]:
        fd = (f(t + h) - f(t - h)) / (2 * h)
        torch.testing.assert_close(df(t), fd, rtol=1e-6, atol=1e-7)


def test_shifted_cosine_is_the_papers_closed_form():
    """Hoogeboom et al. 2023, Sec. 3.1: lambda(t) = -2 log tan(a t + b) + 2 log(64 / d) with
    alpha^2 = sigmoid(lambda), for d = 256, written here independently of the wrapper."""
    s = schedule_from_dict({"kind": "vp-cosine", "shift": resolution_shift(256)})
    b = math.atan(math.exp(-15 / 2))
    a = math.atan(math.exp(15 / 2)) - b
    t = torch.linspace(0, 1, 11, dtype=torch.float64)
    lam = -2 * torch.log(torch.tan(a * t + b)) + 2 * math.log(64 / 256)
    torch.testing.assert_close(s.log_snr(t), lam, rtol=0, atol=1e-12)
    torch.testing.assert_close(s.alpha(t), torch.sigmoid(lam).sqrt(), rtol=1e-12, atol=1e-15)
    assert resolution_shift(256) == 2 * math.log(0.25) and resolution_shift(32, 32) == 0


@pytest.mark.parametrize("m", [3.0, 0.5])
def test_shifted_flow_is_sd3s_time_shift(m):
    """On the straight path, a log-SNR shift of -2 log m is SD3's timestep shift
    sigma = m t / (1 + (m - 1) t) (Esser et al. 2024, Sec. 5.3.2), alpha = 1 - sigma."""
    s = schedule_from_dict({"kind": "flow", "shift": -2 * math.log(m)})
    t = torch.linspace(0, 1, 21, dtype=torch.float64)
    sigma = m * t / (1 + (m - 1) * t)
    torch.testing.assert_close(s.sigma(t), sigma, rtol=0, atol=1e-14)
    torch.testing.assert_close(s.alpha(t), 1 - sigma, rtol=0, atol=1e-14)
    dsigma = m / (1 + (m - 1) * t) ** 2
    torch.testing.assert_close(s.sigma_dt(t), dsigma, rtol=1e-12, atol=1e-12)


GAUSS = GaussianMixture.gaussian([2.0, -1.0], 0.5)


@pytest.mark.parametrize(
    ("kind", "prediction", "shift", "interpolate"),
    [
        ("vp-cosine", "v", -2.0, False),
        ("vp-cosine", "eps", -2.0, True),
        ("flow", "flow", 1.0, False),
        ("flow", "flow", -1.0, True),
        ("edm", "edm", -1.0, False),
    ],
)
def test_samplers_land_on_the_exact_ode_solution(kind, prediction, shift, interpolate):
    """The exact Gaussian denoiser on a shifted schedule: Heun and DPM-Solver++(2M) on the
    schedule's default grid land on the closed-form probability-flow ODE endpoint, and Heun's
    error falls at second order (40 -> 80 steps: by more than 3x)."""
    s = schedule_from_dict({"kind": kind, "shift": shift, "interpolate": interpolate})
    d = GAUSS.denoiser(s, prediction)

    def error(name, steps):
        ts = time_grid(s, steps, spacing=default_spacing(s))
        gen = torch.Generator().manual_seed(0)
        x_T = s.prior_std() * torch.randn(64, 2, generator=gen, dtype=torch.float64)
        a_T, s_T = s.alpha(ts[0]).item(), s.sigma(ts[0]).item()
        exact = GAUSS.ode_map_gaussian(
            x_T, a_T, s_T, alpha_to=s.alpha(0.0).item(), sigma_to=s.sigma(0.0).item()
        )
        return (SAMPLERS[name].bind(None)(d, x_T, ts) - exact).abs().max().item()

    heun_40, heun_80, dpmpp = error("heun", 40), error("heun", 80), error("dpmpp-2m", 40)
    assert heun_40 < 0.05 and dpmpp < 0.05, (heun_40, dpmpp)
    assert heun_80 < heun_40 / 3, (heun_40, heun_80)


def test_shift_zero_is_the_base_and_edm_keeps_karras():
    assert schedule_from_dict({"kind": "vp-cosine", "shift": 0}) == get_schedule("vp-cosine")
    assert default_spacing(schedule_from_dict({"kind": "edm", "shift": -1.0})) == "karras"
    assert default_spacing(schedule_from_dict({"kind": "vp-cosine", "shift": -1.0})) == "uniform-t"


def test_config_round_trip():
    """--set diffusion.schedule.shift=... reaches the schedule, and the schedule's to_dict (what
    a run stores) rebuilds the same schedule, so sampling matches training."""
    cfg = apply_overrides(
        TrainConfig(),
        [
            'diffusion.schedule.kind="vp-cosine"',
            "diffusion.schedule.shift=-2.77",
            "diffusion.schedule.interpolate=true",
        ],
    )
    assert cfg.diffusion.schedule == {"kind": "vp-cosine", "shift": -2.77, "interpolate": True}
    assert from_dict(TrainConfig, to_dict(cfg)) == cfg
    s = schedule_from_dict(cfg.diffusion.schedule)
    assert isinstance(s, ShiftedSchedule) and s.interpolate and s.shift == -2.77
    again = schedule_from_dict(s.to_dict())
    assert again == s and again.to_dict() == s.to_dict()
    t = torch.linspace(0, 1, 9, dtype=torch.float64)
    assert torch.equal(again.log_snr(t), s.log_snr(t))


@pytest.mark.parametrize(
    ("d", "match"),
    [
        ({"kind": "linear", "shift": -1.0}, "discrete 'linear' schedule cannot take a shift"),
        ({"kind": "cosine", "shift": 0}, "cannot take a shift"),
        ({"kind": "vp-cosine", "interpolate": True}, "'interpolate' needs a 'shift'"),
        ({"kind": "vp-cosine", "shift": "big"}, "shift must be a number"),
        ({"kind": "vp-cosine", "shift": float("inf")}, "shift must be finite"),
        ({"kind": "flow", "shift": 1.0, "interpolate": "yes"}, "must be true or false"),
        ({"kind": "edm", "shift": -4.0, "interpolate": True}, "log-SNR rise near t = 0.5"),
        ({"kind": "flow", "shfit": 1.0}, r"valid: \['shift', 'interpolate'\]"),
    ],
)
def test_bad_input(d, match):
    with pytest.raises(ValueError, match=match) as info:
        schedule_from_dict(d)
    assert "\n" not in str(info.value)
