"""pixdiff: pixel-space diffusion on one continuous-time core.

The public names are imported on first use (PEP 562 module ``__getattr__``): ``import pixdiff``
and the first moment of every ``pixdiff`` command do not import torch, so a Ctrl-C then is
answered by pixdiff (one line, exit 130) rather than by a traceback from inside torch's import.
``pixdiff.load`` and ``from pixdiff import load`` work as with eager imports.
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

# public name -> "module" (the same name there) or "module:name"
_PUBLIC = {
    "PREDICTION_TYPES": "pixdiff.prediction",
    "CascadeModel": "pixdiff.pipelines.model",
    "Model": "pixdiff.pipelines.model",
    "Picard": "pixdiff.samplers",
    "Steering": "pixdiff.pipelines.steering",
    "Sampling": "pixdiff.sampling",
    "Stage": "pixdiff.pipelines.cascade",
    "ClassifierFreeGuidance": "pixdiff.guidance",
    "Cond": "pixdiff.conditioning",
    "Denoised": "pixdiff.denoiser",
    "Denoiser": "pixdiff.denoiser",
    "DiscreteSchedule": "pixdiff.discrete_schedules",
    "EDMSchedule": "pixdiff.schedules",
    "FlowSchedule": "pixdiff.schedules",
    "Schedule": "pixdiff.schedules",
    "VESchedule": "pixdiff.schedules",
    "VPCosineSchedule": "pixdiff.schedules",
    "VPLinearLogSNRSchedule": "pixdiff.schedules",
    "VPLinearSchedule": "pixdiff.schedules",
    "available_samplers": "pixdiff.samplers:available",
    "cascade": "pixdiff.pipelines.cascade",
    "generate": "pixdiff.pipelines.generate",
    "get_schedule": "pixdiff.schedule_registry",
    "img2img": "pixdiff.pipelines.edit",
    "inpaint": "pixdiff.pipelines.edit",
    "load": "pixdiff.pipelines.model",
    "make_grid": "pixdiff.images",
    "q_sample": "pixdiff.schedules",
    "sample": "pixdiff.sampling",
    "sample_ddim": "pixdiff.samplers",
    "sample_ddpm": "pixdiff.samplers",
    "save_images": "pixdiff.images",
    "schedule_from_dict": "pixdiff.schedule_registry",
    "time_grid": "pixdiff.timesteps",
}

__all__ = list(_PUBLIC)


def __getattr__(name: str) -> object:
    """Import a public name on first use and keep it (PEP 562)."""
    if name not in _PUBLIC:
        raise AttributeError(f"module 'pixdiff' has no attribute {name!r}")
    module, _, attr = _PUBLIC[name].partition(":")
    value = getattr(importlib.import_module(module), attr or name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_PUBLIC})
