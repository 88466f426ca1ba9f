"""Multistep consistency sampling (Song et al. 2023, "Consistency Models", Alg. 1)."""

from __future__ import annotations

from torch import Tensor

from pixdiff.conditioning import Cond
from pixdiff.samplers.common import Generators, randn_like


def consistency_step(
    denoiser,
    x: Tensor,
    t: Tensor,
    s: Tensor,
    *,
    cond: Cond | None = None,
    generator: Generators = None,
) -> Tensor:
    """One step of multistep consistency sampling (Song et al. 2023, Alg. 1), 1 NFE: the
    consistency function's clean image x0 = f(x_t, t) (the denoiser's x0 estimate), noised
    afresh to the next grid time, x_s = alpha_s x0 + sigma_s z; the step to s = 0 returns x0.

    One step from t = 1 is the one-step map; each further step trades one network evaluation
    for a fresh look at the image at a lower noise level. Unlike DDIM, no noise estimate is
    carried over, so a consistency model's error does not accumulate along an ODE path.

    Args:
        x: (N, C, H, W) the state at t; t > s: consecutive grid times (the grid ends at 0).
    """
    x0 = denoiser(x, t, cond).x0
    if s == 0:
        return x0
    sched = denoiser.schedule
    return sched.alpha(s) * x0 + sched.sigma(s) * randn_like(x0, generator)
