"""Likelihood: the discretized decoder, Gaussian KL, the DDPM bound and the ODE likelihood,
checked against data whose true NLL is known in closed form."""

from __future__ import annotations

import math

import pytest
import torch
from torch.distributions import Normal, kl_divergence

from pixdiff.denoiser import Denoised
from pixdiff.discrete_schedules import DiscreteSchedule
from pixdiff.eval.likelihood import to_pixel_grid, vlb_bpd
from pixdiff.eval.ode_likelihood import dequantize, divergence, ode_bpd, ode_log_prob
from pixdiff.posterior import posterior
from pixdiff.prediction import eps_from_x0, velocity
from pixdiff.schedule_registry import get_schedule
from pixdiff.toy import GaussianMixture
from pixdiff.vlb import (
    clipped_log_variance,
    discretized_gaussian_log_likelihood,
    normal_kl,
    pixel_levels,
)

F64 = torch.float64
LEVELS = torch.arange(256, dtype=F64) / 127.5 - 1
LN2 = math.log(2)


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# ----------------------------------------------------------------------------- pieces


@pytest.mark.parametrize(
    ("mean", "log_scale"),
    [
        (0.0, -3.0),  # a typical decoder
        (0.3, -6.0),  # sharp: a few buckets hold everything
        (1.0 / 255, -5.5),  # centred on a bucket edge
        (0.999, -10.0),  # at the top edge bucket, very sharp
        (-5.0, -8.0),  # far below the range: all mass in the open bucket 0
        (40.0, 0.0),  # far above
        (0.2, 4.0),  # wider than the range: mass in both open edge buckets
        (0.1, -20.0),  # scale 2e-9
    ],
)
def test_decoder_probabilities_sum_to_one(mean, log_scale):
    """Ho et al. 2020, Eq. 13: the 256 buckets, edges open to +-inf, partition the line. The
    1e-12 floor adds at most 255e-12."""
    log_p = discretized_gaussian_log_likelihood(
        LEVELS, torch.tensor(mean, dtype=F64), torch.tensor(log_scale, dtype=F64)
    )
    assert abs(log_p.exp().sum().item() - 1) < 1e-9


def test_decoder_matches_cdf_differences_and_has_finite_gradients():
    mean = torch.tensor(0.1, dtype=F64, requires_grad=True)
    log_scale = torch.tensor(-2.0, dtype=F64, requires_grad=True)
    log_p = discretized_gaussian_log_likelihood(LEVELS, mean, log_scale)
    normal = Normal(torch.tensor(0.1, dtype=F64), torch.tensor(-2.0, dtype=F64).exp())
    upper = torch.cat([LEVELS[:-1] + 1 / 255, torch.tensor([math.inf], dtype=F64)])
    lower = torch.cat([torch.tensor([-math.inf], dtype=F64), LEVELS[1:] - 1 / 255])
    expected = normal.cdf(upper) - normal.cdf(lower)
    keep = expected > 1e-6  # where the naive difference is accurate
    torch.testing.assert_close(log_p.exp()[keep], expected[keep], rtol=1e-9, atol=0)
    # far-off means with sharp scales (an untrained model) still give finite gradients
    far = discretized_gaussian_log_likelihood(LEVELS[[0, 128, 255]], mean * 50, log_scale * 4).sum()
    (log_p.sum() + far).backward()
    assert torch.isfinite(mean.grad) and torch.isfinite(log_scale.grad)


def test_normal_kl_closed_form_and_monte_carlo():
    m1, lv1, m2, lv2 = (torch.tensor(v, dtype=F64) for v in (0.3, -1.0, -0.2, 0.5))
    kl = normal_kl(m1, lv1, m2, lv2)
    ref = kl_divergence(Normal(m1, (lv1 / 2).exp()), Normal(m2, (lv2 / 2).exp()))
    torch.testing.assert_close(kl, ref, rtol=1e-12, atol=0)
    assert normal_kl(m1, lv1, m1, lv1).item() == 0
    z = m1 + (lv1 / 2).exp() * torch.randn(400_000, generator=gen(0), dtype=F64)
    log_ratio = Normal(m1, (lv1 / 2).exp()).log_prob(z) - Normal(m2, (lv2 / 2).exp()).log_prob(z)
    assert abs(log_ratio.mean() - kl) < 4 * log_ratio.std() / math.sqrt(z.numel())


