"""What a generation request steers towards: one object, one place that decides guidance.

A :class:`Steering` holds classes or prompts, their negatives, the classifier-free guidance
scale and the guidance options. :meth:`Steering.resolve` checks it against a model and owns
every rule of how to guide: which conditions apply, the run's default scale, that nothing to
steer by means scale 1, and every class-versus-text error. ``generate``, the cascade, the editing
commands, the trainer's sample grids, eval and the CLI build a Steering and decide nothing
themselves.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Protocol

import torch
from torch import Tensor, nn

from pixdiff.conditioning import Cond, merge
from pixdiff.guidance import GuidanceOptions, guide, label_cond
from pixdiff.nets.prompts import PromptEncoder, check_prompts
from pixdiff.pipelines.autoguide import Guidable, autoguided
from pixdiff.pipelines.classes import ClassRequest, class_ids, class_names
from pixdiff.pipelines.control import control_cond, control_denoiser, control_spec, map_guidance
from pixdiff.pipelines.known_frames import KnownFrames, known_cond


class Steerable(Protocol):
    """What :meth:`Steering.resolve` reads of a model (a loaded run is one)."""

    denoiser: nn.Module
    config: dict  # the run's config.json: train.sample.guidance is the default scale
    class_names: list[str] | None

    @property
    def num_classes(self) -> int: ...

    @property
    def text_encoder(self) -> PromptEncoder | None: ...


@dataclass(frozen=True)
class Resolved:
    """A Steering checked against a model: the Cond of the n samples, the (guided) denoiser,
    the CFG scale in force and the class ids (None without classes)."""

    cond: Cond | None
    denoiser: nn.Module
    scale: float
    labels: Tensor | None


@dataclass(frozen=True)
class Steering:
    """What to steer generation towards, and how strongly.

    Attributes:
        classes: class ids or names (case-insensitive): one for every sample, one per sample,
            or ``"all"`` to cycle through the classes; None for unconditional samples.
        prompts: for a text-conditioned model: one string for every sample or one per sample;
            None samples the empty prompt.
        negative_class: CFG's second branch uses this class instead of the null label.
        negative_prompt: CFG's second branch uses this prompt instead of the empty one.
        guidance: classifier-free guidance scale w (1 = plain conditional); None: the run's
            ``sample.guidance`` when something steers, else 1.
        options: guidance interval, CFG-rescale, thresholding, classifier guidance.
        guide_with: a weaker run of the same task to guide by instead of the unconditional
            branch (autoguidance, Karras et al. 2024; :mod:`pixdiff.pipelines.autoguide`);
            ``guidance`` is then its scale, and it needs no class or prompt.
        control: a spatial control map, (C, H, W) or (1 or n, C, H, W) in [-1, 1], for a model
            steered by one (:mod:`pixdiff.pipelines.control` reads and computes them).
        control_guidance: the map's own guidance scale s_I, composed with ``guidance`` as in
            InstructPix2Pix (Brooks et al. 2023, Eq. 3); None: the map is not guided.
        control_scale: a ControlNet adapter's strength (None: 1, as trained).
        known: a video model's known frames (first frame, interpolation, extension) and how
            to keep them (:mod:`pixdiff.pipelines.known_frames`); ``concat`` ones go in the
            Cond, ``replace`` ones to the sampling loop (:func:`generate`).
    """

    classes: ClassRequest = None
    prompts: str | Sequence[str] | None = None
    negative_class: int | str | None = None
    negative_prompt: str | None = None
    guidance: float | None = None
    options: GuidanceOptions = field(default_factory=GuidanceOptions)
    guide_with: Guidable | None = field(default=None, compare=False, repr=False)
    control: Tensor | None = field(default=None, compare=False, repr=False)
    control_guidance: float | None = None
    control_scale: float | None = None
    known: KnownFrames | None = field(default=None, compare=False, repr=False)

    def steers(self) -> bool:
        """Whether a class, prompt or negative is given for CFG to steer by or away from."""
        asked = (self.classes, self.prompts, self.negative_class, self.negative_prompt)
        return any(a is not None for a in asked)

    def resolve(self, model: Steerable, n: int) -> Resolved:
        """The Cond of n samples and the guided denoiser; a one-line ValueError for anything
        the model cannot take."""
        text = model.text_encoder is not None
        self._check_kind(model)
        scale = self._scale(model)
        if text:
            cond, uncond = prompt_cond(
                model.text_encoder, self.prompts, n, negative_prompt=self.negative_prompt
            )
            labels = None
        else:
            labels = self._labels(model, n)
            cond, uncond = self._class_cond(model, labels, n)
        trained = distilled_scales(model)
        if trained is not None:  # the scale is an input: one pass per step, no CFG
            cond, uncond = self._scale_input(cond, scale, trained, n), None
        cond, den = merge(cond, control_cond(self, model, n)), control_denoiser(self, model)
        if self.known is not None:  # in both branches of CFG, as a control map
            cond = merge(cond, known_cond(self.known, n, model.image_shape[0]))
        if self.guide_with is not None:  # the guide run takes CFG's place
            negatives = _given(("--negative-class", self.negative_class))
            den, uncond = autoguided(model, self.guide_with, scale, self.options, negatives), None
        uncond = uncond if self.steers() else None
        if self.control_guidance is not None:  # the map's own scale (Brooks et al. 2023)
            if trained is not None:
                raise ValueError("--control-guidance needs CFG's passes; this model is distilled")
            den = map_guidance(
                den, self, model, text_scale=scale, drop_text=uncond, options=self.options
            )
            uncond = None
        den = guide(
            den, scale=scale, num_classes=model.num_classes, options=self.options, uncond=uncond
        )
        return Resolved(cond, den, scale, labels)

    def for_model(self, model: Steerable, *, guidance: float | None = None) -> Steering:
        """The part of this request one stage of a cascade takes: the classes if it is
        class-conditional, the prompts if it is text-conditioned, and ``guidance`` (the stage's
        own scale) over this request's. A stage nothing steers is sampled unguided, keeping
        only thresholding."""
        text, spec = model.text_encoder is not None, control_spec(model)
        mapped = spec is not None and getattr(model, "sr", None) is None  # the base stage
        part = replace(
            self,
            classes=self.classes if model.num_classes else None,
            negative_class=self.negative_class if model.num_classes else None,
            prompts=self.prompts if text else None,
            negative_prompt=self.negative_prompt if text else None,
            guidance=self.guidance if guidance is None else guidance,
            control=self.control if mapped else None,
            control_guidance=self.control_guidance if mapped else None,
            control_scale=self.control_scale if mapped and spec.adapter else None,
        )
        if part.steers() or part.control_guidance is not None:
            return part
        return Steering(
            options=replace(self.options, interval=None, rescale=0.0), control=part.control,
            control_scale=part.control_scale,
        )  # fmt: skip

    def check_consumed(self, models: Sequence[Steerable], *, stage_guided: bool = False) -> None:
        """Raise for classes, prompts or guidance that no model of a cascade takes
        (``stage_guided``: a stage has a scale of its own other than 1)."""
        if self.guide_with is not None:
            raise ValueError("--guide-with guides one model, not the stages of a cascade")
        classes = any(m.num_classes for m in models)
        text = any(m.text_encoder is not None for m in models)
        for flag, value, ok in (
            ("--class", self.classes, classes),
            ("--negative-class", self.negative_class, classes),
            ("--prompt", self.prompts, text),
            ("--negative-prompt", self.negative_prompt, text),
        ):
            if value is not None and not ok:
                kind = "class" if "class" in flag else "text"
                raise ValueError(f"{flag} given, but no stage of the cascade is {kind}-conditional")
        mapped = [m for m in models if control_spec(m) is not None]
        for flag, value in (
            ("--control-image / --control-from", self.control),
            ("--control-guidance", self.control_guidance),
            ("--control-scale", self.control_scale),
        ):
            if value is not None and not mapped:
                raise ValueError(f"{flag} given, but no stage of the cascade takes a control map")
        if (stage_guided or self.guidance not in (None, 1.0)) and not self.steers():
            raise ValueError(
                "--guidance / --stage-guidance steer towards a condition: pass --class or --prompt"
            )

    # ------------------------------------------------------------------------- the rules

    def _scale_input(self, cond: Cond, scale: float, trained: tuple[float, float], n: int) -> Cond:
        """A guided-distilled model's Cond (Meng et al. 2023): the scale goes in as
        ``cond.guidance``, within the range it was distilled for; with nothing to steer by
        (the null label or empty prompt, whose output no scale changes) the lowest one. What
        needs CFG's second pass is refused."""
        lo, hi = trained
        needs_cfg = _given(
            ("--negative-class", self.negative_class),
            ("--negative-prompt", self.negative_prompt),
            ("--guidance-interval", self.options.interval),
            ("--cfg-rescale", self.options.rescale or None),
        )
        if needs_cfg:
            raise ValueError(
                f"{' and '.join(needs_cfg)} need(s) classifier-free guidance's second pass; "
                "this model was distilled with the guidance scale as an input (sample its "
                "teacher run for them)"
            )
        if self.steers() and not lo <= scale <= hi:
            span = f"{lo:g}" if lo == hi else f"[{lo:g}, {hi:g}]"
            raise ValueError(
                f"guidance {scale:g} is outside what this model was distilled for ({span}); "
                f"use --guidance {span if lo == hi else f'in {span}'}"
            )
        w = scale if self.steers() else lo
        return replace(cond, guidance=torch.full((n,), float(w)))

    def _check_kind(self, model: Steerable) -> None:
        """Classes for a text-conditioned model, or prompts for any other, are errors."""
        classes = _given(("--class", self.classes), ("--negative-class", self.negative_class))
        prompts = _given(("--prompt", self.prompts), ("--negative-prompt", self.negative_prompt))
        if model.text_encoder is not None and classes:
            raise ValueError(
                f"{' and '.join(classes)} given, but this model is text-conditioned: "
                "use --prompt TEXT (and --negative-prompt TEXT)"
            )
        if model.text_encoder is not None and self.options.classifier is not None:
            raise ValueError(
                "classifier guidance needs class labels; this model is text-conditioned"
            )
        if model.text_encoder is None and prompts:
            kind = "class-conditional (use --class)" if model.num_classes else "unconditional"
            raise ValueError(
                f"{' and '.join(prompts)} need(s) a text-conditioned model (trained on captioned "
                f"data); this one is {kind}"
            )

    def _scale(self, model: Steerable) -> float:
        """The CFG scale: as given, else the run's default where something steers; asking for
        guidance with nothing to steer by is an error."""
        conditional = model.num_classes or model.text_encoder is not None
        default = model.config["train"]["sample"]["guidance"]
        if self.guide_with is not None:  # autoguidance needs nothing to steer by
            return default if self.guidance is None else self.guidance
        # with the map's own scale, the interval and rescale apply to the composed guidance
        cfg_set = self.guidance not in (None, 1.0) or (
            self.options.cfg_options() and self.control_guidance is None
        )
        if not conditional and (cfg_set or self.negative_class is not None):
            _refuse_unconditional(self)
        if conditional and not self.steers() and cfg_set:
            how = (
                "--prompt TEXT or --negative-prompt TEXT"
                if model.text_encoder is not None
                else "--class NAME_OR_ID (or 'all') or --negative-class"
            )
            raise ValueError(
                "classifier-free guidance (--guidance, --guidance-interval, --cfg-rescale) "
                f"steers towards a condition: pass {how}"
            )
        if self.guidance is not None:
            return self.guidance
        return default if conditional and self.steers() else 1.0

    def _labels(self, model: Steerable, n: int) -> Tensor | None:
        """The (n,) class ids asked for, from names or ids; classes of an unconditional model
        need a classifier (which brings its own classes)."""
        if self.options.classifier is not None and self.classes is None:
            raise ValueError(
                "classifier guidance steers towards a class: give the classes (--class)"
            )
        if self.classes is None:
            return None
        names = class_names(model, self.options.classifier)
        if not names:
            raise ValueError(
                "--class given, but this model is unconditional (add --classifier DIR)"
            )
        return class_ids(self.classes, names, n)

    def _class_cond(
        self, model: Steerable, labels: Tensor | None, n: int
    ) -> tuple[Cond | None, Callable[[Cond], Cond] | None]:
        """The Cond of a class-conditional (or unconditional) model and CFG's second branch:
        the negative class, else the null label."""
        k = model.num_classes
        classifier = self.options.classifier
        if k == 0:
            return (None if labels is None else Cond(label=labels)), None
        if classifier is not None and classifier.num_classes != k:
            raise ValueError(
                f"the classifier knows {classifier.num_classes} classes, the model {k}"
            )
        other = k
        if self.negative_class is not None:
            other = class_ids(self.negative_class, class_names(model), 1, flag="--negative-class")
            other = int(other[0])
        if labels is None:  # unconditional samples from a conditional model: the null label
            labels = torch.full((n,), k, dtype=torch.long)
        return Cond(label=labels), label_cond(other)


