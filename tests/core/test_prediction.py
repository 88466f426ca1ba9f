"""Prediction-type conversions and the Denoiser wrapper."""

import pytest
import torch
from torch import nn

from pixdiff.denoiser import Denoiser
from pixdiff.prediction import (
    PREDICTION_TYPES,
    edm_preconditioning,
    target_from_x0_eps,
    velocity,
    x0_eps_from_output,
)
from pixdiff.schedule_registry import get_schedule


@pytest.mark.parametrize("name", ["linear", "cosine", "vp-linear", "ve", "edm", "flow"])
@pytest.mark.parametrize("prediction", PREDICTION_TYPES)
def test_conversions_round_trip_float64(name, prediction):
    s = get_schedule(name)
    t = torch.linspace(max(s.t_min, 0.01), 0.99, 16, dtype=torch.float64)
    c = s.coefs(t, 4)
    x0 = torch.randn(16, 3, 4, 4, dtype=torch.float64)
    eps = torch.randn_like(x0)
    x_t = c.alpha * x0 + c.sigma * eps
    target = target_from_x0_eps(prediction, x0, eps, c)
    x0_hat, eps_hat = x0_eps_from_output(prediction, target, x_t, c)
    torch.testing.assert_close(x0_hat, x0, rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(eps_hat, eps, rtol=1e-9, atol=1e-9)


def test_flow_velocity_of_straight_path_is_eps_minus_x0():
    c = get_schedule("flow").coefs(torch.tensor([0.3], dtype=torch.float64), 2)
    x0, eps = torch.randn(1, 5, dtype=torch.float64), torch.randn(1, 5, dtype=torch.float64)
    torch.testing.assert_close(velocity(x0, eps, c), eps - x0)
    torch.testing.assert_close(target_from_x0_eps("flow", x0, eps, c), eps - x0)


def test_edm_preconditioning_values():
    k = edm_preconditioning(torch.tensor(0.5, dtype=torch.float64), 0.5)
    assert k.c_skip.item() == pytest.approx(0.5)
    assert k.c_out.item() == pytest.approx(0.25 / 0.5**0.5)
    assert k.c_in.item() == pytest.approx(1 / 0.5**0.5)
    assert k.c_noise.item() == pytest.approx(torch.log(torch.tensor(0.5)).item() / 4)


class _Half(nn.Module):
    """A bf16 'network' predicting eps = 0.5 x."""

    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.tensor(0.5, dtype=torch.bfloat16))

    def forward(self, x, c_noise):
        assert x.dtype == torch.bfloat16 and c_noise.shape == (x.shape[0],)
        return self.w * x


def test_denoiser_returns_float32_for_a_bf16_net():
    d = Denoiser(_Half(), get_schedule("linear"), "eps")
    x = torch.randn(3, 1, 4, 4)
    out = d(x, 0.5)
    assert out.x0.dtype == torch.float32 and out.eps.dtype == torch.float32
    c = get_schedule("linear").coefs(torch.tensor(0.5), 4)
    torch.testing.assert_close(out.x0, (x - c.sigma.float() * out.eps) / c.alpha.float())


def test_denoiser_learned_variance_and_shape_checks():
    def net(x, c_noise):
        return torch.cat([x, x], 1)

    d = Denoiser(net, get_schedule("linear"), "eps", learn_sigma=True)
    out = d(torch.randn(2, 3, 4, 4), torch.tensor([0.2, 0.4]))
    assert out.var_output.shape == (2, 3, 4, 4)
    with pytest.raises(ValueError, match="learn_sigma=True"):
        Denoiser(net, get_schedule("linear"), "eps")(torch.randn(2, 3, 4, 4), 0.5)
    with pytest.raises(ValueError, match=r"t must be a scalar or shaped \(2,\)"):
        d(torch.randn(2, 3, 4, 4), torch.tensor([0.1, 0.2, 0.3]))
    with pytest.raises(ValueError, match="unknown prediction type 'noise'.*valid"):
        Denoiser(net, get_schedule("linear"), "noise")
