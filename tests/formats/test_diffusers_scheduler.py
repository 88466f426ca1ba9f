"""diffusers' scheduler configs in pixdiff's terms and back: the same alphas_cumprod for every
beta schedule, the same timesteps for every spacing, clip_sample on by default as in diffusers."""

from __future__ import annotations

import pytest
import torch
from diffusers_helpers import diffusers

from pixdiff.discrete_schedules import DiscreteSchedule
from pixdiff.formats.diffusers_scheduler import (
    BETA_SCHEDULES,
    read_scheduler,
    scheduler_config,
    warn_unsupported,
)
from pixdiff.schedule_registry import get_schedule
from pixdiff.timesteps import time_grid


def _alphas_cumprod(schedule: DiscreteSchedule) -> torch.Tensor:
    t = torch.arange(1, schedule.num_timesteps + 1, dtype=torch.float64) / schedule.num_timesteps
    return schedule.alpha(t) ** 2


@pytest.mark.parametrize("kind", sorted(BETA_SCHEDULES))
@pytest.mark.parametrize("zero_snr", [False, True])
def test_every_beta_schedule_gives_diffusers_alphas_cumprod(kind, zero_snr):
    config = {"beta_schedule": kind, "rescale_betas_zero_snr": zero_snr, "beta_end": 0.015}
    theirs = diffusers.DDPMScheduler(**config).alphas_cumprod.double()  # DDIM's lacks sigmoid
    ours = read_scheduler(config).schedule
    torch.testing.assert_close(_alphas_cumprod(ours), theirs, atol=2e-6, rtol=1e-5)


@pytest.mark.parametrize(
    "schedule",
    [
        DiscreteSchedule("cosine"),
        DiscreteSchedule("linear", zero_terminal_snr=True),
        DiscreteSchedule("quadratic", num_timesteps=500),
    ],
)
def test_an_exported_config_is_the_same_schedule_in_diffusers(schedule):
    config = scheduler_config(schedule, "v", clip_x0=None, version="0.30.0")
    theirs = diffusers.DDIMScheduler.from_config(config)
    assert theirs.config.prediction_type == "v_prediction" and not theirs.config.clip_sample
    torch.testing.assert_close(
        _alphas_cumprod(schedule), theirs.alphas_cumprod.double(), atol=2e-6, rtol=1e-5
    )
    back = read_scheduler(config)
    assert back.schedule.to_dict() == {**schedule.to_dict(), "beta_kind": back.schedule.beta_kind}
    torch.testing.assert_close(back.schedule.alphas_cumprod, schedule.alphas_cumprod)
    assert (back.prediction, back.spacing, back.clip_x0) == ("v", "trailing", None)


@pytest.mark.parametrize("spacing", ["leading", "trailing", "linspace"])
@pytest.mark.parametrize("steps", [10, 7])
def test_each_timestep_spacing_gives_diffusers_timesteps(spacing, steps):
    scheduler = diffusers.DDIMScheduler(timestep_spacing=spacing)
    scheduler.set_timesteps(steps)
    settings = read_scheduler(dict(scheduler.config))
    grid = time_grid(settings.schedule, steps, spacing=settings.spacing)
    index = (grid[:-1] * 1000 - 1).round().long()  # pixdiff's t = (i + 1) / T
    assert index.tolist() == scheduler.timesteps.tolist()


def test_clip_sample_follows_diffusers_defaults():
    assert read_scheduler({}).clip_x0 == 1.0  # DDPM/DDIM clip unless told otherwise
    assert read_scheduler({"_class_name": "DDIMScheduler", "clip_sample_range": 2}).clip_x0 == 2.0
    assert read_scheduler({"clip_sample": False}).clip_x0 is None
    assert read_scheduler({"_class_name": "EulerDiscreteScheduler"}).clip_x0 is None
    assert read_scheduler({}).spacing == "leading"  # diffusers' default spacing, not pixdiff's


@pytest.mark.parametrize(
    "schedule", [get_schedule("vp-cosine"), DiscreteSchedule("sigmoid", beta_end=0.03)]
)
def test_other_vp_schedules_are_written_as_their_table(schedule):
    config = scheduler_config(schedule, "eps", clip_x0=1.0, version="0.30.0")
    theirs = diffusers.DDIMScheduler.from_config(config)
    t = torch.arange(1, 1001, dtype=torch.float64) / 1000
    torch.testing.assert_close(
        theirs.alphas_cumprod.double(), schedule.alpha(t) ** 2, atol=1e-6, rtol=1e-4
    )
    assert theirs.config.clip_sample and theirs.config.clip_sample_range == 1.0
    with pytest.raises(ValueError, match="trained_betas are not supported"):
        read_scheduler(config)  # pixdiff reads its own export's schedule from pixdiff.json


@pytest.mark.parametrize(
    ("kind", "prediction", "message"),
    [("flow", "v", "variance-preserving"), ("cosine", "edm", "predicts 'edm'")],
)
def test_paths_diffusers_cannot_sample_are_refused(kind, prediction, message):
    with pytest.raises(ValueError, match=message):
        scheduler_config(get_schedule(kind), prediction, version="0.30.0")


def test_unsupported_options_are_named():
    with pytest.raises(ValueError, match="unsupported diffusers prediction_type 'flow'"):
        read_scheduler({"prediction_type": "flow"})
    with pytest.raises(ValueError, match="trained_betas"):
        read_scheduler({"trained_betas": [0.1] * 10})
    with pytest.warns(UserWarning, match=r"thresholding=True, steps_offset=1 not applied"):
        warn_unsupported({"thresholding": True, "steps_offset": 1}, "s.json")
