"""Analytic test oracles: Gaussian-mixture data whose posterior mean E[x0 | x_t] is exact.

For data p(x0) = sum_k w_k N(mu_k, s_k^2 I) on the path x_t = alpha x0 + sigma eps, each
component gives x_t ~ N(alpha mu_k, v_k I) with v_k = alpha^2 s_k^2 + sigma^2, and
E[x0 | x_t, k] = mu_k + alpha s_k^2 / v_k (x_t - alpha mu_k); the mixture's posterior mean
weights these by the responsibilities r_k(x_t). (The exact-score oracle of Karras et al. 2022,
Sec. 3 and NVlabs/edm's toy example.)
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from pixdiff.denoiser import Denoised, Denoiser
from pixdiff.prediction import (
    PredictionType,
    edm_preconditioning,
    edm_sigma,
    eps_from_x0,
    target_from_x0_eps,
)
from pixdiff.schedules import Schedule


@dataclass(frozen=True)
class GaussianMixture:
    """Isotropic Gaussian mixture in D dimensions.

    Args:
        means: (K, D); stds: (K,); weights: (K,) summing to 1.
    """

    means: Tensor
    stds: Tensor
    weights: Tensor

    @staticmethod
    def gaussian(mean: list[float], std: float) -> GaussianMixture:
        m = torch.tensor([mean], dtype=torch.float64)
        return GaussianMixture(m, torch.tensor([std], dtype=torch.float64), torch.ones(1).double())

    @property
    def dim(self) -> int:
        return self.means.shape[1]

    def sample(self, n: int, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
        """(n, D) float64 samples and their (n,) component ids."""
        k = torch.multinomial(self.weights, n, replacement=True, generator=generator)
        z = torch.randn(n, self.dim, generator=generator, dtype=torch.float64)
        return self.means[k] + self.stds[k, None] * z, k

    def log_prob(self, x: Tensor) -> Tensor:
        """log p(x) of the data distribution, (N, D) -> (N,)."""
        return self._log_joint(x.double(), 1.0, 0.0).logsumexp(dim=1)

    def _log_joint(self, x_t: Tensor, alpha, sigma) -> Tensor:
        """log w_k + log N(x_t; alpha mu_k, v_k I): (N, K); alpha, sigma scalars or (N, 1)."""
        alpha = torch.as_tensor(alpha, dtype=torch.float64).reshape(-1, 1)
        sigma = torch.as_tensor(sigma, dtype=torch.float64).reshape(-1, 1)
        v = alpha**2 * self.stds**2 + sigma**2  # (N, K)
        sq = ((x_t[:, None, :] - alpha[..., None] * self.means) ** 2).sum(-1)  # (N, K)
        return self.weights.log() - 0.5 * sq / v - 0.5 * self.dim * torch.log(2 * math.pi * v)

    def responsibilities(self, x_t: Tensor, alpha: Tensor, sigma: Tensor) -> Tensor:
        """r_k(x_t) = p(k | x_t): (N, K)."""
        return torch.softmax(self._log_joint(x_t, alpha, sigma), dim=1)

    def class_log_posterior(self, x_t: Tensor, alpha: Tensor, sigma: Tensor) -> Tensor:
        """log p(k | x_t) = log r_k(x_t), (N, K) float64: the exact noise-conditional classifier
        when each component is a class (Bayes' rule on the mixture; differentiable in x_t)."""
        return torch.log_softmax(self._log_joint(x_t.double(), alpha, sigma), dim=1)

    def classifier(self, schedule: Schedule) -> ExactClassifier:
        """The exact classifier ``(x_t, t) -> log p(k | x_t)`` on ``schedule`` (for classifier
        guidance, Dhariwal & Nichol 2021)."""
        return ExactClassifier(self, schedule)

    def posterior_mean(self, x_t: Tensor, alpha: Tensor, sigma: Tensor) -> Tensor:
        """E[x0 | x_t] for (N, D) x_t and (N, 1) alpha, sigma, in float64."""
        x_t, alpha, sigma = x_t.double(), alpha.double(), sigma.double()
        v = alpha**2 * self.stds**2 + sigma**2  # (N, K)
        gain = (alpha * self.stds**2 / v)[..., None]  # (N, K, 1)
        per_k = self.means + gain * (x_t[:, None, :] - alpha[..., None] * self.means)
        r = self.responsibilities(x_t, alpha, sigma)
        return (r[..., None] * per_k).sum(1)

    def ode_map_gaussian(
        self,
        x_T: Tensor,
        alpha_T: float,
        sigma_T: float,
        *,
        alpha_to: float = 1.0,
        sigma_to: float = 0.0,
    ) -> Tensor:
        """Exact probability-flow ODE solution from x_T at (alpha_T, sigma_T) to the time with
        (alpha_to, sigma_to) (default: t = 0), for a single Gaussian:
        (x_t - alpha mu) / sqrt(alpha^2 s^2 + sigma^2) is constant along the flow."""
        if self.means.shape[0] != 1:
            raise ValueError("the closed-form ODE map holds for a single Gaussian")
        mu, s = self.means[0], self.stds[0]
        z = (x_T.double() - alpha_T * mu) / math.sqrt(alpha_T**2 * s**2 + sigma_T**2)
        return alpha_to * mu + math.sqrt(alpha_to**2 * s**2 + sigma_to**2) * z

    def exact_denoiser(self, schedule: Schedule) -> ExactDenoiser:
        """The exact posterior mean as a denoiser with time kept in float64 end to end (the
        Denoiser feeds networks a float32 c_noise, which floors accuracy near 1e-7); it counts
        its calls, for NFE checks."""
        return ExactDenoiser(self, schedule)

    def denoiser(
        self, schedule: Schedule, prediction: PredictionType = "x0", *, sigma_data: float = 0.5
    ) -> Denoiser:
        """A Denoiser whose 'network' is this oracle speaking the given parameterization."""
        return Denoiser(
            OracleNet(self, schedule, prediction, sigma_data),
            schedule,
            prediction,
            sigma_data=sigma_data,
        )


class OracleNet:
    """The exact model as a raw network ``net(x_in, c_noise) -> prediction`` (D-dim data).

    It undoes the Denoiser's input scaling and time encoding, so sampling through it tests the
    whole chain of conversions."""

    def __init__(
        self, gm: GaussianMixture, schedule: Schedule, prediction: PredictionType, sigma_data: float
    ):
        self.gm, self.schedule, self.prediction, self.sigma_data = (
            gm,
            schedule,
            prediction,
            sigma_data,
        )

    def __call__(self, x_in: Tensor, c_noise: Tensor) -> Tensor:
        t = self._time(c_noise.double())
        c = self.schedule.coefs(t, 2)
        x_t = x_in.double()
        if self.prediction == "edm":
            x_t = x_t * c.alpha / edm_preconditioning(edm_sigma(c), self.sigma_data).c_in
        x0 = self.gm.posterior_mean(x_t, c.alpha, c.sigma)
        eps = eps_from_x0(x_t, x0, c)
        return target_from_x0_eps(self.prediction, x0, eps, c, sigma_data=self.sigma_data)

    def _time(self, c_noise: Tensor) -> Tensor:
        if self.prediction == "edm":  # c_noise = ln(sigma / alpha) / 4
            return self.schedule.t_from_log_snr(-8 * c_noise).clamp(0, 1)
        return self.schedule.t_from_timestep(c_noise).clamp(0, 1)


class ExactDenoiser:
    """E[x0 | x_t] of a GaussianMixture in float64, called as ``(x_t, t, cond) -> Denoised``."""

    def __init__(self, gm: GaussianMixture, schedule: Schedule):
        self.gm, self.schedule, self.calls = gm, schedule, 0

    def __call__(self, x: Tensor, t: Tensor, cond=None) -> Denoised:
        self.calls += 1
        c = self.schedule.coefs(t, x.dim())
        n = x.shape[0]
        x0 = self.gm.posterior_mean(x, c.alpha.expand(n, 1), c.sigma.expand(n, 1))
        return Denoised(x0, eps_from_x0(x, x0, c), None, x0)


class ExactClassifier:
    """log p(k | x_t) of a GaussianMixture's components, called as ``(x_t, t) -> (N, K)``."""

    def __init__(self, gm: GaussianMixture, schedule: Schedule):
        self.gm, self.schedule = gm, schedule
        self.num_classes = gm.means.shape[0]

    def __call__(self, x_t: Tensor, t: Tensor) -> Tensor:
        c = self.schedule.coefs(t, 2)
        return self.gm.class_log_posterior(x_t, c.alpha, c.sigma)


@dataclass(frozen=True)
class FrameCorrelatedGaussian:
    """Clips x0 (F, C, H, W) ~ N(0, Sigma) across frames, i.i.d. over pixels, with
    Sigma_ij = std^2 rho^|i - j| (an AR(1) process in time): the video oracle.

    On x_t = alpha x0 + sigma eps the posterior mean is linear (Gaussian conditioning,
    e.g. Bishop 2006, Eq. 2.116): E[x0 | x_t] = alpha Sigma (alpha^2 Sigma + sigma^2 I)^-1 x_t
    on the frame axis; with Sigma = U diag(l) U^T that is U diag(alpha l / (alpha^2 l +
    sigma^2)) U^T x_t.
    """

    frames: int
    rho: float
    std: float = 0.5

    def covariance(self) -> Tensor:
        """Sigma, (F, F) float64."""
        i = torch.arange(self.frames, dtype=torch.float64)
        return self.std**2 * self.rho ** (i[:, None] - i[None, :]).abs()

    def posterior_mean(self, x_t: Tensor, alpha: Tensor, sigma: Tensor) -> Tensor:
        """E[x0 | x_t] for x_t (N, F, ...) and alpha, sigma (N,) or scalars, in float64."""
        lam, u = torch.linalg.eigh(self.covariance())  # Sigma = U diag(lam) U^T
        a = torch.as_tensor(alpha, dtype=torch.float64).reshape(-1, 1)
        s = torch.as_tensor(sigma, dtype=torch.float64).reshape(-1, 1)
        gain = a * lam / (a**2 * lam + s**2)  # (N or 1, F)
        z = torch.einsum("fg,ng...->nf...", u.T, x_t.double())  # the eigenbasis
        z = z * gain.reshape(*gain.shape, *(1,) * (x_t.dim() - 2))
        return torch.einsum("fg,ng...->nf...", u, z)

    def exact_denoiser(self, schedule: Schedule) -> FrameDenoiser:
        """The exact posterior mean as a ``(x_t, t, cond) -> Denoised`` on clips."""
        return FrameDenoiser(self, schedule)


class FrameDenoiser:
    """E[x0 | x_t] of a :class:`FrameCorrelatedGaussian`, in float64."""

    def __init__(self, data: FrameCorrelatedGaussian, schedule: Schedule):
        self.data, self.schedule = data, schedule

    def __call__(self, x: Tensor, t: Tensor, cond=None) -> Denoised:
        c = self.schedule.coefs(torch.as_tensor(t, dtype=torch.float64), x.dim())
        n = x.shape[0]
        x0 = self.data.posterior_mean(
            x, c.alpha.reshape(-1).expand(n), c.sigma.reshape(-1).expand(n)
        )
        return Denoised(x0, eps_from_x0(x.double(), x0, c), None, x0)
