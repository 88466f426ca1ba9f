"""Likelihood in bits per dimension: the DDPM variational bound, and the grid conventions.

Conventions shared with ``ode_likelihood.py``:

- Images are float tensors in [-1, 1] on pixdiff's 256-level grid x = k / 127.5 - 1,
  k in {0, ..., 255} (``data.dataset.to_model_space``). :func:`to_pixel_grid` snaps inputs to
  that grid (float32 rounding is harmless) and raises ValueError for values outside [-1, 1].
- D = C H W values per image; bits/dim = NLL in nats / (D ln 2), one number per image.

:func:`vlb_bpd` is the discrete-time bound L = L_T + sum_{t>1} L_{t-1} + L_0 of a
DiscreteSchedule (Ho et al. 2020, Eq. 5), summed exactly over all T terms or estimated from
sampled timesteps. The likelihood of the probability-flow ODE is in ``ode_likelihood.py``.
"""

from __future__ import annotations

import math
from typing import Literal, NamedTuple

import torch
from torch import Tensor

from pixdiff.conditioning import Cond
from pixdiff.samplers.ddpm import Variance, learned_log_variance, posterior
from pixdiff.schedules import DiscreteSchedule, PathCoefs, Schedule, q_sample

Estimator = Literal["rademacher", "gaussian", "exact"]

# Bucket half-width of the 256-level grid on [-1, 1] (Ho et al. 2020, Eq. 13: delta = 1/255).
HALF_BUCKET = 1 / 255
# improved-diffusion floors bucket probabilities at 1e-12, so one absurd pixel cannot dominate
# the loss and its gradient stays finite; we keep the floor (27.6 nats per value).
LOG_PROB_FLOOR = math.log(1e-12)
# Values further outside [-1, 1] than this (a quarter of HALF_BUCKET) are refused, not snapped.
_RANGE_TOLERANCE = 1e-3


# ----------------------------------------------------------------------------- pieces


def normal_kl(mean1: Tensor, logvar1: Tensor, mean2: Tensor, logvar2: Tensor) -> Tensor:
    """KL(N(mean1, e^logvar1) || N(mean2, e^logvar2)) per element in nats, broadcasting.

    The closed form every term of the DDPM bound uses (Ho et al. 2020, Sec. 3, below Eq. 5):
    (logvar2 - logvar1 - 1 + e^(logvar1 - logvar2) + (mean1 - mean2)^2 e^-logvar2) / 2.
    """
    return 0.5 * (
        logvar2
        - logvar1
        - 1.0
        + torch.exp(logvar1 - logvar2)
        + (mean1 - mean2) ** 2 * torch.exp(-logvar2)
    )


def pixel_levels(x: Tensor) -> Tensor:
    """The level k = round((x + 1) 127.5), clamped to 0..255, as float64."""
    return ((x.double() + 1) * 127.5).round().clamp(0, 255)


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


def _log_normal_interval(a: Tensor, b: Tensor) -> Tensor:
    """log(Phi(b) - Phi(a)) for finite a < b, accurate in both tails: the interval is moved to
    the side where Phi is small (Phi(b) - Phi(a) = Phi(-a) - Phi(-b)) and the difference taken
    in the log domain, log Phi(hi) + log(1 - Phi(lo) / Phi(hi))."""
    flip = a > 0
    lo, hi = torch.where(flip, -b, a), torch.where(flip, -a, b)
    log_hi = torch.special.log_ndtr(hi)
    return log_hi + torch.log(-torch.expm1(torch.special.log_ndtr(lo) - log_hi))


def discretized_gaussian_log_likelihood(x: Tensor, mean: Tensor, log_scale: Tensor) -> Tensor:
    """log p(x) of the discretized Gaussian decoder, per element, in nats (float64).

    Ho et al. 2020, Eq. 13: each value's bucket is [x - 1/255, x + 1/255], the edge buckets
    open to -inf (x = -1) and +inf (x = 1), so the 256 probabilities sum to 1. The Gaussian
    N(mean, e^(2 log_scale)) mass of the bucket is computed exactly with log-CDFs, floored at
    1e-12 as in improved-diffusion.

    Args:
        x: values in [-1, 1] (snapped to the grid to choose the bucket); mean, log_scale:
            broadcastable to x (log_scale is the log standard deviation).
    """
    k = pixel_levels(x)
    inv_scale = torch.exp(-log_scale.double())
    centred = k / 127.5 - 1 - mean.double()
    lower = (centred - HALF_BUCKET) * inv_scale
    upper = (centred + HALF_BUCKET) * inv_scale
    # all three branches are evaluated at finite arguments, so where() passes finite gradients
    log_p = torch.where(
        k == 0,
        torch.special.log_ndtr(upper),
        torch.where(k == 255, torch.special.log_ndtr(-lower), _log_normal_interval(lower, upper)),
    )
    return log_p.clamp(min=LOG_PROB_FLOOR)


