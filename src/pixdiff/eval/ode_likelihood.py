"""The likelihood of the probability-flow ODE (Song et al. 2021, Sec. 4.3 and App. D.2) under
uniform dequantization, for any schedule, in bits/dim (conventions: ``likelihood.py``)."""

from __future__ import annotations

import math
from typing import Literal, NamedTuple

import torch
from torch import Tensor

from pixdiff.conditioning import Cond
from pixdiff.eval.likelihood import to_pixel_grid
from pixdiff.prediction import velocity
from pixdiff.samplers.adaptive import dopri5
from pixdiff.samplers.common import SamplingError
from pixdiff.schedules import PathCoefs
from pixdiff.vlb import pixel_levels

Estimator = Literal["rademacher", "gaussian", "exact"]


class ODEResult(NamedTuple):
    """The probability-flow ODE likelihood.

    bpd: (N,) bits/dim of each image (uniformly dequantized). mean: their mean.
    stderr: std(bpd) / sqrt(N), the error bar of ``mean`` over images (it includes the
        dequantization and Hutchinson noise); NaN for one image.
    log_prob: (N,) log p_{t_eps}(x) in nats of the dequantized images in [-1, 1] space.
    nfe: network evaluations (each also takes one backward pass; D of them for "exact").
    """

    bpd: Tensor
    mean: float
    stderr: float
    log_prob: Tensor
    nfe: int


