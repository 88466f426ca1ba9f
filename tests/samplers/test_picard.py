"""Picard (ParaDiGMS) parallel sampling: it converges to the sequential sampler's result, noise
included, with the exact oracle and a tiny net; round counts; bad input."""

import pytest
import torch
from order_oracle import GAUSS

from pixdiff.conditioning import Cond
from pixdiff.denoiser import Denoiser
from pixdiff.guidance import ClassifierFreeGuidance, null_label_cond
from pixdiff.nets import UNet, preset
from pixdiff.samplers import SAMPLERS, Picard, per_sample_generators, sample_picard
from pixdiff.sampling import Sampling, draw
from pixdiff.schedule_registry import get_schedule
from pixdiff.timesteps import time_grid

STEPS = 100
pytestmark = pytest.mark.usefixtures("one_thread")


def oracle_run(name, schedule_name, *, seed=0, n=8, steps=STEPS, **picard):
    """(Picard sample, sequential sample, stats) of ``name`` with the exact oracle in float64,
    from the same start and per-sample seeds; picard={} gives only the sequential one."""
    schedule = get_schedule(schedule_name)
    denoiser = GAUSS.exact_denoiser(schedule)
    ts = time_grid(
        schedule, steps, spacing="trailing" if schedule_name == "linear" else "uniform-t"
    )
    gen = torch.Generator().manual_seed(seed)
    x = schedule.prior_std() * torch.randn(n, 2, generator=gen, dtype=torch.float64)
    spec = SAMPLERS[name]
    seq = spec.bind(None)(denoiser, x, ts, generator=per_sample_generators(seed, n))
    stats: dict = {}
    step = spec.one_step(None)
    par = sample_picard(
        step, denoiser, x, ts, stats=stats, generator=per_sample_generators(seed, n), **picard
    )
    return par, seq, stats


def err(a, b) -> float:
    return (a - b).abs().max().item()


@pytest.mark.parametrize("name", ["ddim", "euler"])
@pytest.mark.parametrize("schedule", ["linear", "flow"])
def test_ode_sampler_converges_to_sequential_as_tolerance_falls(name, schedule):
    runs = [oracle_run(name, schedule, tolerance=tol) for tol in (1e-1, 1e-3, 1e-6, 1e-12)]
    errors = [err(par, seq) for par, seq, _ in runs]
    stats = runs[-1][2]
    assert all(b < a for a, b in zip(errors, errors[1:], strict=False)), errors
    assert errors[0] > 1e-6 and errors[-1] < 1e-10, errors
    assert stats["sequential"] == STEPS and stats["nfe"] >= STEPS


def test_window_over_the_whole_grid_equals_sequential():
    """With the window on all steps, step k is exact after k + 1 rounds, so a tolerance that
    never slides early gives the sequential result to round-off, in at most `steps` rounds."""
    par, seq, stats = oracle_run("ddim", "linear", steps=30, window=30, tolerance=1e-14)
    assert err(par, seq) < 1e-12
    assert stats["rounds"] <= 30
    one_round_per_step, seq, stats = oracle_run("ddim", "linear", steps=30, window=1)
    assert err(one_round_per_step, seq) < 1e-14 and stats["rounds"] == stats["nfe"] == 30


def test_smooth_problem_takes_far_fewer_rounds_than_steps():
    par, seq, stats = oracle_run("ddim", "linear", tolerance=1e-3)
    assert stats["rounds"] <= 25 and err(par, seq) < 1e-4


