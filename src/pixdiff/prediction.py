"""Conversions among the prediction types: the only place they are written.

For a Gaussian path x_t = alpha x0 + sigma eps with time derivatives alpha', sigma':

- eps: the noise (Ho et al. 2020).
- x0: the clean image.
- v = alpha eps - sigma x0 (Salimans & Ho 2022, Sec. 4);
  x0 = (alpha x_t - sigma v) / (alpha^2 + sigma^2), which for VP paths
  (alpha^2 + sigma^2 = 1) is the usual alpha x_t - sigma v.
- flow: the velocity u = dx_t/dt = alpha' x0 + sigma' eps (Lipman et al. 2022; Liu et al. 2022);
  for the straight path u = eps - x0.
- score: grad log p_t(x_t) = -eps / sigma (Song et al. 2021; Vincent 2011).
- edm: the raw output F of EDM's preconditioned network, x0 = c_skip x~ + c_out F with
  x~ = x_t / alpha (Karras et al. 2022, Eq. 7 and Table 1).
"""

from __future__ import annotations

from typing import Literal, NamedTuple, get_args

import torch
from torch import Tensor

from pixdiff.schedules import PathCoefs

PredictionType = Literal["eps", "x0", "v", "flow", "score", "edm"]
PREDICTION_TYPES: tuple[str, ...] = get_args(PredictionType)
# where a loss is measured: the network's own output, or one of these types (training/loss_space)
LossSpace = Literal["prediction", "x0", "eps", "v", "flow"]


def check_prediction(prediction: str) -> None:
    if prediction not in PREDICTION_TYPES:
        raise ValueError(f"unknown prediction type {prediction!r}; valid: {list(PREDICTION_TYPES)}")


class EDMCoefs(NamedTuple):
    c_skip: Tensor
    c_out: Tensor
    c_in: Tensor
    c_noise: Tensor


def edm_preconditioning(sigma: Tensor, sigma_data: float) -> EDMCoefs:
    """EDM preconditioning for noise level sigma of x~ = x0 + sigma n (Karras et al. 2022, Table 1).

    c_skip = sd^2 / (sigma^2 + sd^2), c_out = sigma sd / sqrt(sigma^2 + sd^2),
    c_in = 1 / sqrt(sigma^2 + sd^2), c_noise = ln(sigma) / 4.
    """
    total = sigma**2 + sigma_data**2
    return EDMCoefs(
        sigma_data**2 / total,
        sigma * sigma_data / total.sqrt(),
        1 / total.sqrt(),
        torch.log(sigma) / 4,
    )


def edm_sigma(c: PathCoefs) -> Tensor:
    """The noise level of x_t / alpha, i.e. exp(-log_snr / 2): EDM's sigma for any path."""
    return c.sigma / c.alpha


def x0_eps_from_output(
    prediction: PredictionType, out: Tensor, x_t: Tensor, c: PathCoefs, *, sigma_data: float = 0.5
) -> tuple[Tensor, Tensor]:
    """Turn a network output of the given type into (x0, eps) (dtype: ``out`` promoted with ``c``).

    Args:
        out, x_t: (N, C, H, W); ``c``: coefficients broadcastable to them.
    """
    a, s, da, ds = c
    if prediction == "eps":
        eps = out
        return (x_t - s * eps) / a, eps
    if prediction == "score":
        eps = -s * out
        return (x_t - s * eps) / a, eps
    if prediction == "x0":
        x0 = out
    elif prediction == "v":
        x0 = (a * x_t - s * out) / (a**2 + s**2)
    elif prediction == "flow":
        x0 = (ds * x_t - s * out) / (a * ds - s * da)
    elif prediction == "edm":
        k = edm_preconditioning(edm_sigma(c), sigma_data)
        x0 = k.c_skip * (x_t / a) + k.c_out * out
    else:
        check_prediction(prediction)
    return x0, eps_from_x0(x_t, x0, c)


