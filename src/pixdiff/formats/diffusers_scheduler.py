"""A pixdiff schedule and prediction type as a diffusers DDPM/DDIM scheduler config, and back.

Time: diffusers' timestep index i (0 .. T-1, what its schedulers feed the network) is pixdiff's
t = (i + 1) / T, and ``alphas_cumprod[i]`` is alpha(t)^2. This is the convention of
:class:`~pixdiff.discrete_schedules.DiscreteSchedule`, whose linear, scaled-linear (and
quadratic), sigmoid and cosine tables are diffusers' ``beta_schedule`` values computed in float64
(diffusers computes them in float32), so a discrete run maps exactly. A continuous VP schedule
is written as diffusers' ``trained_betas`` of alpha(t)^2 at those T nodes, with the network fed
pixdiff's own c_noise at t = (i + 1) / T (the exported model class does it); between the nodes
diffusers cannot sample it, which only matters for samplers that step off the grid. Paths that
are not variance preserving (VE, EDM, flow) have no DDPM/DDIM scheduler.

Reading a config honours ``beta_schedule``, ``beta_start``, ``beta_end``,
``num_train_timesteps``, ``rescale_betas_zero_snr``, ``prediction_type``, ``timestep_spacing``
and ``clip_sample`` / ``clip_sample_range`` (on by default in diffusers' DDPM and DDIM
schedulers: the x0 estimate is clipped, see :class:`~pixdiff.denoiser.Denoiser`'s ``clip_x0``).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

import torch

from pixdiff.discrete_schedules import DiscreteSchedule
from pixdiff.schedules import Schedule

# diffusers' beta_schedule / prediction_type names -> pixdiff's
BETA_SCHEDULES = {
    "linear": "linear",
    "scaled_linear": "scaled-linear",
    "squaredcos_cap_v2": "cosine",
    "sigmoid": "sigmoid",
}
# pixdiff's quadratic table is linear in sqrt(beta): diffusers' scaled_linear formula. The
# sigmoid table is written as trained_betas: diffusers' DDIMScheduler lacks it (DDPM's has it)
TO_BETA_SCHEDULE = {**{v: k for k, v in BETA_SCHEDULES.items()}, "quadratic": "scaled_linear"}
PREDICTION_TYPES = {"epsilon": "eps", "sample": "x0", "v_prediction": "v"}
SPACINGS = ("leading", "trailing", "linspace")  # diffusers' timestep_spacing; pixdiff's names too
# the schedulers with clip_sample, which is on unless their config says otherwise
CLIPPING_SCHEDULERS = ("DDPMScheduler", "DDIMScheduler", "DDPMParallelScheduler",
                       "DDIMParallelScheduler")  # fmt: skip


@dataclass(frozen=True)
class SchedulerSettings:
    """What a diffusers scheduler config says about sampling, in pixdiff's terms.

    Attributes:
        schedule, prediction: the path and the network's prediction type.
        spacing: the time grid its ``timestep_spacing`` gives (pixdiff's spacing of that name).
        clip_x0: the x0 clip of ``clip_sample`` (its ``clip_sample_range``), or None.
    """

    schedule: DiscreteSchedule
    prediction: str
    spacing: str
    clip_x0: float | None


def _choice(config: dict, key: str, default: str, valid, source: str) -> str:
    value = config.get(key, default)
    if value not in valid:
        raise ValueError(
            f"{source}: unsupported diffusers {key} {value!r}; supported: {sorted(valid)}"
        )
    return value


def read_scheduler(config: dict, source: str | Path = "scheduler config") -> SchedulerSettings:
    """The schedule, prediction type, grid spacing and x0 clip of a diffusers scheduler config
    (``scheduler_config.json``), with diffusers' defaults for what it leaves out."""
    schedule, prediction = read_schedule(config, source)
    sampling = read_sampling(config, source)
    warn_unsupported(config, source)
    return SchedulerSettings(schedule, prediction, **sampling)


def read_schedule(config: dict, source: str | Path) -> tuple[DiscreteSchedule, str]:
    """(schedule, prediction type) of a diffusers scheduler config."""
    if config.get("trained_betas") is not None:
        raise ValueError(f"{source}: trained_betas are not supported; use a beta_schedule")
    kind = _choice(config, "beta_schedule", "linear", BETA_SCHEDULES, str(source))
    pred = _choice(config, "prediction_type", "epsilon", PREDICTION_TYPES, str(source))
    betas = {} if kind == "squaredcos_cap_v2" else {
        "beta_start": float(config.get("beta_start", 1e-4)),
        "beta_end": float(config.get("beta_end", 0.02)),
    }  # fmt: skip
    schedule = DiscreteSchedule(
        beta_kind=BETA_SCHEDULES[kind],  # type: ignore[arg-type]
        num_timesteps=int(config.get("num_train_timesteps", 1000)),
        zero_terminal_snr=bool(config.get("rescale_betas_zero_snr", False)),
        **betas,
    )
    return schedule, PREDICTION_TYPES[pred]


def read_sampling(config: dict, source: str | Path) -> dict:
    """``{"spacing", "clip_x0"}`` of a diffusers scheduler config: the grid its
    ``timestep_spacing`` gives and the x0 clip of its ``clip_sample`` (None when off)."""
    spacing = _choice(config, "timestep_spacing", "leading", SPACINGS, str(source))
    clips = config.get("_class_name", "DDPMScheduler") in CLIPPING_SCHEDULERS
    clip = float(config.get("clip_sample_range", 1.0)) if config.get("clip_sample", clips) else None
    return {"spacing": spacing, "clip_x0": clip}


def warn_unsupported(config: dict, source: str | Path) -> None:
    """One warning naming the options of a scheduler config that pixdiff does not apply."""
    ignored = [
        f"{key}={config[key]!r}"
        for key, default in (
            ("thresholding", False),
            ("set_alpha_to_one", True),
            ("variance_type", "fixed_small"),
        )
        if key in config and config[key] != default
    ]
    if config.get("timestep_spacing", "leading") == "leading" and config.get("steps_offset", 0):
        ignored.append(f"steps_offset={config['steps_offset']}")
    if ignored:
        warnings.warn(f"{source}: {', '.join(ignored)} not applied by pixdiff", stacklevel=3)


def schedule_from_diffusers(config: dict) -> tuple[DiscreteSchedule, str]:
    """(schedule, prediction type) from a diffusers scheduler config dict."""
    return read_schedule(config, "scheduler config")


# ----------------------------------------------------------------------------- export


def node_alpha_bar(schedule: Schedule, num_timesteps: int = 1000) -> torch.Tensor:
    """alpha(t)^2 at t = (i + 1) / T, i = 0 .. T-1: diffusers' ``alphas_cumprod`` (float64)."""
    t = torch.arange(1, num_timesteps + 1, dtype=torch.float64) / num_timesteps
    return schedule.alpha(t) ** 2


def is_variance_preserving(schedule: Schedule, num_timesteps: int = 1000) -> bool:
    t = torch.arange(1, num_timesteps + 1, dtype=torch.float64) / num_timesteps
    return bool(torch.allclose(schedule.alpha(t) ** 2 + schedule.sigma(t) ** 2,
                               torch.ones_like(t)))  # fmt: skip


def scheduler_config(
    schedule: Schedule, prediction: str, *, clip_x0: float | None = None, version: str
) -> dict:
    """The ``DDIMScheduler`` config of a pixdiff VP schedule and prediction type, sampling on
    pixdiff's default grid for it (trailing, Lin et al. 2023); a ValueError for a path or
    prediction type diffusers' DDPM/DDIM schedulers have no counterpart of."""
    to_type = {v: k for k, v in PREDICTION_TYPES.items()}
    if prediction not in to_type:
        raise ValueError(
            f"diffusers' schedulers take epsilon, sample or v_prediction models; this run "
            f"predicts {prediction!r}: export it --to onnx or --to torchscript"
        )
    config = {
        "_class_name": "DDIMScheduler", "_diffusers_version": version,
        "num_train_timesteps": 1000, "beta_schedule": "linear", "beta_start": 1e-4,
        "beta_end": 0.02, "trained_betas": None, "rescale_betas_zero_snr": False,
        "prediction_type": to_type[prediction], "timestep_spacing": "trailing",
        "clip_sample": clip_x0 is not None, "clip_sample_range": clip_x0 or 1.0,
        "set_alpha_to_one": True, "steps_offset": 0, "thresholding": False,
    }  # fmt: skip
    if isinstance(schedule, DiscreteSchedule) and schedule.beta_kind != "sigmoid":
        config.update(
            num_train_timesteps=schedule.num_timesteps,
            beta_schedule=TO_BETA_SCHEDULE[schedule.beta_kind],
            beta_start=config["beta_start"] if schedule.beta_start is None else schedule.beta_start,
            beta_end=config["beta_end"] if schedule.beta_end is None else schedule.beta_end,
            rescale_betas_zero_snr=schedule.zero_terminal_snr,
        )  # fmt: skip
        return config
    if not is_variance_preserving(schedule):
        raise ValueError(
            f"diffusers' DDPM/DDIM schedulers need a variance-preserving path; the run's "
            f"{schedule.kind!r} schedule is not: export it --to onnx or --to torchscript"
        )
    alpha_bar = node_alpha_bar(schedule)
    previous = torch.cat([alpha_bar.new_ones(1), alpha_bar[:-1]])
    config["trained_betas"] = (1 - alpha_bar / previous).tolist()
    return config
