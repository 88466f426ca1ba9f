"""Spatial control at sampling time (docs/concepts.md, Section 18): the map a request gives,
or computes from a photo, checked against the map the model takes; a ControlNet adapter's
strength; and the map's own guidance scale (InstructPix2Pix, Brooks et al. 2023, Eq. 3).

:class:`pixdiff.pipelines.steering.Steering` holds a request's ``control`` (a map tensor in
[-1, 1]), ``control_guidance`` (s_I) and ``control_scale`` (the adapter's strength) and calls
this module; the map goes to the network as ``cond.control``, and with no map a model that
learned the map-less case (control dropout, or any adapter) gets the null map.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps
from torch import Tensor, nn

from pixdiff.conditioning import Cond
from pixdiff.config import from_dict
from pixdiff.data import ControlConfig, compute_maps, from_model_space, to_model_space
from pixdiff.data.folder import open_image, to_mode
from pixdiff.denoiser import Denoiser
from pixdiff.guidance import ClassifierFreeGuidance, GuidanceOptions
from pixdiff.images import read_image
from pixdiff.multimodal_guidance import MultiModalGuidance
from pixdiff.nets.checks import control_channels
from pixdiff.nets.control import ControlledNet

ImageInput = Tensor | Image.Image | str | Path


@dataclass(frozen=True)
class ControlSpec:
    """The control map a model takes: its kind (and how it was trained), channels and side,
    and whether an adapter reads it (else it is concatenated to x_t)."""

    config: ControlConfig
    channels: int
    size: int
    adapter: bool

    @property
    def null_map_known(self) -> bool:
        """Whether the model knows the null map: an adapter is the base model there; a
        concatenating model learned it from control dropout."""
        return self.adapter or self.config.dropout > 0


def control_spec(model) -> ControlSpec | None:
    """What map ``model`` (a loaded run, or any :class:`Steerable`) takes; None for a model
    without control."""
    net = getattr(model, "net", None)
    net = getattr(model.denoiser, "net", None) if net is None else net
    if isinstance(net, ControlledNet):
        section = model.config["adapter"]["control"]
        channels = net.adapter.control_channels
    else:
        channels = control_channels(getattr(net, "config", None))
        if not channels:
            return None
        section = model.config["train"].get("control", {})
    config = from_dict(ControlConfig, section, f"{model.path}: control")
    return ControlSpec(config, channels, net.config.image_size, isinstance(net, ControlledNet))


def read_control(model, image: ImageInput) -> Tensor:
    """A control map for ``model`` as (1 or N, C, H, W) in [-1, 1]: a file (refused unless it
    has the model's size; a mode other than grey or RGB is converted with a warning), a PIL
    image, or a tensor already in model space."""
    spec = _spec(model, "a control map")
    if isinstance(image, Tensor):
        return image if image.dim() == 4 else image[None]
    if isinstance(image, Image.Image):
        image = to_mode(image, spec.channels)
        array = torch.from_numpy(_array(image, spec.channels))
        x = to_model_space(array)
        _check_map(x, spec)
        return x
    who = "this model's control input"
    return read_image(image, size=spec.size, channels=spec.channels, who=who)


def map_from(model, photo: ImageInput) -> Tensor:
    """The model's kind of map computed from a photo (any size: cropped and resized as the
    training images are), (1 or N, C, H, W) in [-1, 1]. A photo with transparency gives its
    mask from its alpha channel, as the emoji do."""
    spec = _spec(model, "--control-from")
    if spec.config.from_folder:
        raise ValueError(
            f"this model's maps came from the folder {spec.config.kind}, which pixdiff cannot "
            "compute from a photo: give the map itself (--control-image)"
        )
    channels = model.image_shape[0]
    if isinstance(photo, Tensor):
        images = from_model_space(photo if photo.dim() == 4 else photo[None])
        alpha = None
    else:
        picture = open_image(photo) if isinstance(photo, (str, Path)) else photo
        images, alpha = fit_photo(picture, spec.size, channels, alpha=spec.config.kind == "mask")
    maps = compute_maps(images, spec.config.kind, cells=spec.config.layout_cells, alpha=alpha)
    return to_model_space(maps)


def fit_photo(picture: Image.Image, size: int, channels: int, *, alpha: bool):
    """uint8 (1, C, size, size) of a photo fitted as the training images are (shorter side to
    ``size``, centre crop), and its (1, 1, size, size) alpha when asked for and it has one."""
    try:
        converted = to_mode(picture, channels)
    except ValueError as e:  # Pillow converts most modes, but not e.g. LAB
        raise ValueError(
            f"--control-from: a photo of mode {picture.mode} cannot be converted to "
            f"{'L' if channels == 1 else 'RGB'} ({e}); save it as an RGB PNG"
        ) from None
    images = torch.from_numpy(_array(_fit(converted, size), channels))
    if not (alpha and picture.mode in ("RGBA", "LA", "PA")):
        return images, None
    return images, torch.from_numpy(_array(_fit(picture.getchannel("A"), size), 1))


def _fit(image: Image.Image, size: int) -> Image.Image:
    return ImageOps.fit(image, (size, size), method=Image.Resampling.LANCZOS)


def _array(image: Image.Image, channels: int) -> np.ndarray:
    """A PIL image as uint8 (1, channels, H, W)."""
    array = np.asarray(image).reshape(image.height, image.width, channels)
    return array.transpose(2, 0, 1)[None].copy()


def _spec(model, what: str) -> ControlSpec:
    spec = control_spec(model)
    if spec is None:
        raise ValueError(
            f"{what} given, but this model takes no control map (train one with `pixdiff "
            "train --control KIND`, or attach a ControlNet adapter: `pixdiff train-control`)"
        )
    return spec


def _check_map(x: Tensor, spec: ControlSpec) -> None:
    expected = (spec.channels, spec.size, spec.size)
    if x.dim() != 4 or tuple(x.shape[1:]) != expected:
        raise ValueError(
            f"this model's control maps are {spec.size}x{spec.size} with {spec.channels} "
            f"channel(s) ({spec.config.kind}), got a map of shape {tuple(x.shape)}"
        )


# ----------------------------------------------------------------------------- a request


def control_cond(steering, model, n: int) -> Cond | None:
    """``cond.control`` of n samples: the request's map (1 row or n), else the null map (zeros)
    for a model that knows it; None for a model without control."""
    spec = control_spec(model)
    if spec is None:
        if steering.control is not None:
            _spec(model, "a control map (--control-image / --control-from)")
        return None
    if steering.control is None:
        if not spec.null_map_known:
            raise ValueError(
                f"this model is steered by a control map ({spec.config.kind}) and was trained "
                "without control dropout: give --control-image MAP or --control-from IMAGE"
            )
        return Cond(control=torch.zeros(n, spec.channels, spec.size, spec.size))
    x = steering.control.float()
    _check_map(x, spec)
    if x.shape[0] not in (1, n):
        raise ValueError(f"need 1 control map or {n} (one per image), got {x.shape[0]}")
    return Cond(control=x.expand(n, -1, -1, -1).contiguous())


def control_denoiser(steering, model) -> nn.Module:
    """The model's denoiser, its ControlNet adapter at the request's strength
    (``control_scale``, the adapter's outputs times s; default 1)."""
    spec, scale = control_spec(model), steering.control_scale
    if scale is None:
        return model.denoiser
    if spec is None or not spec.adapter:
        raise ValueError(
            "--control-scale is the strength of a ControlNet adapter (pixdiff train-control); "
            "this model " + ("has none" if spec is None else "concatenates its map: use "
            "--control-guidance to strengthen it")
        )  # fmt: skip
    d = model.denoiser
    return Denoiser(
        d.net.at_scale(scale), d.schedule, d.prediction, sigma_data=d.sigma_data,
        learn_sigma=d.learn_sigma, self_condition=d.self_condition,
    )  # fmt: skip


def map_guidance(
    den: nn.Module,
    steering,
    model,
    *,
    text_scale: float,
    drop_text: Callable[[Cond], Cond] | None,
    options: GuidanceOptions,
) -> nn.Module:
    """``den`` guided by the map with its own scale s_I (``control_guidance``) and by the text
    or class with ``text_scale`` (Brooks et al. 2023, Eq. 3); with nothing else to steer by,
    classifier-free guidance of the map alone."""
    s_i, spec = steering.control_guidance, control_spec(model)
    if spec is None:
        _spec(model, "--control-guidance")
    if not spec.null_map_known:
        raise ValueError(
            "--control-guidance compares against the null map, which this model never saw: it "
            "was trained without control dropout (control.dropout=0); retrain it with --set "
            "control.dropout=0.1, or sample without --control-guidance"
        )
    if steering.control is None:
        raise ValueError("--control-guidance steers towards a map: give --control-image MAP")
    if steering.guide_with is not None:
        raise ValueError("--control-guidance and --guide-with cannot be combined")
    if drop_text is None:
        return ClassifierFreeGuidance(
            den, scale=s_i, uncond=null_map, interval=options.interval, rescale=options.rescale
        )
    return MultiModalGuidance(
        den, map_scale=s_i, text_scale=text_scale, drop_map=null_map, drop_text=drop_text,
        interval=options.interval, rescale=options.rescale,
    )  # fmt: skip


def null_map(cond: Cond) -> Cond:
    """``cond`` with its map dropped: the null map (zeros), other fields kept."""
    return replace(cond, control=torch.zeros_like(cond.control))
