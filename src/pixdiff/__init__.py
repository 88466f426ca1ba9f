"""pixdiff: pixel-space diffusion on one continuous-time core."""

from pixdiff.conditioning import Cond
from pixdiff.denoiser import Denoised, Denoiser
from pixdiff.discrete_schedules import DiscreteSchedule
from pixdiff.guidance import ClassifierFreeGuidance
from pixdiff.images import make_grid, save_images
from pixdiff.pipelines.cascade import Stage, cascade
from pixdiff.pipelines.edit import img2img, inpaint
from pixdiff.pipelines.generate import generate
from pixdiff.pipelines.model import CascadeModel, Model, load
from pixdiff.pipelines.steering import Steering
from pixdiff.prediction import PREDICTION_TYPES
from pixdiff.samplers import Picard, sample_ddim, sample_ddpm
from pixdiff.samplers import available as available_samplers
from pixdiff.sampling import Sampling, sample
from pixdiff.schedule_registry import get_schedule, schedule_from_dict
from pixdiff.schedules import (
    EDMSchedule,
    FlowSchedule,
    Schedule,
    VESchedule,
    VPCosineSchedule,
    VPLinearLogSNRSchedule,
    VPLinearSchedule,
    q_sample,
)
from pixdiff.timesteps import time_grid

__version__ = "0.1.0"

__all__ = [
    "PREDICTION_TYPES",
    "CascadeModel",
    "Model",
    "Picard",
    "Steering",
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
    "make_grid",
    "q_sample",
    "sample",
    "sample_ddim",
    "sample_ddpm",
    "save_images",
    "schedule_from_dict",
    "time_grid",
]