def test_inputs_off_range_or_schedule_are_refused():
    d = GaussianMixture.gaussian([0.0] * 4, 0.5).exact_denoiser(DiscreteSchedule("cosine", 10))
    with pytest.raises(ValueError, match=r"in \[-1, 1\].*got values in \[0, 255\]"):
        vlb_bpd(d, torch.tensor([[0.0, 255.0, 3.0, 4.0]]))
    with pytest.raises(ValueError, match="NaN"):
        to_pixel_grid(torch.tensor([0.0, math.nan]))
    flow = GaussianMixture.gaussian([0.0] * 4, 0.5).exact_denoiser(get_schedule("flow"))
    with pytest.raises(ValueError, match="needs a DiscreteSchedule"):
        vlb_bpd(flow, torch.zeros(1, 4))
    # float32 rounding of k / 127.5 - 1 is snapped back onto the grid
    k = torch.arange(256.0)
    assert torch.equal(pixel_levels(to_pixel_grid(k / 127.5 - 1)), k.double())


# ----------------------------------------------------------------------------- the bound

# Data: each pixel an independent N(MU, S^2) quantized to the 256-level grid, so its true NLL
# is -log P(k) with P(k) the Gaussian mass of k's bucket (edges open, as the decoder's).
MU, S = 0.1, 0.05


def bucket_probs() -> torch.Tensor:
    lower = torch.cat([torch.tensor([-math.inf], dtype=F64), LEVELS[1:] - 1 / 255])
    upper = torch.cat([LEVELS[:-1] + 1 / 255, torch.tensor([math.inf], dtype=F64)])
    normal = Normal(torch.tensor(MU, dtype=F64), torch.tensor(S, dtype=F64))
    return normal.cdf(upper) - normal.cdf(lower)


P = bucket_probs()
SUPPORT = P > 1e-12  # 90 levels; the rest hold < 1e-12 together
PIXEL = GaussianMixture(
    LEVELS[SUPPORT][:, None], torch.zeros(int(SUPPORT.sum()), dtype=F64), P[SUPPORT] / P.sum()
)


class PixelOracle:
    """The exact E[x0 | x_t] of that data (a 1-D mixture of point masses at the levels, per
    pixel), optionally with the optimal reverse variance var~_t + coef_x0^2 Var[x0 | x_t] fed
    through the learned-variance channels: the Gaussian closest in KL to
    q(x_{t-1} | x_t) = E_{x0 | x_t} q(x_{t-1} | x_t, x0) matches its mean and variance."""

    def __init__(self, schedule: DiscreteSchedule, optimal_variance: bool = False):
        self.schedule, self.learn_sigma = schedule, optimal_variance

    def __call__(self, x: torch.Tensor, t: torch.Tensor, cond=None) -> Denoised:
        n, dims = x.shape
        t = torch.as_tensor(t, dtype=F64).expand(n)
        c = self.schedule.coefs(t, 2)
        per_pixel = [v.repeat_interleave(dims, 0) for v in (c.alpha, c.sigma)]
        r = PIXEL.responsibilities(x.reshape(-1, 1), *per_pixel)  # (N D, K)
        x0 = (r @ PIXEL.means).reshape(n, dims)
        var_output = None
        if self.learn_sigma:
            var_x0 = ((r @ PIXEL.means**2).reshape(n, dims) - x0**2).clamp_min(0)
            var_output = self._as_var_output(t, var_x0)
        return Denoised(x0, eps_from_x0(x, x0, c), var_output, x0)

    def _as_var_output(self, t: torch.Tensor, var_x0: torch.Tensor) -> torch.Tensor:
        """The v with learned_log_variance(v, small, large) = log of the optimal variance."""
        T = self.schedule.num_timesteps
        index = (t * T - 1).round().long()
        _, coef_x0, var_q, _ = posterior(self.schedule, t, t - 1 / T)
        log_var = (var_q[:, None] + coef_x0[:, None] ** 2 * var_x0).clamp_min(1e-30).log()
        small = clipped_log_variance(self.schedule, index)[:, None]
        large = self.schedule.betas.log()[index][:, None]
        return 2 * (log_var - small) / (large - small) - 1