def distilled_scales(model: Steerable) -> tuple[float, float] | None:
    """The guidance scales (lo, hi) a guided-distilled run takes as an input (its config's
    ``distilled.guidance``), else None: the scale is then CFG's."""
    scales = model.config.get("distilled", {}).get("guidance")
    return None if scales is None else (float(scales[0]), float(scales[1]))


def check_supported_steps(model: Steerable, steps: int) -> None:
    """One line when a distilled run is asked for more sampling steps than it supports (its
    config's ``distilled.max_steps``: a consistency model's multistep sampling)."""
    distilled = model.config.get("distilled", {})
    limit = distilled.get("max_steps")
    if limit is not None and steps > limit:
        raise ValueError(
            f"this {distilled['method']}-distilled model samples in 1 to {limit} steps "
            f"(--steps {limit} or fewer), got {steps}"
        )


def _given(*flags: tuple[str, object]) -> list[str]:
    """The flags whose value is set."""
    return [flag for flag, value in flags if value is not None]


def _refuse_unconditional(steering: Steering) -> None:
    """Raise for classifier-free guidance asked of an unconditional model."""
    if steering.negative_class is not None:
        raise ValueError("--negative-class needs a class-conditional model; this one is not")
    if steering.guidance not in (None, 1.0):
        raise ValueError(
            f"guidance {steering.guidance} needs a class-conditional model; this one is "
            "unconditional (use --guidance 1)"
        )
    raise ValueError(
        f"{', '.join(steering.options.cfg_options())} need(s) a class-conditional model; "
        "this one is unconditional"
    )


