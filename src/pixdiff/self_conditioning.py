"""Self-conditioning at sampling time: the network's previous x0 estimate of the same samples
goes back in as an input (Chen, Zhang & Hinton 2023, "Analog Bits", Sec. 3, Alg. 2).

Where the estimate lives, and why there:

- It belongs to one sampling run of one batch, not to the model. :class:`SelfConditioning` is
  a wrapper made fresh for every run by :class:`pixdiff.sampling.Sampling` (and once per image
  batch by inpainting, whose steps are separate runs); the model's :class:`Denoiser` stays
  stateless. Concurrent requests, the batches of one ``generate`` call and repeated calls
  therefore never see each other's estimates, and samplers do not know it is there.
- It wraps the whole guided denoiser, so the estimate it carries is the one the sampler steps
  with (the guided x0, after thresholding). It travels as ``cond.self_cond``, so classifier-free
  guidance's two branches (``Cond.cat`` of the rows) and autoguidance's two models all get the
  estimate of their own rows; a denoiser whose network does not take it drops it.
- The first call has none: the network sees zeros, as Alg. 2 starts from x_pred = 0.
- The wrapper assumes its calls are the successive evaluations of its N samples (every
  sampler's, multi-stage steps included: a stage sees the previous stage's estimate). Picard
  iteration evaluates many steps at once, so :func:`pixdiff.samplers.picard.sample_picard`
  carries the estimate itself, as part of each window state, with :func:`with_estimate`.
"""

from __future__ import annotations

from dataclasses import replace

from torch import Tensor, nn

from pixdiff.conditioning import Cond
from pixdiff.denoiser import Denoised
from pixdiff.guidance import DenoiserWrapper


def takes_estimate(denoiser) -> bool:
    """Whether ``denoiser`` (or a denoiser it wraps) is self-conditioned."""
    return bool(getattr(denoiser, "self_condition", False))


def with_estimate(cond: Cond | None, x0: Tensor) -> Cond:
    """``cond`` with the previous x0 estimate ``x0`` (N, C, H, W) as ``self_cond``."""
    return replace(cond or Cond(), self_cond=x0)


class SelfConditioning(DenoiserWrapper):
    """Feed every call the x0 estimate of the call before (Chen et al. 2023, Alg. 2); the
    first gets none (zeros). One instance per sampling run: see the module docstring.

    Attributes:
        previous: the last estimate (N, C, H, W), or None before the first call.
    """

    def __init__(self, denoiser: nn.Module):
        super().__init__(denoiser)
        self.previous: Tensor | None = None

    def forward(self, x_t: Tensor, t: Tensor | float, cond: Cond | None = None) -> Denoised:
        if self.previous is not None and self.previous.shape != x_t.shape:
            raise ValueError(
                f"a self-conditioned sampling run of shape {tuple(self.previous.shape)} was "
                f"called with shape {tuple(x_t.shape)}; use one run per batch"
            )
        given = cond if self.previous is None else with_estimate(cond, self.previous)
        out = self.denoiser(x_t, t, given)
        self.previous = out.x0.detach()
        return out


def self_conditioned(denoiser: nn.Module) -> nn.Module:
    """A fresh :class:`SelfConditioning` around ``denoiser`` when it takes the estimate; else
    (or when it already is one, whose run goes on) ``denoiser`` itself."""
    if isinstance(denoiser, SelfConditioning) or not takes_estimate(denoiser):
        return denoiser
    return SelfConditioning(denoiser)
