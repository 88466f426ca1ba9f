"""``pixdiff.load``: a model (or cascade) ready to draw images in one call.

    import pixdiff
    model = pixdiff.load("fashion")
    images = model.generate(classes="sneaker", n=8, steps=20)
    pixdiff.save_images(images, "out/sneakers")

Names are the shipped models (:mod:`pixdiff.shipped`); anything else is a run directory or
checkpoint file. ``generate`` takes class names or ids, or prompts, builds a
:class:`~pixdiff.pipelines.steering.Steering` and a :class:`~pixdiff.sampling.Sampling`, and
returns PIL images (or a tensor in [-1, 1] with ``output="tensor"``).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Literal

import torch
from PIL import Image
from torch import Tensor, nn

from pixdiff.adapters import is_adapter_run
from pixdiff.adapters import load_run as load_adapter_run
from pixdiff.checkpoint import (
    CONFIG,
    EMA,
    MODEL,
    LoadedModel,
    net_config_to_dict,
    save_tensors,
    write_json,
)
from pixdiff.checkpoint import load as load_run
from pixdiff.config import DiffusionConfig, TrainConfig, to_dict
from pixdiff.denoiser import Denoiser
from pixdiff.formats.diffusers_import import load_model
from pixdiff.guidance import GuidanceOptions
from pixdiff.images import to_pil
from pixdiff.pipelines.cascade import Stage, cascade
from pixdiff.pipelines.control import ImageInput, map_from, read_control
from pixdiff.pipelines.generate import generate
from pixdiff.pipelines.known_frames import FrameInput, KnownFrames, KnownMode, read_known
from pixdiff.pipelines.steering import ClassRequest, Steering
from pixdiff.precision import NetDtype
from pixdiff.rundir import write_marker
from pixdiff.sampling import Sampling, steps_for_nfe
from pixdiff.schedule_registry import schedule_from_dict
from pixdiff.shipped import SHIPPED_CASCADES, SHIPPED_RUNS, shipped_cascade, shipped_run
from pixdiff.tuned_grids import run_sampling

Output = Literal["pil", "tensor"]


@dataclass(frozen=True)
class Request:
    """One ``generate`` call's keywords, shared by models and cascades."""

    classes: ClassRequest = None
    prompts: str | Sequence[str] | None = None
    n: int | None = None
    steps: int | None = None
    nfe: int | None = None
    sampler: str | None = None
    grid: str | None = None
    guidance: float | None = None
    negative_class: int | str | None = None
    negative_prompt: str | None = None
    options: GuidanceOptions | None = None
    guide_with: Model | str | Path | None = None
    net_dtype: NetDtype = "fp32"
    control: ImageInput | None = None  # a control map (a file, PIL image or tensor)
    control_from: ImageInput | None = None  # a photo to compute the control map from
    control_guidance: float | None = None
    control_scale: float | None = None
    frames: int | None = None  # a video model's clip length (None: the frames it trained on)
    first_frame: FrameInput | None = None  # image-to-video (pipelines.known_frames)
    known_frames: FrameInput | None = None  # frames of the clip, at known_index
    known_index: Sequence[int] | None = None
    known_mode: KnownMode | None = None  # concat (trained with known frames) or replace
    resample: int = 1  # RePaint's resampling of known_mode="replace"
    known: KnownFrames | None = None  # the above, read for the model (with_known)

    def count(self) -> int:
        """n, else the number of classes or prompts given as a sequence, else 1."""
        if self.n is not None:
            return self.n
        for given in (self.classes, self.prompts):
            if given is not None and not isinstance(given, (str, int)):
                return len(given)
        return 1

    def steering(self) -> Steering:
        return Steering(
            classes=self.classes,
            prompts=self.prompts,
            negative_class=self.negative_class,
            negative_prompt=self.negative_prompt,
            guidance=self.guidance,
            options=self.options or GuidanceOptions(),
            guide_with=self.guide_with,
            control=self.control,
            control_guidance=self.control_guidance,
            control_scale=self.control_scale,
            known=self.known,
        )

    def with_known(self, model: LoadedModel) -> Request:
        """The request with its first frame or known frames read for ``model``."""
        known = read_known(
            model, first_frame=self.first_frame, known_frames=self.known_frames,
            known_index=self.known_index, mode=self.known_mode, resample=self.resample,
        )  # fmt: skip
        return replace(self, known=known)

    def for_model(self, model: LoadedModel) -> Request:
        """The request with its control map read for ``model`` (or computed from its photo)."""
        if self.control is not None and self.control_from is not None:
            raise ValueError("give a control map (control=) or a photo (control_from=), not both")
        if self.control_from is not None:
            return replace(self, control=map_from(model, self.control_from), control_from=None)
        if self.control is not None:
            return replace(self, control=read_control(model, self.control))
        return self

    def sampling(self, run_config: dict, run: Path | None = None) -> Sampling:
        """The sampler and steps asked for, else the run's ``sample`` settings; ``nfe`` gives
        the most steps of the sampler that fit that many network evaluations. The grid asked
        for, else the ``run`` directory's tuned grid for them where it has one
        (:func:`pixdiff.tuned_grids.run_sampling`; ``grid="tuned"`` requires it)."""
        sampler = self.sampler or run_config["train"]["sample"]["sampler"]
        if self.nfe is not None and self.steps is not None:
            raise ValueError("give steps or nfe, not both")
        steps = self.steps or run_config["train"]["sample"]["steps"]
        if self.nfe is not None:
            steps = steps_for_nfe(sampler, self.nfe)
        chosen = run_sampling(run, sampler, steps, nfe=self.nfe, grid=self.grid)[0]
        return replace(chosen, net_dtype=self.net_dtype)


