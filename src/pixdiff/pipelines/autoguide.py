"""``--guide-with RUN``: autoguidance of a model by a weaker run (Karras et al. 2024), checked.

The guide must denoise the same images the same way: the same image shape, the same noise
schedule (its x_t at time t is the main model's), and the same conditioning (the same Cond
feeds both). :func:`check_guide` names the first difference in one line; :func:`autoguided`
builds the guided denoiser (:class:`pixdiff.autoguidance.Autoguidance`) that
:meth:`pixdiff.pipelines.steering.Steering.resolve` stacks the other guidance options on.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from torch import nn

from pixdiff.autoguidance import Autoguidance
from pixdiff.guidance import GuidanceOptions
from pixdiff.nets.prompts import PromptEncoder


class Guidable(Protocol):
    """What autoguidance reads of the main model and of its guide (a loaded run is one)."""

    denoiser: nn.Module
    config: dict
    class_names: list[str] | None

    @property
    def num_classes(self) -> int: ...

    @property
    def text_encoder(self) -> PromptEncoder | None: ...

    @property
    def image_shape(self) -> tuple[int, int, int]: ...


def conditioning(model: Guidable) -> str:
    """What a model is conditioned on, in words."""
    if model.text_encoder is not None:
        return "text-conditioned"
    low_res = model.config["train"].get("sr", {}).get("low_res_size", 0)
    if low_res:
        return f"super-resolution from {low_res}x{low_res}"
    if model.num_classes:
        return f"class-conditional ({model.num_classes} classes)"
    return "unconditional"


def check_guide(model: Guidable, guide: Guidable) -> None:
    """Raise one ValueError naming the first way ``guide`` cannot guide ``model``: image
    shape, schedule, conditioning (kind, classes), or a kind of model autoguidance does not
    take (text-conditioned: each run encodes prompts with its own encoder; distilled)."""
    name = f"--guide-with {getattr(guide, 'path', 'model')}"
    for what, mine, its in (
        ("image shape", model.image_shape, guide.image_shape),
        ("schedule", model.denoiser.schedule, guide.denoiser.schedule),
        ("conditioning", conditioning(model), conditioning(guide)),
        ("classes", model.class_names, guide.class_names),
    ):
        if mine != its:
            if what == "schedule":  # as the runs' configs write it
                mine, its = _schedule(model), _schedule(guide)
            raise ValueError(f"{name}: its {what} {its} does not match the model's {mine}")
    if model.text_encoder is not None:
        raise ValueError(
            f"{name}: autoguidance of text-conditioned models is not supported (each run "
            "encodes prompts with its own encoder); use --guidance (classifier-free guidance)"
        )
    for run in (model, guide):
        if "distilled" in run.config:
            raise ValueError(f"{name}: a distilled model cannot take part in autoguidance")
    devices = {p.device for m in (model, guide) for p in m.denoiser.parameters()}
    if len(devices) > 1:
        raise ValueError(f"{name}: the guide and the model are on different devices {devices}")


def _schedule(model: Guidable) -> dict:
    return model.config["train"]["diffusion"]["schedule"]


def autoguided(
    model: Guidable,
    guide: Guidable,
    scale: float,
    options: GuidanceOptions,
    negatives: Sequence[str] = (),
) -> Autoguidance:
    """``model``'s denoiser guided by ``guide``'s with scale w, in the guidance interval and
    with the CFG-rescale of ``options``, checked by :func:`check_guide`; ``negatives``: the
    flags given that set classifier-free guidance's second branch, which the guide replaces."""
    if negatives:
        raise ValueError(
            f"{' and '.join(negatives)} set(s) classifier-free guidance's second branch, which "
            "--guide-with replaces by the guide run: give one or the other"
        )
    check_guide(model, guide)
    return Autoguidance(
        model.denoiser, guide.denoiser, scale=scale, interval=options.interval,
        rescale=options.rescale,
    )  # fmt: skip
