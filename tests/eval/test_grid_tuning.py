"""Tuned time grids on the analytic Gaussian-mixture oracle: the tuned grid beats every fixed
grid against the exact ODE solution; the dynamic programme is exact; refinement only improves."""

import itertools

import pytest
import torch

from pixdiff.eval.grid_refine import grid_from_logits, logits_from_grid, refine_grid
from pixdiff.eval.grid_search import (
    FIXED_GRIDS,
    candidate_times,
    cheapest_path,
    endpoint_rmse,
    ends_denoised,
    fine_grid,
    step_costs,
    teacher_trajectory,
    tuned_times,
)
from pixdiff.eval.grid_tuning import tune
from pixdiff.samplers import SAMPLERS
from pixdiff.sampling import check_times
from pixdiff.schedule_registry import get_schedule
from pixdiff.timesteps import time_grid
from pixdiff.toy import GaussianMixture

GM = GaussianMixture(
    torch.tensor([[1.5, -1.0, 0.5, 0.0], [-1.0, 1.0, 0.0, -0.5], [0.0, 0.0, -1.5, 1.0]]).double(),
    torch.tensor([0.15, 0.3, 0.2], dtype=torch.float64),
    torch.tensor([0.3, 0.3, 0.4], dtype=torch.float64),
)
SCHEDULE = get_schedule("cosine")  # the shipped models' discrete cosine schedule