def dequantize(images: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """Uniform dequantization x = 2 (k + u) / 256 - 1, u ~ U[0, 1)^D, of grid images (float64).

    k + u lies in the level's cell of [0, 256), as in Song et al. 2021 (App. D.2; data
    (255 y + u) / 256 for y in [0, 1]) following Theis et al. 2016 (Sec. 3.1).
    """
    k = pixel_levels(to_pixel_grid(images))
    u = torch.rand(k.shape, generator=generator, dtype=torch.float64).to(k.device)
    return 2 * (k + u) / 256 - 1


def _velocity(denoiser, x: Tensor, t: float, cond: Cond | None) -> Tensor:
    """dx/dt = alpha' x0_hat + sigma' eps_hat at scalar time t (Song et al. 2021, Eq. 13)."""
    d = denoiser(x, torch.tensor(t, dtype=torch.float64, device=x.device), cond)
    c = PathCoefs(*(v.item() for v in denoiser.schedule.coefs(t, 1)))
    return velocity(d.x0, d.eps, c).to(x.dtype)


def divergence(v: Tensor, x: Tensor, probe: Tensor | None) -> Tensor:
    """div_x v(x) per sample, (N,), for v computed from x with autograd.

    With a probe z: Hutchinson's unbiased estimate z^T (dv/dx) z (Hutchinson 1989; FFJORD,
    Grathwohl et al. 2019, Eq. 7), one vector-Jacobian product. Without: the exact trace,
    one backward pass per dimension (small D only).
    """
    if probe is not None:
        (vjp,) = torch.autograd.grad((v * probe).sum(), x)
        return (vjp * probe).flatten(1).sum(1)
    flat = v.flatten(1)
    diag = [
        torch.autograd.grad(flat[:, j].sum(), x, retain_graph=True)[0].flatten(1)[:, j]
        for j in range(flat.shape[1])
    ]
    return torch.stack(diag, 1).sum(1)


def _probe(
    estimator: Estimator, shape: torch.Size, generator: torch.Generator | None
) -> Tensor | None:
    """Hutchinson's probe z, E[z z^T] = I: Rademacher (+-1) or standard normal; None = exact."""
    if estimator == "exact":
        return None
    z = torch.randn(shape, generator=generator, dtype=torch.float64)
    if estimator == "rademacher":
        return z.sign()
    if estimator == "gaussian":
        return z
    raise ValueError(
        f"unknown divergence estimator {estimator!r}; valid: rademacher, gaussian, exact"
    )


def ode_log_prob(
    denoiser,
    x: Tensor,
    *,
    cond: Cond | None = None,
    t_eps: float | None = None,
    estimator: Estimator = "rademacher",
    rtol: float = 1e-5,
    atol: float = 1e-5,
    max_nfe: int = 2000,
    generator: torch.Generator | None = None,
) -> tuple[Tensor, int]:
    """log p_{t_eps}(x) in nats under the probability-flow ODE (Song et al. 2021, App. D.2).

    Instantaneous change of variables (Chen et al. 2018, Thm. 1): d log p_t(x_t)/dt =
    -div v(x_t, t) along dx/dt = v, so log p_eps(x) = log p_1(x_1) + int_eps^1 div v dt. The
    augmented state (x, int div v) is integrated from t_eps to 1 with adaptive Dormand-Prince
    (``samplers.adaptive.dopri5``); p_1 = N(0, prior_std^2 I) (``schedule.prior_std()``).
    The Hutchinson probe is drawn once per image and kept through the solve.

    Args:
        x: (N, ...) points (float64 recommended).
        t_eps: start time; default max(schedule.t_min, 1e-5): 1/T on discrete schedules (the
            network never saw smaller t), EDM's sigma_min, 1e-5 (Song et al.) where t_min = 0.
        estimator: rademacher | gaussian (Hutchinson) | exact (D backward passes per call).
        rtol, atol: dopri5 tolerances (Song et al. use 1e-5). max_nfe: SamplingError beyond.

    Returns:
        (log_prob (N,) float64, network evaluations).
    """
    schedule = denoiser.schedule
    t0 = max(schedule.t_min, 1e-5) if t_eps is None else t_eps
    if not 0 < t0 < schedule.t_max:
        raise ValueError(f"t_eps must lie in (0, {schedule.t_max}), got {t0}")
    probe = _probe(estimator, x.shape, generator)
    probe = probe.to(x.device, x.dtype) if probe is not None else None
    shape, nfe = x.shape, [0]

    def f(state: Tensor, t: float) -> Tensor:
        if nfe[0] >= max_nfe:
            raise SamplingError(f"ODE likelihood reached max_nfe={max_nfe} at t={t:.4g}")
        nfe[0] += 1
        t = min(max(t, t0), schedule.t_max)  # stage times may round past the interval's end
        with torch.enable_grad():
            x_t = state[:, :-1].reshape(shape).detach().requires_grad_(True)
            v = _velocity(denoiser, x_t, t, cond)
            div = divergence(v, x_t, probe)
        if not (torch.isfinite(v).all() and torch.isfinite(div).all()):
            raise SamplingError(f"ODE likelihood: the velocity is not finite at t={t:.4g}")
        return torch.cat([v.detach().flatten(1), div.detach()[:, None]], 1)

    state = torch.cat([x.flatten(1), x.new_zeros(x.shape[0], 1)], 1)
    end = dopri5(f, state, t0, schedule.t_max, rtol=rtol, atol=atol)
    x_1, delta = end[:, :-1], end[:, -1]
    std = schedule.prior_std()
    dims = x_1.shape[1]
    prior = -0.5 * dims * math.log(2 * math.pi * std**2) - x_1.pow(2).sum(1) / (2 * std**2)
    return (prior + delta).double(), nfe[0]


def ode_bpd(
    denoiser,
    images: Tensor,
    *,
    cond: Cond | None = None,
    t_eps: float | None = None,
    estimator: Estimator = "rademacher",
    rtol: float = 1e-5,
    atol: float = 1e-5,
    max_nfe: int = 2000,
    generator: torch.Generator | None = None,
) -> ODEResult:
    """Bits/dim of grid images under the probability-flow ODE model (Song et al. 2021, App. D.2).

    Derivation. The discrete model of level k in {0..255}^D is P(k) = int_cell(k) p_y(y) dy
    with y = (k + u) / 256 in [0, 1)^D, the cell of volume 256^-D. By Jensen (Theis et al.
    2016), -log P(k) <= E_u[-log p_y(y)] + D log 256. The model lives in x = 2y - 1 in [-1, 1]
    with p_y(y) = 2^D p_x(x), so -log P(k) <= E_u[-log p_x(x)] + D log 128, and

        bpd = (-log p_x(x) + D log 128) / (D ln 2) = -log p_x(x) / (D ln 2) + 7,

    Song et al.'s offset of 7 for centred data (a uniform p_x = 2^-D gives 8 bits). One u per
    image makes ``bpd`` an unbiased estimate of that upper bound.

    Args: as :func:`ode_log_prob`; images: (N, ...) in [-1, 1] on the 256-level grid;
        ``generator`` draws the dequantization noise, then the probes.
    """
    x = dequantize(images, generator).to(images.device)
    log_prob, nfe = ode_log_prob(
        denoiser,
        x,
        cond=cond,
        t_eps=t_eps,
        estimator=estimator,
        rtol=rtol,
        atol=atol,
        max_nfe=max_nfe,
        generator=generator,
    )
    dims = x[0].numel()
    bpd = (-log_prob + dims * math.log(128)) / (dims * math.log(2))
    n = bpd.shape[0]
    stderr = (bpd.std() / math.sqrt(n)).item() if n > 1 else float("nan")
    return ODEResult(bpd, bpd.mean().item(), stderr, log_prob, nfe)
