"""The Denoiser: a raw network + a schedule + a prediction type -> the x0 (and eps) estimate.

Samplers, guidance and losses see only this wrapper, never the network's parameterization.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import torch
from torch import Tensor, nn

from pixdiff.conditioning import Cond, without_self_cond
from pixdiff.prediction import (
    PredictionType,
    check_prediction,
    network_input_scale,
    network_time,
    x0_eps_from_output,
)
from pixdiff.schedules import PathCoefs, Schedule

Net = Callable[..., Tensor]


class Denoised(NamedTuple):
    """A denoiser's estimate at (x_t, t).

    x0, eps: (N, C, H, W) in float32 ((N, F, C, H, W) for clips) (float64 if x_t is float64).
    var_output: the extra channels of a learned-variance network (Nichol & Dhariwal 2021), or None.
    raw: the network's prediction in its own parameterization (for losses).
    """

    x0: Tensor
    eps: Tensor
    var_output: Tensor | None
    raw: Tensor


class Denoiser(nn.Module):
    """Wrap ``net(x_in, c_noise[, cond]) -> tensor`` as an x0/eps estimator on a Gaussian path.

    Args:
        net: any callable; a pixdiff network or a user's model.
        schedule: the path the network was trained on.
        prediction: eps | x0 | v | flow | score | edm (EDM preconditioning, Karras et al. 2022).
        sigma_data: data std for EDM preconditioning.
        learn_sigma: the network outputs twice the channels; the second half is its variance
            output (improved DDPM), returned as ``var_output``.
        self_condition: the network takes its previous x0 estimate ``cond.self_cond`` (Chen et
            al. 2023, Sec. 3); None reads it from ``net.config``.
        clip_x0: clip the x0 estimate to [-clip_x0, clip_x0] and keep eps as the network gave
            it, as diffusers' DDPM and DDIM schedulers do with ``clip_sample`` (Ho et al. 2020's
            code clips x0 when sampling); None (the default) leaves x0 as it is.

    For a network that is not self-conditioned a ``self_cond`` in the Cond is dropped: it is a
    hint the sampling machinery gives every denoiser of a composition
    (:mod:`pixdiff.self_conditioning`), not a condition.
    """

    def __init__(
        self,
        net: Net,
        schedule: Schedule,
        prediction: PredictionType,
        *,
        sigma_data: float = 0.5,
        learn_sigma: bool = False,
        self_condition: bool | None = None,
        clip_x0: float | None = None,
    ):
        super().__init__()
        check_prediction(prediction)
        if clip_x0 is not None and not clip_x0 > 0:
            raise ValueError(f"clip_x0 must be > 0 (or None for no clipping), got {clip_x0}")
        self.clip_x0 = clip_x0
        self.net = net
        self.schedule = schedule
        self.prediction = prediction
        self.sigma_data = sigma_data
        self.learn_sigma = learn_sigma
        if self_condition is None:  # the network's config says, where it has one
            self_condition = getattr(getattr(net, "config", None), "self_condition", False)
        self.self_condition = bool(self_condition)

    def coefs(self, t: Tensor | float, x: Tensor) -> PathCoefs:
        """Path coefficients at t, one per sample, in x's (at least float32) dtype and device."""
        t = torch.as_tensor(t, dtype=torch.float64, device=x.device)
        if t.dim() == 0:
            t = t.expand(x.shape[0])
        elif t.shape != (x.shape[0],):
            raise ValueError(f"t must be a scalar or shaped ({x.shape[0]},), got {tuple(t.shape)}")
        return PathCoefs(*(v.to(_work_dtype(x)) for v in self.schedule.coefs(t, x.dim())))

    def forward(self, x_t: Tensor, t: Tensor | float, cond: Cond | None = None) -> Denoised:
        c = self.coefs(t, x_t)
        t64 = torch.as_tensor(t, dtype=torch.float64, device=x_t.device).expand(x_t.shape[0])
        c_noise = network_time(self.prediction, c, self.schedule.timestep(t64)).float()
        x_in = x_t * network_input_scale(self.prediction, c, self.sigma_data)
        out = self._call_net(x_in, c_noise, cond).to(_work_dtype(x_t))
        var_output = None
        if self.learn_sigma:
            # the channel axis: dim 2 of (N, F, C, H, W) clips, dim 1 of images and vectors
            out, var_output = out.chunk(2, dim=2 if out.ndim == 5 else 1)
        if out.shape != x_t.shape:
            raise ValueError(
                f"network returned shape {tuple(out.shape)} for input {tuple(x_t.shape)}"
                + (
                    ""
                    if self.learn_sigma
                    else "; if it predicts a variance too, set learn_sigma=True"
                )
            )
        x0, eps = x0_eps_from_output(
            self.prediction, out, x_t.to(out.dtype), c, sigma_data=self.sigma_data
        )
        if self.clip_x0 is not None:
            x0 = x0.clamp(-self.clip_x0, self.clip_x0)
        return Denoised(x0, eps, var_output, out)

    def _call_net(self, x_in: Tensor, c_noise: Tensor, cond: Cond | None) -> Tensor:
        if cond is not None and cond.self_cond is not None and not self.self_condition:
            cond = without_self_cond(cond)
        param = next(self.net.parameters(), None) if isinstance(self.net, nn.Module) else None
        if param is not None and param.is_floating_point():
            x_in = x_in.to(param.dtype)
        if cond is None:
            return self.net(x_in, c_noise)
        return self.net(x_in, c_noise, cond)


def _work_dtype(x: Tensor) -> torch.dtype:
    return torch.float64 if x.dtype == torch.float64 else torch.float32
