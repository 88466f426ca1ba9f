"""Likelihood in bits per dimension: the DDPM variational bound, and the grid conventions.

Conventions shared with ``ode_likelihood.py``:

- Images are float tensors in [-1, 1] on pixdiff's 256-level grid x = k / 127.5 - 1,
  k in {0, ..., 255} (``data.image_set.to_model_space``). :func:`to_pixel_grid` snaps inputs to
  that grid (float32 rounding is harmless) and raises ValueError for values outside [-1, 1].
- D = C H W values per image; bits/dim = NLL in nats / (D ln 2), one number per image.

:func:`vlb_bpd` is the discrete-time bound L = L_T + sum_{t>1} L_{t-1} + L_0 of a
DiscreteSchedule (Ho et al. 2020, Eq. 5), summed exactly over all T terms or estimated from
sampled timesteps; its terms are in ``pixdiff.vlb``. The likelihood of the probability-flow
ODE is in ``ode_likelihood.py``.
"""

from __future__ import annotations

import math
from typing import Literal, NamedTuple

import torch
from torch import Tensor

from pixdiff.conditioning import Cond
from pixdiff.discrete_schedules import DiscreteSchedule
from pixdiff.posterior import Variance
from pixdiff.schedules import q_sample
from pixdiff.vlb import pixel_levels, prior_kl, reverse_log_variance, vlb_term

Estimator = Literal["rademacher", "gaussian", "exact"]

# Values further outside [-1, 1] than this (a quarter of vlb.HALF_BUCKET) are refused, not
# snapped.
_RANGE_TOLERANCE = 1e-3


# ----------------------------------------------------------------------------- pieces


def to_pixel_grid(images: Tensor) -> Tensor:
    """Images in [-1, 1] snapped to the 256-level grid k / 127.5 - 1, as float64.

    Raises:
        ValueError: a value is not finite or lies outside [-1, 1] (e.g. images in [0, 255]).
    """
    x = images.double()
    if not bool(torch.isfinite(x).all()):
        raise ValueError("likelihood needs finite images; got NaN or inf values")
    lo, hi = x.min().item(), x.max().item()
    if lo < -1 - _RANGE_TOLERANCE or hi > 1 + _RANGE_TOLERANCE:
        raise ValueError(
            f"likelihood needs images in [-1, 1] on the 256-level grid, got values in "
            f"[{lo:.4g}, {hi:.4g}]; map uint8 pixels k to k / 127.5 - 1"
        )
    return pixel_levels(x) / 127.5 - 1


def _bits_per_dim(nats: Tensor, dims: int) -> Tensor:
    return nats / (dims * math.log(2))


# ----------------------------------------------------------------------------- the bound


class VLBResult(NamedTuple):
    """The DDPM bound in bits/dim.

    bpd: (N,) per image, = prior + decoder + kl. mean: its mean over images.
    stderr: Monte Carlo standard error of ``mean`` from the sampled (timestep, noise) pairs;
        0 when all T terms are summed, though that sum still carries the noise of its one
        draw per term (as in Ho et al.'s and iDDPM's evaluation).
    prior, decoder, kl: (N,) L_T, L_0 and sum_{t>1} L_{t-1}, each in bits/dim.
    terms: (N, T) every term in bits/dim (index 0 = the decoder) when summed exactly, else None.
    """

    bpd: Tensor
    mean: float
    stderr: float
    prior: Tensor
    decoder: Tensor
    kl: Tensor
    terms: Tensor | None


def _term_rows(
    denoiser,
    x0: Tensor,
    image: Tensor,
    index: Tensor,
    *,
    variance: Variance,
    cond: Cond | None,
    batch_size: int,
    generator: torch.Generator | None,
) -> Tensor:
    """vlb_term for the rows (image[r], index[r]), batch_size rows per network call: (R,) nats."""
    schedule: DiscreteSchedule = denoiser.schedule
    out = []
    for start in range(0, image.numel(), batch_size):
        img, idx = image[start : start + batch_size], index[start : start + batch_size]
        x0_rows = x0[img]
        noise = torch.randn(x0_rows.shape, generator=generator, dtype=torch.float64)
        t = (idx.double() + 1) / schedule.num_timesteps
        x_t = q_sample(schedule, x0_rows, t, noise.to(x0.device))
        d = denoiser(x_t, t, cond.index(img) if cond is not None else None)
        log_var = reverse_log_variance(schedule, idx, variance, d.var_output, x0.dim())
        out.append(vlb_term(schedule, x0_rows, x_t, idx, d.x0, log_var))
    return torch.cat(out)


def _sample_indices(
    proposal: Tensor | None, T: int, n: int, k: int, generator: torch.Generator | None
) -> tuple[Tensor, Tensor]:
    """(n, k) timestep indices in 1..T-1 drawn from the proposal, and their probabilities."""
    p = torch.ones(T - 1, dtype=torch.float64) if proposal is None else proposal.double().cpu()
    if proposal is not None:
        if p.shape != (T,):
            raise ValueError(f"proposal must have shape ({T},), got {tuple(proposal.shape)}")
        p = p[1:]
        if not bool((p > 0).all() & torch.isfinite(p).all()):
            raise ValueError("proposal weights must be finite and > 0 for indices 1..T-1")
    p = p / p.sum()
    idx = torch.multinomial(p, n * k, replacement=True, generator=generator).reshape(n, k)
    return idx + 1, p[idx]