def _images(x: Tensor, output: Output) -> list[Image.Image] | list[list[Image.Image]] | Tensor:
    if output == "tensor":
        return x.clamp(-1, 1)
    if output != "pil":
        raise ValueError(f"output must be 'pil' or 'tensor', got {output!r}")
    if x.dim() == 5:  # clips: a list of frames each
        return [[to_pil(frame) for frame in clip] for clip in x.clamp(-1, 1)]
    return [to_pil(img) for img in x.clamp(-1, 1)]


class Generator(ABC):
    """The one-call ``generate`` of a model or a cascade; subclasses draw a Request."""

    def generate(
        self,
        classes: ClassRequest = None,
        prompts: str | Sequence[str] | None = None,
        *,
        n: int | None = None,
        steps: int | None = None,
        nfe: int | None = None,
        sampler: str | None = None,
        grid: str | None = None,
        guidance: float | None = None,
        negative_class: int | str | None = None,
        negative_prompt: str | None = None,
        options: GuidanceOptions | None = None,
        guide_with: Model | str | Path | None = None,
        net_dtype: NetDtype = "fp32",
        control: ImageInput | None = None,
        control_from: ImageInput | None = None,
        control_guidance: float | None = None,
        control_scale: float | None = None,
        frames: int | None = None,
        first_frame: FrameInput | None = None,
        known_frames: FrameInput | None = None,
        known_index: Sequence[int] | None = None,
        known_mode: KnownMode | None = None,
        resample: int = 1,
        seed: int = 0,
        batch_size: int = 64,
        output: Output = "pil",
        progress: bool = False,
    ) -> list[Image.Image] | list[list[Image.Image]] | Tensor:
        """n images (default: one per class or prompt given as a list, else 1); image i uses
        seed + i. ``classes`` are names (case-insensitive) or ids, or "all"; ``prompts`` for a
        text-conditioned model. Sampler and steps default to the run's (every stage's own in a
        cascade); ``nfe`` picks the most steps that fit the budget. ``grid`` is a spacing or
        "tuned"; by default the run's tuned grid for that sampler and budget where it has one
        (``pixdiff tune-grid``). Guidance defaults to the run's scale where a class or prompt
        steers. ``guide_with`` (a loaded model, a shipped name or a run directory) guides by
        that weaker run instead of the unconditional branch (autoguidance, Karras et al. 2024),
        ``guidance`` being its scale. ``net_dtype`` "bf16" or "fp16" runs the network in
        that precision by autocast (the sampler's state stays float32): bf16 on GPUs from
        Ampere on (on the CPU it works but is slower on many CPUs), fp16 on older GPUs.
        ``control`` (a map file, PIL image or tensor in [-1, 1]) or ``control_from`` (a photo
        the model's kind of map is computed from) steers a control model (the base stage of a
        cascade), with the map's own guidance scale ``control_guidance`` (InstructPix2Pix's
        s_I) and a ControlNet adapter's strength ``control_scale`` (docs/concepts.md, Sec. 18).
        A video model (docs/video.md) draws clips of ``frames`` frames (default: the number it
        was trained on, also the most it makes); ``first_frame`` (an image) makes it show that
        frame first (image-to-video), ``known_frames`` (a GIF or video file, or a tensor) at
        ``known_index`` interpolates or extends them, ``known_mode`` "concat" (a run trained
        with known frames, the default) or "replace" (RePaint-style, any video run, with
        ``resample``); the given frames are pasted into the clip at the end (docs/video.md,
        Image-to-video). Returns PIL images, or with
        ``output="tensor"`` an (n, C, H, W) tensor in [-1, 1]; for a video model, a list of
        PIL frames per clip, or an (n, F, C, H, W) tensor."""
        request = Request(
            classes, prompts, n, steps, nfe, sampler, grid, guidance, negative_class,
            negative_prompt, options, guide_with, net_dtype, control, control_from,
            control_guidance, control_scale, frames, first_frame, known_frames, known_index,
            known_mode, resample,
        )  # fmt: skip
        x = self.draw(request, seed=seed, batch_size=batch_size, progress=progress)
        return _images(x, output)

    @abstractmethod
    def draw(self, request: Request, *, seed: int, batch_size: int, progress: bool) -> Tensor:
        """The request's n images, (n, C, H, W) unclipped."""