def prompt_cond(
    encoder: PromptEncoder,
    prompts: str | Sequence[str] | None,
    n: int,
    *,
    negative_prompt: str | None = None,
) -> tuple[Cond, Callable[[Cond], Cond]]:
    """The Cond of n prompts and CFG's second branch, for a text-conditioned model.

    The second branch is the empty prompt the model was trained on when its prompt was dropped
    (GLIDE, Nichol et al. 2021), or ``negative_prompt``. Prompts and that branch are encoded
    once, in one padded batch, so their contexts have the same length.

    Args:
        prompts: one string for every sample, n strings, or None (the empty prompt).
    """
    if prompts is None or isinstance(prompts, str):
        prompts = [prompts or ""] * n
    prompts = check_prompts(prompts)
    if len(prompts) != n:
        raise ValueError(f"need {n} prompts (or one string for all), got {len(prompts)}")
    with torch.no_grad():
        both = encoder.encode([*prompts, negative_prompt or ""])
    other = both.index(slice(n, n + 1))

    def uncond(cond: Cond) -> Cond:  # keeps fields CFG does not steer by (a low-res image)
        rows = cond.context.shape[0]
        prompt = other.map(lambda v: v.to(cond.context.device).expand(rows, *v.shape[1:]))
        return replace(cond, **{name: getattr(prompt, name) for name in prompt.present()})

    return both.index(slice(0, n)), uncond


def null_cond(model: Steerable, n: int) -> Cond | None:
    """The unconditional branch of a model: the null label of a class-conditional one, the
    empty prompt of a text-conditioned one, None for an unconditional model."""
    return Steering().resolve(model, n).cond
