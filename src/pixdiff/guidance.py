"""Guidance: wrappers that take a denoiser and return a denoiser.

Each wrapper keeps the denoiser contract ((x_t, t, cond) -> Denoised, with ``.schedule`` and
``.coefs``), so every sampler drives a guided model and wrappers stack; :func:`guide` stacks
them in the order classifier-free guidance -> classifier guidance -> thresholding.

- Classifier-free guidance (Ho & Salimans 2022, Eq. 6) from ONE batched pass for both
  branches: x0 = x0_u + w (x0_c - x0_u), and eps mixed with the same weights. w = 1 is the
  conditional model, w = 0 the unconditional one; the paper's (1 + gamma) eps_c - gamma eps_u
  is w = 1 + gamma. The second branch is the null label (unconditional) or a negative condition.
  Since eps = (x_t - alpha x0) / sigma is affine in x0 and both branches share x_t, mixing x0
  and eps with weights (1 - w, w) keeps x_t = alpha x0 + sigma eps, and keeps w = 0 and w = 1
  exact in both.
- Guidance interval (Kynkaanniemi et al. 2024): guide only for t in [t_lo, t_hi].
- CFG-rescale (Lin et al. 2023, Sec. 3.4), applied to the guided x0 (eps follows from it).
- Static clipping and dynamic thresholding of x0 (Saharia et al. 2022, Sec. 2.3).
- Classifier guidance (Dhariwal & Nichol 2021, Eq. 14 and Alg. 2) with a noise-conditional
  classifier ``(x_t, t) -> logits``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Literal, Protocol, get_args

import torch
from torch import Tensor, nn

from pixdiff.conditioning import Cond
from pixdiff.denoiser import Denoised
from pixdiff.prediction import eps_from_x0, x0_eps_from_output
from pixdiff.schedules import Schedule

Threshold = Literal["none", "static", "dynamic"]
THRESHOLDS: tuple[str, ...] = get_args(Threshold)
# Saharia et al. 2022 (Sec. 2.3) use 0.995; on flat backgrounds that greys them (docs/concepts.md)
DEFAULT_PERCENTILE = 0.9


class Classifier(Protocol):
    """A noise-conditional classifier: ``(x_t, t) -> logits (N, K)`` on its own ``schedule``
    (t: (N,) float64 in [0, 1]); ``num_classes`` is K."""

    schedule: Schedule
    num_classes: int

    def __call__(self, x_t: Tensor, t: Tensor) -> Tensor: ...


class DenoiserWrapper(nn.Module):
    """Base of the wrappers: holds ``denoiser`` and exposes its schedule and coefficients."""

    def __init__(self, denoiser: nn.Module):
        super().__init__()
        self.denoiser = denoiser

    @property
    def schedule(self) -> Schedule:
        return self.denoiser.schedule

    def coefs(self, t, x):
        return self.denoiser.coefs(t, x)

    @property
    def self_condition(self) -> bool:
        """Whether the denoiser below takes its previous x0 estimate (``cond.self_cond``)."""
        return bool(getattr(self.denoiser, "self_condition", False))


def label_cond(label: int) -> Callable[[Cond], Cond]:
    """Map a class condition to the same batch with every label set to ``label``: the null
    label ``num_classes`` (unconditional) or a negative class to steer away from. Other fields
    (a super-resolution model's low-res image) are kept: they are not what CFG steers by."""

    def other(cond: Cond) -> Cond:
        return replace(cond, label=torch.full_like(cond.label, label))

    return other


def null_label_cond(num_classes: int) -> Callable[[Cond], Cond]:
    """Map a class condition to the unconditional one (the null label ``num_classes``)."""
    return label_cond(num_classes)


def cfg_mix(other: Tensor, cond: Tensor, scale: float) -> Tensor:
    """other + w (cond - other) (Ho & Salimans 2022, Eq. 6 with w = 1 + their w)."""
    return other + scale * (cond - other)


def cfg_rescale(guided: Tensor, cond: Tensor, phi: float) -> Tensor:
    """CFG-rescale (Lin et al. 2023, Sec. 3.4): x_r = x_cfg std(x_pos) / std(x_cfg) per sample,
    then phi x_r + (1 - phi) x_cfg. ``guided``, ``cond``: (N, ...).

    pixdiff applies it to the x0 prediction (eps is then recomputed from it); diffusers'
    ``guidance_rescale`` applies it to the raw eps / v output, so the two differ slightly."""
    dims = tuple(range(1, guided.dim()))
    ratio = cond.std(dim=dims, keepdim=True) / guided.std(dim=dims, keepdim=True).clamp_min(1e-12)
    return phi * (guided * ratio) + (1 - phi) * guided


def check_interval(interval: tuple[float, float] | None) -> None:
    if interval is None:
        return
    lo, hi = interval
    if not 0 <= lo <= hi <= 1:
        raise ValueError(f"guidance interval needs 0 <= lo <= hi <= 1 (times t), got {lo} {hi}")


def check_rescale(phi: float) -> None:
    if not 0 <= phi <= 1:
        raise ValueError(f"CFG-rescale phi must lie in [0, 1] (Lin et al. use 0.7), got {phi}")


def check_percentile(p: float) -> None:
    if not 0 < p <= 1:
        raise ValueError(
            f"threshold percentile must lie in (0, 1], e.g. {DEFAULT_PERCENTILE}; got {p}"
        )


def per_sample_t(t: Tensor | float, x: Tensor) -> Tensor:
    return torch.as_tensor(t, dtype=torch.float64, device=x.device).expand(x.shape[0])


def interval_rows(t: Tensor, interval: tuple[float, float] | None) -> Tensor:
    """Indices of the samples whose times t (N,) lie in ``interval`` (all when None)."""
    if interval is None:
        return torch.arange(t.shape[0], device=t.device)
    return ((t >= interval[0]) & (t <= interval[1])).nonzero().squeeze(1)


def guided_rows(
    x_t: Tensor, t: Tensor, rows: Tensor, main: Denoised, other: Denoised, *, scale: float,
    rescale: float, coefs,
) -> Denoised:  # fmt: skip
    """``main`` (N rows) with its rows ``rows`` guided by ``other`` (their second branch):
    x0 = x0_other + w (x0_main - x0_other), eps likewise (Ho & Salimans 2022, Eq. 6; Karras et
    al. 2024, Sec. 3), then CFG-rescaled if ``rescale`` > 0 (Lin et al. 2023); ``var_output``
    and ``raw`` stay main's. t: (N,) per-sample times; coefs: the denoiser's ``coefs``."""
    x0 = cfg_mix(other.x0, main.x0[rows], scale)
    eps = cfg_mix(other.eps, main.eps[rows], scale)
    if rescale:
        x0 = cfg_rescale(x0, main.x0[rows], rescale)
        eps = eps_from_x0(x_t[rows].to(x0.dtype), x0, coefs(t[rows], x_t[rows]))
    return Denoised(
        main.x0.index_copy(0, rows, x0), main.eps.index_copy(0, rows, eps), main.var_output,
        main.raw,
    )  # fmt: skip


class ClassifierFreeGuidance(DenoiserWrapper):
    """Classifier-free guidance of ``denoiser`` with scale w (Ho & Salimans 2022, Eq. 6).

    Args:
        denoiser: (x_t, t, cond) -> Denoised, with ``.schedule`` and ``.coefs``.
        scale: w; 1 returns the conditional estimate unchanged (no extra pass).
        uncond: builds the second branch's Cond from the conditional one: the null label
            (:func:`null_label_cond`), a negative condition (:func:`label_cond`), or the
            encoded empty or negative prompt
            (:func:`pixdiff.pipelines.steering.prompt_cond`).
        interval: (t_lo, t_hi): guide only there (Kynkaanniemi et al. 2024, who state it in
            sigma); elsewhere return the conditional estimate without the second pass.
        rescale: CFG-rescale phi in [0, 1] (Lin et al. 2023, Sec. 3.4); 0 is off.

    The returned ``var_output`` and ``raw`` are the conditional branch's (as in DiT).
    """

    def __init__(
        self,
        denoiser: nn.Module,
        *,
        scale: float,
        uncond: Callable[[Cond], Cond],
        interval: tuple[float, float] | None = None,
        rescale: float = 0.0,
    ):
        super().__init__(denoiser)
        check_interval(interval)
        check_rescale(rescale)
        self.scale, self.uncond, self.interval, self.rescale = scale, uncond, interval, rescale

    def forward(self, x_t: Tensor, t: Tensor | float, cond: Cond | None = None) -> Denoised:
        if cond is None:
            raise ValueError("classifier-free guidance needs a condition (a class or a prompt)")
        if self.scale == 1:
            return self.denoiser(x_t, t, cond)
        t_n = per_sample_t(t, x_t)
        rows = interval_rows(t_n, self.interval)
        if rows.numel() == 0:
            return self.denoiser(x_t, t, cond)
        n = x_t.shape[0]
        both = self.denoiser(
            torch.cat([x_t, x_t[rows]]),
            torch.cat([t_n, t_n[rows]]),
            Cond.cat([cond, self.uncond(cond.index(rows))]),
        )
        main = Denoised(*(None if v is None else v[:n] for v in both))
        other = Denoised(*(None if v is None else v[n:] for v in both))
        return guided_rows(
            x_t, t_n, rows, main, other, scale=self.scale, rescale=self.rescale, coefs=self.coefs
        )


# ----------------------------------------------------------------------------- thresholding


def static_threshold(x0: Tensor) -> Tensor:
    """Clip x0 to [-1, 1] (Saharia et al. 2022, Sec. 2.3, static thresholding)."""
    return x0.clamp(-1, 1)


def dynamic_threshold(x0: Tensor, percentile: float = DEFAULT_PERCENTILE) -> Tensor:
    """Dynamic thresholding (Saharia et al. 2022, Sec. 2.3): s = max(p-th percentile of |x0|
    per sample, 1); clip x0 to [-s, s] and divide by s. x0: (N, ...)."""
    check_percentile(percentile)
    flat = x0.abs().flatten(1)  # (N, D)
    chunks = flat.split(max(1, 2**24 // flat.shape[1]))  # torch.quantile takes < 2^24 values
    s = torch.cat([torch.quantile(c, percentile, dim=1) for c in chunks]).clamp_min(1)
    s = s.reshape(-1, *(1,) * (x0.dim() - 1))
    return torch.minimum(torch.maximum(x0, -s), s) / s


class Thresholding(DenoiserWrapper):
    """Threshold the predicted x0 and recompute eps = (x_t - alpha x0) / sigma from it, so every
    sampler (whether it steps with x0, eps or both) uses the thresholded estimate.

    Args:
        method: static (clip to [-1, 1]) or dynamic (Saharia et al. 2022, Sec. 2.3).
        percentile: p of the dynamic threshold, in (0, 1].
    """

    def __init__(
        self,
        denoiser: nn.Module,
        *,
        method: Literal["static", "dynamic"],
        percentile: float = DEFAULT_PERCENTILE,
    ):
        super().__init__(denoiser)
        if method not in ("static", "dynamic"):
            raise ValueError(f"unknown thresholding {method!r}; valid: ['static', 'dynamic']")
        check_percentile(percentile)
        self.method, self.percentile = method, percentile

    def forward(self, x_t: Tensor, t: Tensor | float, cond: Cond | None = None) -> Denoised:
        d = self.denoiser(x_t, t, cond)
        if self.method == "static":
            x0 = static_threshold(d.x0)
        else:
            x0 = dynamic_threshold(d.x0, self.percentile)
        eps = eps_from_x0(x_t.to(x0.dtype), x0, self.coefs(t, x_t))
        return Denoised(x0, eps, d.var_output, d.raw)


# ----------------------------------------------------------------------------- classifier


def to_classifier_path(target: Schedule, source: Schedule, x_t: Tensor, t: Tensor):
    """Move (x_t, t) of ``source`` to the point of ``target`` with the same log-SNR: x_t / alpha
    = x0 + (sigma / alpha) eps depends on the path only through the log-SNR (Kingma et al.
    2021, Sec. 4; Karras et al. 2022, Eq. 4). Returns (x_t', t'), t' (N,) float64."""
    if target == source:
        return x_t, t
    t_c = target.t_from_log_snr(source.log_snr(t)).clamp(0, 1)
    a_c = target.coefs(t_c, x_t.dim()).alpha
    a = source.coefs(t, x_t.dim()).alpha
    return x_t * (a_c / a).to(x_t.dtype), t_c


def class_log_prob_grad(
    classifier: Classifier, schedule: Schedule, x_t: Tensor, t: Tensor, label: Tensor
) -> Tensor:
    """grad_x log p(y | x_t) of ``classifier`` at the denoiser's (x_t, t), (N, ...)."""
    with torch.enable_grad():
        x = x_t.detach().requires_grad_(True)
        x_c, t_c = to_classifier_path(classifier.schedule, schedule, x, t)
        log_p = classifier(x_c, t_c).float().log_softmax(dim=1)  # (N, K)
        picked = log_p.gather(1, label.to(log_p.device)[:, None]).sum()
        (grad,) = torch.autograd.grad(picked, x)
    return grad


def without_label(cond: Cond) -> Cond | None:
    """``cond`` minus its label (None when nothing else is set)."""
    rest = replace(cond, label=None)
    return rest if rest.present() else None


class ClassifierGuidance(DenoiserWrapper):
    """Classifier guidance (Dhariwal & Nichol 2021, Eq. 14 and Alg. 2) on any path:
    eps' = eps - s sigma(t) grad_x log p(y | x_t), with sigma(t) for their sqrt(1 - alpha_bar);
    x0' = (x_t - sigma eps') / alpha. With s = 1 and an exact classifier this is the exact
    conditional denoiser (Bayes' rule on the scores).

    Args:
        classifier: ``(x_t, t) -> logits`` on its own ``.schedule`` (see :class:`Classifier`);
            inputs are moved to that path at equal log-SNR.
        scale: s.
        model_cond: pass ``cond`` to the denoiser; False for an unconditional model (the label
            is then only the classifier's target).

    ``cond.label`` gives the target class of each sample.
    """

    def __init__(
        self,
        denoiser: nn.Module,
        classifier: Classifier,
        *,
        scale: float,
        model_cond: bool = True,
    ):
        super().__init__(denoiser)
        self.classifier, self.scale, self.model_cond = classifier, scale, model_cond

    def forward(self, x_t: Tensor, t: Tensor | float, cond: Cond | None = None) -> Denoised:
        if cond is None or cond.label is None:
            raise ValueError("classifier guidance needs target classes (cond.label)")
        d = self.denoiser(x_t, t, cond if self.model_cond else without_label(cond))
        t_n = per_sample_t(t, x_t)
        # at zero SNR (alpha = 0) x_t carries nothing of the class: grad log p(y | x_t) = 0
        live = (self.schedule.alpha(t_n) > 0).nonzero().flatten()
        if live.numel() == 0 or self.scale == 0:
            return d
        x_l, t_l = x_t[live], t_n[live]
        grad = class_log_prob_grad(self.classifier, self.schedule, x_l, t_l, cond.label[live])
        c = self.coefs(t_l, x_l)
        eps = d.eps[live] - self.scale * c.sigma * grad.to(d.eps.dtype)
        x0, eps = x0_eps_from_output("eps", eps, x_l.to(eps.dtype), c)
        return Denoised(
            d.x0.index_copy(0, live, x0), d.eps.index_copy(0, live, eps), d.var_output, d.raw
        )


# ----------------------------------------------------------------------------- all together


@dataclass(frozen=True)
class GuidanceOptions:
    """Guidance beyond the CFG scale; validated on construction.

    Attributes:
        interval: (t_lo, t_hi) where CFG applies (Kynkaanniemi et al. 2024).
        rescale: CFG-rescale phi in [0, 1] (Lin et al. 2023).
        threshold: none | static | dynamic (Saharia et al. 2022).
        percentile: the dynamic threshold's p in (0, 1].
        classifier: a noise-conditional classifier for classifier guidance, or None.
        classifier_scale: its scale s (Dhariwal & Nichol 2021).
    """

    interval: tuple[float, float] | None = None
    rescale: float = 0.0
    threshold: Threshold = "none"
    percentile: float = DEFAULT_PERCENTILE
    classifier: Classifier | None = field(default=None, compare=False)
    classifier_scale: float = 1.0

    def __post_init__(self):
        check_interval(self.interval)
        check_rescale(self.rescale)
        check_percentile(self.percentile)
        if self.threshold not in THRESHOLDS:
            raise ValueError(f"unknown threshold {self.threshold!r}; valid: {list(THRESHOLDS)}")

    def cfg_options(self) -> list[str]:
        """Names of the set options that only classifier-free guidance uses."""
        set_ = {
            "guidance interval": self.interval is not None,
            "CFG-rescale": self.rescale != 0,
        }
        return [name for name, on in set_.items() if on]


def guide(
    denoiser: nn.Module,
    *,
    scale: float,
    num_classes: int,
    options: GuidanceOptions,
    uncond: Callable[[Cond], Cond] | None = None,
) -> nn.Module:
    """Stack the wrappers ``options`` asks for: CFG (when there is a second branch ``uncond``
    and scale != 1), classifier guidance, thresholding. ``num_classes`` is the model's (0:
    unconditional). The second branch (the null label, a negative class, the empty or a
    negative prompt) is built by :class:`pixdiff.pipelines.steering.Steering`."""
    den = denoiser
    if uncond is not None and scale != 1:
        den = ClassifierFreeGuidance(
            den, scale=scale, uncond=uncond, interval=options.interval, rescale=options.rescale
        )
    if options.classifier is not None:
        den = ClassifierGuidance(
            den, options.classifier, scale=options.classifier_scale, model_cond=num_classes > 0
        )
    if options.threshold != "none":
        den = Thresholding(den, method=options.threshold, percentile=options.percentile)
    return den