@dataclass
class Model(LoadedModel, Generator):
    """A loaded run that draws images in one call; see :func:`load`."""

    def draw(self, request: Request, *, seed: int, batch_size: int, progress: bool) -> Tensor:
        """The request's images (a video model's clips), unclipped."""
        request = request.for_model(self)
        model = self.with_frames(request.frames) if request.frames is not None else self
        request = request.with_known(model)
        if isinstance(request.guide_with, (str, Path)):  # load the guide beside the model
            guide = load(request.guide_with, device=self.device)
            if not isinstance(guide, Model):
                raise ValueError(f"guide_with={request.guide_with!r} is a cascade, not one run")
            request = replace(request, guide_with=guide)
        return generate(
            model, request.steering(), request.sampling(self.config, self.path), n=request.count(),
            seed=seed, batch_size=batch_size, device=self.device, progress=progress,
        )  # fmt: skip

    @property
    def device(self) -> torch.device:
        return next(self.net.parameters()).device

    def info(self) -> dict:
        """What the model is: kind, image shape, classes, default sampling, source."""
        kind = "unconditional"
        if self.sr is not None:
            kind = "super-resolution"
        elif self.text_encoder is not None:
            kind = "text"
        elif self.num_classes:
            kind = "class"
        sample = self.config["train"]["sample"]
        return {
            "kind": kind,
            "image_shape": list(self.image_shape),
            "classes": self.class_names if self.num_classes else None,
            "sampler": sample["sampler"],
            "steps": sample["steps"],
            "guidance": sample["guidance"],
            "prediction": self.denoiser.prediction,
            "path": str(self.path),
        }

    def save(self, directory: str | Path) -> Path:
        """Write the model as a run directory that ``pixdiff sample`` and :func:`load` read:
        config.json, its weights (as both the raw and EMA weights) and pixdiff's run marker.
        ``directory`` must not exist or be empty: nothing is overwritten."""
        directory = Path(directory)
        if directory.exists() and (not directory.is_dir() or any(directory.iterdir())):
            raise FileExistsError(f"{directory} exists and is not empty; save into a new folder")
        directory.mkdir(parents=True, exist_ok=True)
        state = self.net.state_dict()
        save_tensors(directory / MODEL, state)
        save_tensors(directory / EMA, state)
        write_json(directory / CONFIG, self.config)
        write_marker(directory)
        return directory

    @classmethod
    def from_net(
        cls,
        net: nn.Module,
        *,
        schedule: str | dict = "linear",
        prediction: str = "eps",
        sigma_data: float = 0.5,
        class_names: list[str] | None = None,
        sample: dict | None = None,
    ) -> Model:
        """A model from a pixdiff network (UNet or DiT) trained in your own code, so that it
        can be sampled, saved and loaded like a run.

        Args:
            schedule: a schedule name or its ``to_dict()`` form (e.g. ``{"kind": "cosine"}``).
            sample: the run's sampling defaults (sampler, steps, guidance).
        """
        schedule = {"kind": schedule} if isinstance(schedule, str) else dict(schedule)
        diffusion = DiffusionConfig(
            schedule=schedule, prediction=prediction, sigma_data=sigma_data,
            learn_sigma=net.config.learn_sigma,
        )  # fmt: skip
        train = to_dict(TrainConfig(diffusion=diffusion))
        train["sample"].update(sample or {})
        config = {"net": net_config_to_dict(net.config), "train": train, "class_names": class_names}
        denoiser = Denoiser(
            net, schedule_from_dict(schedule), prediction, sigma_data=sigma_data,
            learn_sigma=net.config.learn_sigma,
        )  # fmt: skip
        return cls(denoiser, net, config, class_names, Path("<in memory>"))


