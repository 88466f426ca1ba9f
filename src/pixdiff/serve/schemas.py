"""What the HTTP API takes and returns (pydantic models, shown on the app's OpenAPI page).

Field names are the ``pixdiff sample`` flags' (``--cfg-rescale`` is ``cfg_rescale``); ``class``
is the class name or id. Unknown fields are refused, so a misspelt option is an error.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from pixdiff.cli.flags import MAX_SEED
from pixdiff.timesteps import Spacing

MAX_PROMPT_CHARS = 500  # a caption; longer text is refused before it reaches the text encoder
MAX_NAME_CHARS = 200  # model, sampler and class names
UPLOAD_FIELDS = ("image", "mask")


class Body(BaseModel):
    """Strict: unknown fields and non-finite numbers are refused."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False, populate_by_name=True)


class SamplingFields(Body):
    """How each image is sampled; None takes the model's default."""

    sampler: str | None = Field(None, max_length=MAX_NAME_CHARS, description="a sampler name")
    steps: int | None = Field(None, ge=1, description="sampler steps (or give nfe)")
    nfe: int | None = Field(None, ge=1, description="network-evaluation budget")
    grid: Spacing | None = Field(None, description="time grid; None: by schedule")
    eta: float | None = Field(None, ge=0, description="DDIM eta")
    seed: int = Field(0, ge=0, le=MAX_SEED, description="image i uses seed + i")
    n: int = Field(1, ge=1, description="number of images (capped by the server)")


class SteeringFields(Body):
    """What to steer towards (class or prompt), away from, and how strongly."""

    class_: str | int | None = Field(
        None, alias="class", description="class name or id; 'all' cycles through the classes"
    )
    prompt: str | None = Field(None, max_length=MAX_PROMPT_CHARS)
    negative_class: str | int | None = None
    negative_prompt: str | None = Field(None, max_length=MAX_PROMPT_CHARS)
    guidance: float | None = Field(None, description="CFG scale w; None: the run's")
    guidance_interval: tuple[float, float] | None = None
    cfg_rescale: float = Field(0.0, ge=0, le=1)
    threshold: Literal["none", "static", "dynamic"] = "none"
    threshold_percentile: float | None = Field(None, gt=0, le=1)


class GenerateBody(SamplingFields, SteeringFields):
    """``POST /v1/generate``."""

    model: str = Field("fashion", max_length=MAX_NAME_CHARS)


class UploadForm(SamplingFields, SteeringFields):
    """The fields of a multipart request; its file parts (image, mask) are parameters apart."""

    @model_validator(mode="before")
    @classmethod
    def _without_files(cls, data):
        if isinstance(data, dict):
            return {k: v for k, v in data.items() if k not in UPLOAD_FIELDS}
        return data


class EditForm(UploadForm):
    """``POST /v1/edit`` (SDEdit), with the ``image`` upload."""

    model: str = Field("fashion", max_length=MAX_NAME_CHARS)
    strength: float = Field(0.6, ge=0, le=1, description="time t the input is noised to")


class InpaintForm(UploadForm):
    """``POST /v1/inpaint``, with the ``image`` and ``mask`` (white = fill) uploads."""

    model: str = Field("fashion", max_length=MAX_NAME_CHARS)
    resample: int = Field(1, ge=1, le=20, description="RePaint resampling R")


class UpscaleForm(UploadForm):
    """``POST /v1/upscale``, with the low-resolution ``image`` upload."""

    model: str = Field("emoji-sr", max_length=MAX_NAME_CHARS)
    aug_level: float | None = Field(None, ge=0, le=1, description="None: the run's")


class Result(BaseModel):
    """A finished job: base64 PNGs, the exact settings and the equivalent CLI command."""

    id: str
    images: list[str] = Field(description="base64 PNG of each image")
    grid: str = Field(description="base64 PNG of all images in a grid")
    settings: dict
    nfe: int = Field(description="network evaluations of the sampler per image")
    command: str = Field(description="the pixdiff command that draws the same images")
    seconds: float


class Problem(BaseModel):
    """Every error: one line saying what was wrong."""

    detail: str


class JobState(BaseModel):
    id: str
    state: Literal["queued", "running", "done", "failed", "cancelled", "timed out"]