@pytest.mark.parametrize("name", ["ddpm", "euler-ancestral", "ddim-eta", "sde-pc"])
def test_stochastic_sampler_converges_to_the_same_sample(name):
    """The pre-drawn noise is the sequential run's per-sample stream: Picard lands on the same
    SDE sample, and leaves the generators where the sequential run does. sde-pc's corrector
    draws noise before its second network call (two rounds per Picard iteration)."""
    options = {"eta": 0.7} if name == "ddim-eta" else None
    spec = SAMPLERS["ddim" if name == "ddim-eta" else name]
    schedule = get_schedule("linear")
    denoiser, ts = GAUSS.exact_denoiser(schedule), time_grid(schedule, 50, spacing="trailing")
    x = torch.randn(6, 2, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    gens_seq, gens_par = per_sample_generators(5, 6), per_sample_generators(5, 6)
    seq = spec.bind(options)(denoiser, x, ts, generator=gens_seq)
    stats: dict = {}
    par = sample_picard(
        spec.one_step(options), denoiser, x, ts, tolerance=1e-12, stats=stats, generator=gens_par
    )
    assert err(par, seq) < 1e-9
    assert stats["sequential"] == spec.total_nfe(50, options)
    for g_seq, g_par in zip(gens_seq, gens_par, strict=True):
        assert torch.equal(torch.randn(3, generator=g_seq), torch.randn(3, generator=g_par))


def test_two_stage_step_batches_each_stage():
    par, seq, stats = oracle_run("dpm-solver-2", "linear", steps=40, tolerance=1e-10)
    assert err(par, seq) < 1e-9
    # 39 two-stage steps and the 1-NFE step to t = 0: one batched call per stage and round
    assert stats["sequential"] == 79 and stats["rounds"] < 79


def tiny_guided_net():
    torch.manual_seed(0)
    net = UNet(preset("unet-tiny", image_size=8, attention_resolutions=(4,), num_classes=3))
    with torch.no_grad():  # random weights everywhere (the output layer starts at zero)
        for p in net.parameters():
            p.normal_(0, 0.1)
    denoiser = Denoiser(net.eval(), get_schedule("linear"), "eps")
    return ClassifierFreeGuidance(denoiser, scale=2.0, uncond=null_label_cond(3))


def test_tiny_net_with_guidance_converges_to_sequential():
    """Through the Denoiser and CFG: per-sample times and the class condition batched over the
    window (concatenated per window state)."""
    guided = tiny_guided_net()
    cond = Cond(label=torch.tensor([0, 2]))
    shape = (2, 3, 8, 8)
    seq = draw(guided, shape, Sampling("ddim", 20), cond=cond, seed=3)
    errors = []
    for tol in (1e-1, 1e-4):
        stats: dict = {}
        run = Sampling("ddim", 20, parallel=Picard(window=8, tolerance=tol, stats=stats))
        errors.append(err(draw(guided, shape, run, cond=cond, seed=3), seq))
        assert stats["rounds"] < stats["nfe"] and stats["sequential"] == 20
    # float32 round-off of batched against unbatched network calls, relative to the output
    assert errors[1] < errors[0] and errors[1] < 1e-5 * seq.abs().max().item(), errors


def test_stats_add_up_over_batches():
    stats: dict = {}
    run = Sampling("ddim", 10, parallel=Picard(window=4, stats=stats))
    schedule = get_schedule("linear")
    for _ in range(2):
        draw(GAUSS.exact_denoiser(schedule), (3, 2), run, seed=0)
    assert stats["sequential"] == 20 and stats["rounds"] >= 6


@pytest.mark.parametrize("tolerance", [0.0, -1e-3, float("nan"), float("inf")])
def test_tolerance_must_be_positive(tolerance):
    with pytest.raises(ValueError, match="tolerance must be a number > 0"):
        Picard(tolerance=tolerance)


@pytest.mark.parametrize("window", [0, -2, 1.5, True])
def test_window_must_be_a_positive_whole_number(window):
    with pytest.raises(ValueError, match="window must be a whole number >= 1"):
        Picard(window=window)


@pytest.mark.parametrize("name", ["dpmpp-2m", "heun", "unipc-bh2", "ode-rk45"])
def test_multistep_sampler_is_refused(name):
    with pytest.raises(ValueError, match=f"one-step form .*; {name} is multistep"):
        Sampling(name, 20, parallel=Picard())