def eps_from_x0(x_t: Tensor, x0: Tensor, c: PathCoefs) -> Tensor:
    """eps = (x_t - alpha x0) / sigma."""
    return (x_t - c.alpha * x0) / c.sigma


def target_from_x0_eps(
    prediction: PredictionType, x0: Tensor, eps: Tensor, c: PathCoefs, *, sigma_data: float = 0.5
) -> Tensor:
    """The training target of a prediction type, given the true x0 and eps."""
    a, s, da, ds = c
    if prediction == "eps":
        return eps
    if prediction == "x0":
        return x0
    if prediction == "v":
        return a * eps - s * x0
    if prediction == "flow":
        return da * x0 + ds * eps
    if prediction == "score":
        return -eps / s
    if prediction == "edm":
        k = edm_preconditioning(edm_sigma(c), sigma_data)
        return (x0 - k.c_skip * (a * x0 + s * eps) / a) / k.c_out
    check_prediction(prediction)
    raise AssertionError  # unreachable


def convert_output(
    prediction: PredictionType,
    out: Tensor,
    x_t: Tensor,
    c: PathCoefs,
    to: PredictionType,
    *,
    sigma_data: float = 0.5,
) -> Tensor:
    """A network output of type ``prediction`` at x_t, re-expressed as type ``to``: e.g. an
    x0-prediction as the flow velocity (x_t - x0^) / t of the straight path, the velocity
    loss space of JiT (Li & He 2025). Affine in ``out`` at fixed x_t."""
    x0, eps = x0_eps_from_output(prediction, out, x_t, c, sigma_data=sigma_data)
    return target_from_x0_eps(to, x0, eps, c, sigma_data=sigma_data)


def velocity(x0: Tensor, eps: Tensor, c: PathCoefs) -> Tensor:
    """The probability-flow velocity dx_t/dt = alpha' x0 + sigma' eps."""
    return c.alpha_dt * x0 + c.sigma_dt * eps


def network_time(prediction: PredictionType, c: PathCoefs, timestep: Tensor) -> Tensor:
    """c_noise fed to the network: EDM's ln(sigma)/4 for ``edm``, else the schedule's timestep."""
    if prediction == "edm":
        return (torch.log(edm_sigma(c)) / 4).flatten()
    return timestep


def network_input_scale(
    prediction: PredictionType, c: PathCoefs, sigma_data: float
) -> Tensor | float:
    """Factor applied to x_t before the network: EDM's c_in / alpha, else 1."""
    if prediction == "edm":
        return edm_preconditioning(edm_sigma(c), sigma_data).c_in / c.alpha
    return 1.0


def eps_error_gain(prediction: PredictionType, c: PathCoefs, *, sigma_data: float = 0.5) -> Tensor:
    """k with out - out* = k (eps^ - eps) at a fixed x_t: how an error in eps shows in the
    network's own output, so a weight w on the eps-MSE is w / k^2 on the output's MSE.

    Every type is affine in x0^ at fixed x_t, and x0^ - x0 = -(sigma / alpha)(eps^ - eps):
    eps 1; score -1/sigma; x0 -sigma/alpha; v (alpha^2 + sigma^2)/alpha;
    flow (alpha sigma' - sigma alpha')/alpha; edm -(sigma/alpha)/c_out.
    The eps and x0 rows give the conversions of min-SNR (Hang et al. 2023, Eq. 9).
    """
    a, s, da, ds = c
    if prediction == "eps":
        return torch.ones_like(s)
    if prediction == "score":
        return -1 / s
    if prediction == "x0":
        return -s / a
    if prediction == "v":
        return (a**2 + s**2) / a
    if prediction == "flow":
        return (a * ds - s * da) / a
    if prediction == "edm":
        return -(s / a) / edm_preconditioning(edm_sigma(c), sigma_data).c_out
    check_prediction(prediction)
    raise AssertionError  # unreachable
