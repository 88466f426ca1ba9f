"""pixdiff: pixel-space diffusion on one continuous-time core."""

from pixdiff.checkpoint import load
from pixdiff.conditioning import Cond
from pixdiff.denoiser import Denoised, Denoiser
from pixdiff.guidance import ClassifierFreeGuidance
from pixdiff.pipelines.cascade import Stage, cascade
from pixdiff.pipelines.edit import img2img, inpaint
from pixdiff.pipelines.generate import generate
from pixdiff.prediction import PREDICTION_TYPES
from pixdiff.samplers import available as available_samplers
from pixdiff.samplers import sample_ddim, sample_ddpm
from pixdiff.sampling import Sampling, sample
from pixdiff.schedules import (
    DiscreteSchedule,
    EDMSchedule,
    FlowSchedule,
    Schedule,
    VESchedule,
    VPCosineSchedule,
    VPLinearLogSNRSchedule,
    VPLinearSchedule,
    get_schedule,
    q_sample,
    schedule_from_dict,
)
from pixdiff.timesteps import time_grid

__version__ = "0.1.0"

__all__ = [
    "PREDICTION_TYPES",
    "Sampling",
    "Stage",
    "ClassifierFreeGuidance",
    "Cond",
    "Denoised",
    "Denoiser",
    "DiscreteSchedule",
    "EDMSchedule",
    "FlowSchedule",
    "Schedule",
    "VESchedule",
    "VPCosineSchedule",
    "VPLinearLogSNRSchedule",
    "VPLinearSchedule",
    "available_samplers",
    "cascade",
    "generate",
    "get_schedule",
    "img2img",
    "inpaint",
    "load",
    "q_sample",
    "sample",
    "sample_ddim",
    "sample_ddpm",
    "schedule_from_dict",
    "time_grid",
]
