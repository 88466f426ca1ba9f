"""Time grids: the published index spacings and the continuous grids."""

import numpy as np
import pytest
import torch

from pixdiff.schedule_registry import SCHEDULE_NAMES, get_schedule
from pixdiff.timesteps import SPACINGS, discrete_timesteps, karras_sigmas, time_grid


def test_index_spacings_match_lin_et_al_table2():
    # Lin et al. 2023, Table 2 (T = 1000, 10 steps)
    assert discrete_timesteps(1000, 10, "linspace").tolist() == [
        999,
        888,
        777,
        666,
        555,
        444,
        333,
        222,
        111,
        0,
    ]
    assert discrete_timesteps(1000, 10, "leading").tolist() == list(range(900, -1, -100))
    assert discrete_timesteps(1000, 10, "trailing").tolist() == list(range(999, 0, -100))


@pytest.mark.parametrize("steps", [61, 103, 121, 201, 999, 1000])
def test_trailing_has_exactly_n_distinct_indices(steps):
    idx = discrete_timesteps(1000, steps, "trailing")
    assert len(idx) == steps and idx[0] == 999 and idx.min() >= 0


def test_uniform_grid_with_zero_t_min_is_even():
    ts = time_grid(get_schedule("flow"), 5, spacing="trailing")
    torch.testing.assert_close(ts, torch.tensor([1, 0.8, 0.6, 0.4, 0.2, 0], dtype=torch.float64))


def test_karras_sigmas_endpoints_and_rho():
    s = karras_sigmas(0.002, 80.0, 18, 7.0)
    assert s[0].item() == pytest.approx(80.0) and s[-1].item() == pytest.approx(0.002)
    mid = (80 ** (1 / 7) + 0.5 * (0.002 ** (1 / 7) - 80 ** (1 / 7))) ** 7
    assert karras_sigmas(0.002, 80.0, 3)[1].item() == pytest.approx(mid)


@pytest.mark.parametrize("name", SCHEDULE_NAMES)
@pytest.mark.parametrize("spacing", SPACINGS)
def test_grids_are_decreasing_and_end_at_zero(name, spacing):
    s = get_schedule(name)
    if name == "flow" and spacing in ("karras", "log-snr"):  # zero SNR at t = 1
        with pytest.raises(ValueError, match="uniform grid"):
            time_grid(s, 7, spacing=spacing)
        return
    if spacing == "leading" and s.t_min == 0:
        with pytest.raises(ValueError, match="twice"):
            time_grid(s, 7, spacing=spacing)
        return
    for steps in (1, 7, 50):
        ts = time_grid(s, steps, spacing=spacing)
        assert ts.shape == (steps + 1,) and ts[-1].item() == 0.0
        assert bool((ts[1:] < ts[:-1]).all()) and ts[0].item() <= 1.0


def test_discrete_grid_hits_training_timesteps():
    s = get_schedule("linear")
    ts = time_grid(s, 10, spacing="trailing")
    assert np.allclose(s.timestep(ts[:-1]).numpy(), list(range(999, 0, -100)))


def test_log_snr_grid_is_uniform_in_log_snr():
    s = get_schedule("vp-cosine")
    lam = s.log_snr(time_grid(s, 10, spacing="log-snr")[:-1])
    torch.testing.assert_close(
        lam.diff(),
        torch.full((9,), lam.diff()[0].item(), dtype=torch.float64),
        rtol=1e-8,
        atol=1e-8,
    )


def test_bad_input():
    s = get_schedule("linear")
    with pytest.raises(ValueError, match=r"steps must be in \[1, 1000\].*got 1001"):
        time_grid(s, 1001, spacing="trailing")
    with pytest.raises(ValueError, match="steps must be >= 1"):
        time_grid(get_schedule("edm"), 0)
    with pytest.raises(ValueError, match="unknown time grid 'karas'.*valid"):
        time_grid(s, 10, spacing="karas")
    z = get_schedule("linear").__class__(zero_terminal_snr=True)
    with pytest.raises(ValueError, match="zero SNR.*trailing"):
        time_grid(z, 10, spacing="karras")