def quantized_data(n: int, dims: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(images, their true NLL in bits/dim)."""
    k = torch.multinomial(P, n * dims, replacement=True, generator=gen(seed)).reshape(n, dims)
    return LEVELS[k], -P[k].log().mean(1) / LN2


def bound_gap(T: int, variance: str, n: int, seed: int) -> tuple[float, float]:
    """Mean of bound - true NLL over n images of 32 pixels, and its standard error."""
    schedule = DiscreteSchedule("cosine", T)
    x, nll = quantized_data(n, 32, seed)
    d = PixelOracle(schedule, optimal_variance=variance == "optimal")
    var = "learned" if variance == "optimal" else variance
    res = vlb_bpd(d, x, variance=var, batch_size=4096, generator=gen(seed + 1))
    torch.testing.assert_close(res.bpd, res.prior + res.decoder + res.kl)
    gap = res.bpd - nll
    return gap.mean().item(), gap.std().item() / math.sqrt(n)


def test_bound_with_optimal_variance_is_tight():
    """With the exact mean and the optimal variance each reverse step is the moment-matched
    Gaussian of q(x_{t-1} | x_t), and the bound lands on the true NLL (4.72 bits): gaps
    -0.007 +- 0.007 (T = 10) and 0.001 +- 0.02 (T = 40) here, 0.0001 +- 0.0015 at T = 10 with
    65k pixels. The bound's expectation is >= the entropy, so we allow 4 standard errors below
    and 0.02 bit (+ 4 se) above."""
    for T, n in ((10, 128), (40, 64)):
        gap, se = bound_gap(T, "optimal", n, seed=T)
        assert -4 * se < gap < 0.02 + 4 * se, (T, gap, se)


def test_fixed_variance_bounds_hold_and_tighten_with_T():
    """beta~ and beta are not the optimal variance for data that is not a point mass, so their
    bounds sit clearly above the true NLL; the mismatch shrinks as the steps get finer (measured
    gaps: small 0.96 -> 0.28, large 1.65 -> 0.28 bits from T = 10 to T = 100, se <= 0.07)."""
    for variance in ("small", "large"):
        coarse, se_coarse = bound_gap(10, variance, 64, seed=1)
        fine, se_fine = bound_gap(100, variance, 16, seed=2)
        assert fine > 4 * se_fine, (variance, fine, se_fine)
        assert coarse - fine > 4 * math.hypot(se_coarse, se_fine), (variance, coarse, fine)


def test_importance_sampled_bound_agrees_with_the_exact_sum():
    """Nichol & Dhariwal 2021, Eq. 18: with p_t ~ sqrt(E[L_t^2]) from a pilot run, K = 32
    timesteps give an estimate that agrees with the full sum of T - 1 = 99 KL terms, with a
    standard error far below uniform sampling's. The exact sum is itself noisy (one noise draw
    per term), so it is averaged over 4 draws and its own error enters the comparison."""
    schedule = DiscreteSchedule("cosine", 100)
    d = PixelOracle(schedule)
    pilot = vlb_bpd(d, quantized_data(8, 16, 0)[0], variance="large", generator=gen(0))
    proposal = pilot.terms.pow(2).mean(0).sqrt()
    x, _ = quantized_data(16, 16, 1)
    exact = torch.stack(
        [vlb_bpd(d, x, variance="large", generator=gen(10 + i)).kl.mean() for i in range(4)]
    )
    kw = dict(variance="large", num_t_samples=32, generator=gen(2))
    weighted = vlb_bpd(d, x, proposal=proposal, **kw)
    uniform = vlb_bpd(d, x, **kw)
    se = math.hypot(weighted.stderr, exact.std().item() / 2)
    assert abs(weighted.kl.mean().item() - exact.mean().item()) < 4 * se
    assert 0 < weighted.stderr < uniform.stderr / 4


# ----------------------------------------------------------------------------- the ODE


def gaussian_log_prob(x: torch.Tensor, mean: float, var: float) -> torch.Tensor:
    return (-0.5 * ((x - mean) ** 2 / var + math.log(2 * math.pi * var))).sum(1)


@pytest.mark.parametrize(
    ("name", "tol"),
    # flow's prior N(0, 1) is p_1 exactly; VP paths keep alpha(1) mu ~ 1e-3 of the mean and
    # EDM's prior std sqrt(1 + 80^2) is unit-data's, so those differ by a few 1e-3 nats
    [("flow", 1e-4), ("vp-linear", 1e-2), ("edm", 1e-2), ("linear", 1e-2)],
)
def test_ode_log_prob_matches_the_gaussian_density(name, tol):
    """log p_{t_eps}(x) of N(mu, s^2) data, whose marginal at t is N(alpha mu, alpha^2 s^2 +
    sigma^2): the ODE with the exact score recovers it. Rademacher probes are exact here (the
    velocity's Jacobian is a multiple of I)."""
    schedule = get_schedule(name)
    gm = GaussianMixture.gaussian([0.1] * 8, 0.3)
    x = gm.sample(12, gen(0))[0]
    log_prob, nfe = ode_log_prob(gm.exact_denoiser(schedule), x, generator=gen(1))
    t_eps = max(schedule.t_min, 1e-5)
    a, s = schedule.alpha(t_eps).item(), schedule.sigma(t_eps).item()
    expected = gaussian_log_prob(x, a * 0.1, a * a * 0.09 + s * s)
    assert (log_prob - expected).abs().max() < tol
    assert 10 < nfe < 1000


def test_ode_bpd_matches_the_true_nll_of_quantized_gaussian_data():
    """bpd = -log p(x) / (D ln 2) + 7 for x = 2 (k + u) / 256 - 1 bounds -log2 P(k) / D, P(k)
    the Gaussian mass of the cell [2k/256 - 1, 2(k+1)/256 - 1) (Jensen; the gap is ~1e-5 here).
    Paired over 32 images of 16 pixels: measured 3e-4 +- 4e-4 (49 NFE); the 0.0056-bit offset
    of 2/255 cells instead of 2/256 would be 14 standard errors away."""
    mu, s = 0.1, 0.3
    gm = GaussianMixture.gaussian([mu] * 16, s)
    images = to_pixel_grid(gm.sample(32, gen(0))[0].clamp(-1, 1))
    res = ode_bpd(gm.exact_denoiser(get_schedule("flow")), images, generator=gen(1))
    k = pixel_levels(images)
    normal = Normal(torch.tensor(mu, dtype=F64), torch.tensor(s, dtype=F64))
    lower = torch.where(k == 0, -math.inf, 2 * k / 256 - 1)
    upper = torch.where(k == 255, math.inf, 2 * (k + 1) / 256 - 1)
    true_bpd = -(normal.cdf(upper) - normal.cdf(lower)).log().mean(1) / LN2
    diff = res.bpd - true_bpd
    assert abs(diff.mean()) < 4 * diff.std() / math.sqrt(32) + 1e-4
    assert diff.abs().max() < 0.02  # one dequantization draw per image
    assert res.stderr == pytest.approx(res.bpd.std().item() / math.sqrt(32))
    torch.testing.assert_close(res.bpd, -res.log_prob / (16 * LN2) + 7)


def test_dequantization_stays_in_the_cell():
    images = LEVELS[torch.randint(0, 256, (4, 64), generator=gen(0))]
    x = dequantize(images, gen(1))
    cell = ((x + 1) * 128).floor()
    assert torch.equal(cell, pixel_levels(images))


MIXTURE = GaussianMixture(
    torch.tensor([[0.4, -0.2, 0.1, 0.3], [-0.5, 0.3, -0.1, 0.0]], dtype=F64),
    torch.tensor([0.15, 0.25], dtype=F64),
    torch.tensor([0.3, 0.7], dtype=F64),
)


def mixture_log_prob(x: torch.Tensor, a: float, s: float) -> torch.Tensor:
    """log p_t(x) of MIXTURE: components N(a mu_k, (a^2 s_k^2 + s^2) I)."""
    var = a * a * MIXTURE.stds**2 + s * s  # (K,)
    sq = ((x[:, None, :] - a * MIXTURE.means) ** 2).sum(-1)
    log_k = MIXTURE.weights.log() - 0.5 * sq / var - 2 * torch.log(2 * math.pi * var)
    return log_k.logsumexp(1)


def test_hutchinson_estimate_is_unbiased():
    """E[z^T J z] = tr J for E[z z^T] = I (Hutchinson 1989), where J, the velocity's Jacobian
    for a two-component mixture, is not diagonal: the mean of 4000 probes matches the exact
    trace within 4 standard errors, for Rademacher and Gaussian probes."""
    schedule = get_schedule("flow")
    d = MIXTURE.exact_denoiser(schedule)
    t = torch.tensor(0.4, dtype=F64)
    point = MIXTURE.sample(1, gen(0))[0].expand(4000, 4)

    def div(probe):
        x = point.clone().requires_grad_(True)
        out = d(x, t)
        return divergence(velocity(out.x0, out.eps, schedule.coefs(t, 2)), x, probe)

    exact = div(None)
    assert torch.allclose(exact, exact[0])
    gaussian = torch.randn(4000, 4, generator=gen(1), dtype=F64)
    for probe in (gaussian, gaussian.sign()):
        est = div(probe)
        assert est.std() > 0.01  # really an estimate
        assert abs(est.mean() - exact[0]) < 4 * est.std() / math.sqrt(4000)


def test_ode_log_prob_of_a_mixture_exact_and_hutchinson():
    """With the exact trace the ODE reproduces a mixture's log-density; with one Hutchinson
    probe per image the error is noise with mean 0."""
    schedule = get_schedule("flow")
    x = MIXTURE.sample(128, gen(0))[0]
    expected = mixture_log_prob(x, 1 - 1e-5, 1e-5)  # t_eps = 1e-5 on the flow path
    d = MIXTURE.exact_denoiser(schedule)
    exact, _ = ode_log_prob(d, x[:8], estimator="exact")
    assert (exact - expected[:8]).abs().max() < 1e-4
    for estimator in ("rademacher", "gaussian"):
        est, _ = ode_log_prob(d, x, estimator=estimator, generator=gen(2))
        err = est - expected
        assert err.std() > 1e-3
        assert abs(err.mean()) < 4 * err.std() / math.sqrt(128)