class CascadeModel(Generator):
    """A base model and super-resolution stages drawn in one call; see :func:`load`."""

    def __init__(self, models: Sequence[Model]):
        self.models = list(models)

    def draw(self, request: Request, *, seed: int, batch_size: int, progress: bool) -> Tensor:
        """The last stage's images, unclipped; each stage samples as the request says, or as
        its run's defaults."""
        request = request.for_model(self.models[0])  # the map goes to the base stage
        request.with_known(self.models[0])  # known frames: one line, a cascade makes images
        stages = [Stage(m, request.sampling(m.config, m.path)) for m in self.models]
        return cascade(
            stages, request.steering(), n=request.count(), seed=seed, batch_size=batch_size,
            device=self.models[0].device, progress=progress,
        )[-1]  # fmt: skip

    def info(self) -> dict:
        return {"kind": "cascade", "stages": [m.info() for m in self.models]}


def load(
    name_or_path: str | Path,
    *,
    ema: bool = True,
    device: str | torch.device = "cpu",
    allow_pickle: bool = False,
    adapter: str | Path | None = None,
) -> Model | CascadeModel:
    """A shipped model by name ("fashion", "emoji", "emoji-sr", "emoji-cascade"), a run
    directory / .safetensors checkpoint, or a diffusers folder (docs/interop.md), ready to
    ``generate``. Loading never executes code; ``allow_pickle`` lets a diffusers folder with
    only .bin weights load through torch's restricted unpickler. An adapter run (``pixdiff
    train-control``) loads with its base; ``adapter`` attaches one to the run given."""
    name, path = str(name_or_path), Path(name_or_path)
    if not path.exists() and name in SHIPPED_CASCADES:
        runs = shipped_cascade(name)
        return CascadeModel([_as_model(load_run(p, ema=ema, device=device)) for p in runs])
    if not path.exists() and name in SHIPPED_RUNS:
        path = shipped_run(name)
    if adapter is not None or is_adapter_run(path):
        return _as_model(load_adapter_run(path, ema=ema, device=device, adapter=adapter))
    return _as_model(load_model(path, ema=ema, device=device, allow_pickle=allow_pickle))


def _as_model(loaded: LoadedModel) -> Model:
    return Model(**{f.name: getattr(loaded, f.name) for f in fields(LoadedModel)})
