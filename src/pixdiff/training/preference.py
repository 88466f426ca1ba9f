"""Diffusion-DPO (Wallace et al. 2024): preference alignment on (preferred, rejected) pairs.

With x_w preferred to x_l for the same condition c, both noised at the same t with the same
noise, Eq. 14 of the paper is

    L = -log sigmoid( -beta T w(lambda_t) [ (||e_w - e_theta(x_w_t, t)||^2
                                             - ||e_w - e_ref(x_w_t, t)||^2)
                                            - (||e_l - e_theta(x_l_t, t)||^2
                                             - ||e_l - e_ref(x_l_t, t)||^2) ] )

where e_ref is the frozen reference (the base run). As in the authors' diffusers example
(huggingface/diffusers, examples/research_projects/diffusion_dpo/train_diffusion_dpo.py:
``scale_term = -0.5 * beta_dpo``, errors averaged over pixels, ``-F.logsigmoid``), the constant
T w(lambda_t) is folded into beta and the errors are per-pixel means, so the inside is
-beta / 2 times the difference of differences. The error is measured in the network's own
prediction space (eps, v, x0 or flow velocity: the target of ``diffusion_loss``), which for an
eps model is exactly the paper's. When the model equals the reference the inside is 0 and the
loss is log 2; its gradient lowers the model's error on the preferred image and raises it on
the rejected one.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext

import torch
import torch.nn.functional as F
from torch import Tensor

from pixdiff.conditioning import Cond
from pixdiff.config import DiffusionConfig
from pixdiff.denoiser import Denoiser
from pixdiff.prediction import target_from_x0_eps
from pixdiff.schedules import q_sample
from pixdiff.training.losses import sample_time

BETA = 2500.0  # beta_dpo of the diffusers example's default (errors averaged over pixels)


def dpo_objective(
    model_w: Tensor, model_l: Tensor, ref_w: Tensor, ref_l: Tensor, *, beta: float
) -> Tensor:
    """Diffusion-DPO's loss (Wallace et al. 2024, Eq. 14) from per-sample denoising errors,
    each (N,): the model's and the reference's on the preferred (w) and rejected (l) image."""
    inside = -0.5 * beta * ((model_w - ref_w) - (model_l - ref_l))
    return -F.logsigmoid(inside).mean()


def prediction_errors(
    denoiser: Denoiser, x0: Tensor, noise: Tensor, t: Tensor, cond: Cond | None, sigma_data: float
) -> Tensor:
    """Per-sample mean squared error (N,) of ``denoiser``'s raw prediction at x_t from (x0,
    noise, t), against its own prediction type's target."""
    x_t = q_sample(denoiser.schedule, x0, t, noise)
    out = denoiser(x_t, t, cond)
    c = denoiser.coefs(t, x0)
    target = target_from_x0_eps(denoiser.prediction, x0, noise, c, sigma_data=sigma_data)
    return (out.raw - target).float().flatten(1).pow(2).mean(1)


def dpo_loss(
    model: Denoiser,
    reference: Denoiser,
    x_w: Tensor,
    x_l: Tensor,
    cond: Cond | None,
    *,
    cfg: DiffusionConfig,
    beta: float,
    generator: torch.Generator,
    reference_scope: Callable[[], AbstractContextManager] = nullcontext,
    ref_cond: Cond | None = None,
) -> tuple[Tensor, float]:
    """(loss, implicit accuracy) on a batch of pairs x_w, x_l (N, C, H, W) under ``cond``: one
    t and one noise per pair, shared by the preferred and the rejected image (as the paper's
    Eq. 14 and its example code); the reference runs without gradients, inside
    ``reference_scope()`` (where a LoRA's adapters are switched off), on ``ref_cond`` where
    the reference encodes prompts with its own encoder (default ``cond``)."""
    n = x_w.shape[0]
    t = sample_time(cfg, model.schedule, n, generator).to(x_w.device)
    noise = torch.randn(x_w.shape, generator=generator).to(x_w.device, x_w.dtype)
    x0 = torch.cat([x_w, x_l])
    both_t, both_noise = torch.cat([t, t]), torch.cat([noise, noise])
    both_cond = None if cond is None else Cond.cat([cond, cond])
    ref_cond = cond if ref_cond is None else ref_cond
    ref_both = None if ref_cond is None else Cond.cat([ref_cond, ref_cond])
    model_err = prediction_errors(model, x0, both_noise, both_t, both_cond, cfg.sigma_data)
    with torch.no_grad(), reference_scope():
        ref_err = prediction_errors(reference, x0, both_noise, both_t, ref_both, cfg.sigma_data)
    model_w, model_l = model_err.chunk(2)
    ref_w, ref_l = ref_err.chunk(2)
    loss = dpo_objective(model_w, model_l, ref_w, ref_l, beta=beta)
    accuracy = float(((model_w - ref_w) < (model_l - ref_l)).float().mean())
    return loss, accuracy


__all__ = ["BETA", "dpo_loss", "dpo_objective", "prediction_errors"]