def default_variance(denoiser) -> Variance:
    """The reverse variance :func:`vlb_bpd` uses when none is given: the model's own for a
    learned-variance denoiser, else small."""
    return "learned" if getattr(denoiser, "learn_sigma", False) else "small"


def vlb_bpd(
    denoiser,
    images: Tensor,
    *,
    variance: Variance | None = None,
    num_t_samples: int | None = None,
    proposal: Tensor | None = None,
    cond: Cond | None = None,
    batch_size: int = 256,
    generator: torch.Generator | None = None,
) -> VLBResult:
    """The DDPM variational bound on -log p(x0) in bits/dim (Ho et al. 2020, Eq. 5).

    L = L_T + sum_{t=2..T} L_{t-1} + L_0 (:func:`prior_kl`, :func:`vlb_term`). The prior and
    the decoder L_0 are always computed exactly. The T - 1 KL terms are summed exactly
    (N T network calls, batched over t) when ``num_t_samples`` is None; otherwise each image
    draws K timesteps i ~ p (uniform, or the given proposal) and the sum is estimated by the
    mean of L_i / p_i (importance sampling, Nichol & Dhariwal 2021, Eq. 18, with
    p proportional to sqrt(E[L_t^2]) from a pilot run: ``result.terms.pow(2).mean(0).sqrt()``).

    Args:
        denoiser: a Denoiser (or the toy ExactDenoiser) on a DiscreteSchedule.
        images: (N, ...) in [-1, 1] on the 256-level grid (see :func:`to_pixel_grid`).
        variance: the reverse variance, as the DDPM sampler chooses it: small (beta~, Ho et al.
            2020's better choice for likelihood at small t), large (beta), learned (the model's,
            Nichol & Dhariwal 2021). Default: learned if ``denoiser.learn_sigma``, else small.
        num_t_samples: K timesteps per image for the estimate; None sums all T terms.
        proposal: (T,) positive weights of the timestep proposal (entry 0, the decoder, is
            ignored); None is uniform.
        cond: per-image conditioning. batch_size: rows per network call.
        generator: for the noise of q(x_t | x0) and the sampled timesteps.
    """
    schedule = denoiser.schedule
    if not isinstance(schedule, DiscreteSchedule):
        raise ValueError(
            f"the DDPM bound needs a DiscreteSchedule, got {type(schedule).__name__}; "
            "use ode_bpd for continuous schedules"
        )
    if num_t_samples is not None and num_t_samples < 2:
        raise ValueError(f"num_t_samples must be >= 2 (for a standard error), got {num_t_samples}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    variance = variance or default_variance(denoiser)
    x0 = to_pixel_grid(images)
    dims = x0[0].numel()

    def terms_of(image: Tensor, index: Tensor) -> Tensor:  # (R,) bits/dim
        rows = _term_rows(
            denoiser,
            x0,
            image.to(x0.device),
            index.to(x0.device),
            variance=variance,
            cond=cond,
            batch_size=batch_size,
            generator=generator,
        )
        return _bits_per_dim(rows, dims)

    with torch.no_grad():
        prior = _bits_per_dim(prior_kl(schedule, x0), dims)
        if num_t_samples is None:
            decoder, kl, stderr, terms = _summed(terms_of, x0.shape[0], schedule.num_timesteps)
        else:
            decoder, kl, stderr = _estimated(
                terms_of, x0.shape[0], schedule.num_timesteps, num_t_samples, proposal, generator
            )
            terms = None
    bpd = prior + decoder + kl
    return VLBResult(bpd, bpd.mean().item(), stderr, prior, decoder, kl, terms)


def _summed(terms_of, n: int, T: int) -> tuple[Tensor, Tensor, float, Tensor]:
    """(decoder, sum of KLs, stderr 0, all terms (n, T)) from every (image, timestep) pair."""
    image = torch.arange(n).repeat_interleave(T)
    terms = terms_of(image, torch.arange(T).repeat(n)).reshape(n, T)
    return terms[:, 0], terms[:, 1:].sum(1), 0.0, terms


def _estimated(
    terms_of, n: int, T: int, k: int, proposal: Tensor | None, generator
) -> tuple[Tensor, Tensor, float]:
    """(decoder, estimated sum of KLs, stderr of the mean over images): the decoder exactly,
    the KL sum as the mean of L_i / p_i over k draws i ~ p per image (Nichol & Dhariwal 2021,
    Eq. 18); the stderr is sqrt(sum_n Var_n / k) / n from each image's sample variance."""
    index, p = _sample_indices(proposal, T, n, k, generator)
    decoder = terms_of(torch.arange(n), torch.zeros(n, dtype=torch.long))
    weighted = terms_of(torch.arange(n).repeat_interleave(k), index.flatten()).reshape(n, k)
    weighted = weighted / p.to(weighted.device)
    stderr = (weighted.var(1) / k).sum().sqrt().item() / n
    return decoder, weighted.mean(1), stderr
