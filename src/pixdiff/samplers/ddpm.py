"""The ancestral step of the DDPM reverse process (Ho et al. 2020, Alg. 2), on any grid."""

from __future__ import annotations

from torch import Tensor

from pixdiff.conditioning import Cond
from pixdiff.posterior import Variance, learned_log_variance, posterior
from pixdiff.samplers.common import Generators, randn_like


def ddpm_step(
    denoiser,
    x: Tensor,
    t: Tensor,
    s: Tensor,
    *,
    variance: Variance = "small",
    cond: Cond | None = None,
    generator: Generators = None,
) -> Tensor:
    """One ancestral step x_t -> x_s ~ N(posterior mean at x0_hat, variance) of DDPM (Ho et al.
    2020, Alg. 2), 1 NFE; on a respaced grid the transition between grid points is the exact
    forward-process posterior (Nichol & Dhariwal 2021, Sec. 4).

    Args:
        x: (N, C, H, W) the state at t; t > s: consecutive grid times (the grid ends at 0).
        variance: small = beta~ (posterior), large = beta (Ho et al. 2020, Sec. 3.2), learned =
            the model's interpolated variance (Nichol & Dhariwal 2021), for learn_sigma models.
    """
    out = denoiser(x, t, cond)
    coef_xt, coef_x0, var_small, var_large = posterior(denoiser.schedule, t, s)
    mean = coef_xt * x + coef_x0 * out.x0
    if s == 0:  # the last step returns the mean (Ho et al. 2020, Alg. 2, z = 0 at t = 1)
        return mean
    if variance == "learned":
        if out.var_output is None:
            raise ValueError(
                "variance='learned' needs a model that predicts its variance (learn_sigma)"
            )
        log_var = learned_log_variance(
            out.var_output.to(mean.dtype),
            var_small.log().to(mean.dtype),
            var_large.log().to(mean.dtype),
        )
        return mean + (0.5 * log_var).exp() * randn_like(x, generator)
    var = var_small if variance == "small" else var_large
    return mean + var.sqrt() * randn_like(x, generator)