def noise(n: int, seed: int) -> torch.Tensor:
    x = torch.randn(n, GM.dim, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    return x * SCHEDULE.prior_std()


@pytest.fixture(scope="module")
def tuned():
    """The exact denoiser, the teacher on 256 warm-up noises and the DP's step costs."""
    den = GM.exact_denoiser(SCHEDULE)
    trajectory = teacher_trajectory(den, noise(256, 0), candidates=60, substeps=3)
    return den, trajectory, step_costs(trajectory, SCHEDULE)


@pytest.fixture(scope="module")
def held_out():
    """200 other noises and the exact ODE solution from them: DPM-Solver++(3M) on 2,000 steps
    uniform in log-SNR, converged to 1e-5 (mean RMSE to 1,000 steps), far below the errors
    compared."""
    den = GM.exact_denoiser(SCHEDULE)
    x_T = noise(200, 1)
    exact, coarser = (
        SAMPLERS["dpmpp-3m"].bind(None)(den, x_T, time_grid(SCHEDULE, n, spacing="log-snr"))
        for n in (2000, 1000)
    )
    assert (exact - coarser).pow(2).mean(1).sqrt().mean() < 1e-5
    return x_T, exact


def ode_error(sampler: str, times, held_out) -> float:
    """Mean per-sample RMSE of ``sampler`` on ``times`` to the exact solution."""
    x_T, exact = held_out
    ts = torch.as_tensor(times, dtype=torch.float64)
    x = SAMPLERS[sampler].bind(None)(GM.exact_denoiser(SCHEDULE), x_T, ts)
    return (x - exact).pow(2).mean(1).sqrt().mean().item()


@pytest.mark.parametrize("nfe", [4, 6])
def test_tuned_grid_beats_every_fixed_grid_against_the_exact_ode(tuned, held_out, nfe):
    """DPM-Solver++(2M), tuned on the warm-up noises, scored on 200 others."""
    den, trajectory, costs = tuned
    grid = tune(den, trajectory, costs, "dpmpp-2m", nfe, refine=4)
    assert grid.steps == nfe and grid.rmse <= min(grid.fixed_rmse.values())
    error = ode_error("dpmpp-2m", grid.times, held_out)
    fixed = {
        s: ode_error("dpmpp-2m", time_grid(SCHEDULE, nfe, spacing=s), held_out) for s in FIXED_GRIDS
    }
    assert all(error < 0.95 * e for e in fixed.values()), (error, fixed)


def test_dynamic_programme_alone_beats_every_fixed_grid_at_6_ddim_steps(tuned, held_out):
    """The GITS search without refinement, DDIM's own one-step cost."""
    _, trajectory, costs = tuned
    times = tuned_times(trajectory, costs, 6)
    check_times(times, 6)
    error = ode_error("ddim", times, held_out)
    fixed = {s: ode_error("ddim", time_grid(SCHEDULE, 6, spacing=s), held_out) for s in FIXED_GRIDS}
    assert all(error < e for e in fixed.values()), (error, fixed)


def test_cheapest_path_is_the_best_of_all_paths():
    costs = torch.rand(7, 7, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    costs = costs.masked_fill(torch.ones(7, 7).tril().bool(), float("inf"))
    for steps in (1, 3, 6):
        paths = [(0, *inner, 6) for inner in itertools.combinations(range(1, 6), steps - 1)]
        best = min(paths, key=lambda p: sum(costs[a, b] for a, b in itertools.pairwise(p)))
        assert tuple(cheapest_path(costs, steps)) == best
    with pytest.raises(ValueError, match="a path of 7 steps"):
        cheapest_path(costs, 7)


def test_a_denoised_last_step_is_the_best_path_that_ends_at_the_last_candidate(tuned):
    """last_step="denoise": the cheapest of all paths through candidate M - 1 (exhaustive
    over a small cost matrix), then the step to t = 0; and on the Gaussian mixture a grid
    that ends there, as the uniform-t grid does."""
    costs = torch.rand(7, 7, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    costs = costs.masked_fill(torch.ones(7, 7).tril().bool(), float("inf"))
    for steps in (2, 4):
        paths = [(0, *inner, 5, 6) for inner in itertools.combinations(range(1, 5), steps - 2)]
        best = min(paths, key=lambda p: sum(costs[a, b] for a, b in itertools.pairwise(p)))
        assert tuple(cheapest_path(costs[:6, :6], steps - 1)) + (6,) == best
    den, trajectory, costs = tuned
    times = tuned_times(trajectory, costs, 5, last_step="denoise")
    check_times(times, 5)
    assert times[-1] == 0 and times[-2] == trajectory.times[-2].item()
    assert ends_denoised(times, trajectory)
    assert ends_denoised(time_grid(SCHEDULE, 5, spacing="uniform-t"), trajectory)
    assert not ends_denoised(time_grid(SCHEDULE, 5, spacing="trailing"), trajectory)
    with pytest.raises(ValueError, match="at least 2 steps"):
        tuned_times(trajectory, costs, 1, last_step="denoise")
    with pytest.raises(ValueError, match="--refine"):
        tune(den, trajectory, costs, "ddim", 4, refine=2, last_step="denoise")


def test_candidates_span_the_fixed_grids_and_the_teacher_passes_them():
    times = candidate_times(SCHEDULE, 50)
    assert times[0] == SCHEDULE.t_max and times[-1] == 0 and len(times) == 51
    assert bool((times.diff() < 0).all())
    lam = SCHEDULE.log_snr(times[1:-1])
    assert lam.diff().std() < 1e-9  # uniform in log-SNR after t_max
    grid = fine_grid(SCHEDULE, times, 3)
    assert bool((grid.diff() < 0).all()) and set(times.tolist()) <= set(grid.tolist())
    assert len(grid) - 1 == 3 * (len(times) - 2) + 1


def test_refinement_lowers_the_warm_up_loss_and_keeps_the_grid_valid(tuned):
    den, trajectory, costs = tuned
    start = tuple(time_grid(SCHEDULE, 4, spacing="trailing").tolist())
    before = endpoint_rmse(den, trajectory, "dpmpp-2m", start)
    times, after = refine_grid(den, trajectory, "dpmpp-2m", start, iterations=3)
    check_times(times, 4)
    assert after < 0.95 * before
    assert after == pytest.approx(endpoint_rmse(den, trajectory, "dpmpp-2m", times))


def test_logits_round_trip_the_grid():
    times = (1.0, 0.8, 0.5, 0.2, 0.0)
    back = grid_from_logits(logits_from_grid(times, SCHEDULE), SCHEDULE)
    assert back == pytest.approx(times, abs=1e-6)


@pytest.mark.parametrize("name", ["flow", "edm", "vp-linear", "linear"])
def test_every_kind_of_path_gets_a_valid_grid_no_worse_than_the_fixed_ones(name):
    """Zero SNR at t_max (flow), alpha = 1 (EDM), continuous and discrete VP paths."""
    schedule = get_schedule(name)
    den = GM.exact_denoiser(schedule)
    x_T = torch.randn(16, GM.dim, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    trajectory = teacher_trajectory(den, x_T * schedule.prior_std(), candidates=30, substeps=2)
    assert trajectory.times[0] == schedule.t_max and trajectory.times[-1] == 0
    grid = tune(den, trajectory, step_costs(trajectory, schedule), "unipc-bh2", 5)
    check_times(grid.times, 5)
    assert grid.fixed_rmse and grid.rmse <= min(grid.fixed_rmse.values())