def _per_sample(v: Tensor, index: Tensor, ndim: int) -> Tensor:
    """Gather a (T,) table at ``index`` (N,) and shape it (N, 1, ..., 1)."""
    return v.to(index.device)[index].reshape(-1, *(1,) * (ndim - 1))


def reverse_log_variance(
    schedule: DiscreteSchedule,
    index: Tensor,
    variance: Variance,
    var_output: Tensor | None,
    ndim: int,
) -> Tensor:
    """log Sigma of p(x_{t-1} | x_t) at timestep indices ``index`` (N,), float64.

    small: beta~_t (Ho et al. 2020, Eq. 7), at the first step (beta~_1 = 0) the clipped
    beta~_2; large: beta_t, also beta~_2 at the first step (as Ho et al.'s and
    improved-diffusion's code do for the decoder); learned: the model's interpolation
    (Nichol & Dhariwal 2021, Eq. 15) between the clipped log beta~ and log beta.

    Returns:
        (N, 1, ..., 1) for the fixed variances, shaped like ``var_output`` for learned.
    """
    small = _per_sample(schedule.posterior_log_variance_clipped, index, ndim)
    if variance == "small":
        return small
    large = _per_sample(schedule.betas.log(), index, ndim)
    if variance == "large":
        first = index.reshape(-1, *(1,) * (ndim - 1)) == 0
        return torch.where(first, small, large)
    if variance == "learned":
        if var_output is None:
            raise ValueError(
                "variance='learned' needs a model that predicts its variance (learn_sigma)"
            )
        return learned_log_variance(var_output.double(), small, large)
    raise ValueError(f"unknown reverse variance {variance!r}; valid: small, large, learned")


def vlb_term(
    schedule: DiscreteSchedule,
    x0: Tensor,
    x_t: Tensor,
    index: Tensor,
    x0_hat: Tensor,
    log_var: Tensor,
) -> Tensor:
    """One term of the DDPM bound per sample, in nats summed over each image: (N,) float64.

    With DDPM's step t = index + 1 (pixdiff time t = (index + 1) / T), the reverse step
    p(x_{t-1} | x_t) = N(mu~(x_t, x0_hat), e^log_var) takes the posterior mean at the model's
    x0 estimate (Ho et al. 2020, Eq. 7 and 11). For index >= 1 the term is
    L_{t-1} = KL(q(x_{t-1} | x_t, x0) || p(x_{t-1} | x_t)); at index 0 it is the decoder
    L_0 = -log p(x0 | x1), the discretized Gaussian (Eq. 13) (Ho et al. 2020, Eq. 5).

    Args:
        x0: (N, ...) clean images on the grid; x_t: q_sample of x0 at (index + 1) / T;
        index: (N,) int64 timestep indices; x0_hat: the model's x0 estimate, shaped like x0;
        log_var: the reverse log-variance, broadcastable to x0 (:func:`reverse_log_variance`).
    """
    T, ndim = schedule.num_timesteps, x0.dim()
    coef_xt, coef_x0, _, _ = posterior(schedule, (index.double() + 1) / T, index.double() / T)
    coef_xt, coef_x0 = (c.reshape(-1, *(1,) * (ndim - 1)) for c in (coef_xt, coef_x0))
    x0, x_t, x0_hat = x0.double(), x_t.double(), x0_hat.double()
    mean_model = coef_xt * x_t + coef_x0 * x0_hat
    log_var_q = _per_sample(schedule.posterior_log_variance_clipped, index, ndim)
    kl = normal_kl(coef_xt * x_t + coef_x0 * x0, log_var_q, mean_model, log_var)
    nll = -discretized_gaussian_log_likelihood(x0, mean_model, 0.5 * log_var)
    return torch.where(index == 0, nll.flatten(1).sum(1), kl.flatten(1).sum(1))


def prior_kl(schedule: Schedule, x0: Tensor) -> Tensor:
    """L_T = KL(q(x_T | x0) || N(0, I)) per sample in nats, (N,) (Ho et al. 2020, Eq. 5)."""
    c = schedule.coefs(torch.full((x0.shape[0],), schedule.t_max), x0.dim())
    c = PathCoefs(*(v.to(x0.device) for v in c))
    zero = torch.zeros((), dtype=torch.float64, device=x0.device)
    kl = normal_kl(c.alpha * x0.double(), 2 * torch.log(c.sigma), zero, zero)
    return kl.flatten(1).sum(1)


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
    variance = variance or ("learned" if getattr(denoiser, "learn_sigma", False) else "small")
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
