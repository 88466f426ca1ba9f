"""The loss space (JiT, Li & He 2025): x0-prediction trained with a flow-velocity loss, and every
prediction type measured in another type's space."""

from __future__ import annotations

import math

import pytest
import torch

from pixdiff.config import DiffusionConfig, TrainConfig, apply_overrides
from pixdiff.denoiser import Denoiser
from pixdiff.prediction import target_from_x0_eps
from pixdiff.schedule_registry import get_schedule
from pixdiff.schedules import q_sample
from pixdiff.training.loss_space import MAX_ABS_LOG_SNR, clamped_times, in_loss_space
from pixdiff.training.losses import diffusion_loss, distance, sample_time


def _batch(t: list[float], seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    x0 = torch.rand(len(t), 1, 4, 4, generator=gen, dtype=torch.float64) * 2 - 1
    eps = torch.randn(len(t), 1, 4, 4, generator=gen, dtype=torch.float64)
    out = torch.randn(len(t), 1, 4, 4, generator=gen, dtype=torch.float64)
    return x0, eps, out, torch.tensor(t, dtype=torch.float64)


def _denoiser(schedule: str, prediction: str) -> Denoiser:
    return Denoiser(lambda x, c: x, get_schedule(schedule), prediction)


def test_x0_prediction_with_flow_loss_is_jit_velocity_loss():
    """JiT's loss: || (x_t - x0^) / t - (x_t - x0) / t ||^2 = || x0^ - x0 ||^2 / max(t, 0.05)^2
    (t_eps = 0.05 clamps the velocity's 1 / t near the data)."""
    x0, eps, x0_hat, t = _batch([0.01, 0.049, 0.3, 0.7, 0.9])
    d = _denoiser("flow", "x0")
    x_t = q_sample(d.schedule, x0, t, eps)
    cfg = DiffusionConfig(schedule={"kind": "flow"}, prediction="x0", loss_space="flow")
    pred, goal, space = in_loss_space(cfg, d, x0_hat, x0, x_t, t)
    assert space == "flow"
    jit = (x0_hat - x0).flatten(1).pow(2).mean(1) / t.clamp(min=0.05) ** 2
    assert torch.allclose(distance(pred, goal, "mse", 0.0), jit, rtol=1e-12)
    # unclamped, the target is the true velocity eps - x0
    assert torch.allclose(goal[2:], (eps - x0)[2:], atol=1e-12)


@pytest.mark.parametrize(
    ("prediction", "gain"),
    [
        ("x0", lambda a, s: -1 / s),  # u = (x_t - x0) / t
        ("eps", lambda a, s: 1 / a),  # u = (eps - x_t) / (1 - t)
        ("v", lambda a, s: 1 / (a**2 + s**2)),  # v = alpha eps - sigma x0 (Salimans & Ho)
    ],
)
def test_flow_loss_scales_each_prediction_error_by_its_gain(prediction, gain):
    """On the straight path u^ - u = k (out - out*) with k as derived in docs/concepts.md."""
    x0, eps, out, t = _batch([0.2, 0.5, 0.8])
    d = _denoiser("flow", prediction)
    c = d.coefs(t, x0)
    target = target_from_x0_eps(prediction, x0, eps, c)
    x_t = q_sample(d.schedule, x0, t, eps)
    cfg = DiffusionConfig(prediction=prediction, loss_space="flow")
    pred, goal, _ = in_loss_space(cfg, d, out, target, x_t, t)
    k = gain(c.alpha, c.sigma)
    assert torch.allclose(pred - goal, k * (out - target), atol=1e-10)
    assert torch.allclose(goal, eps - x0, atol=1e-10)


@pytest.mark.parametrize("schedule", ["cosine", "flow", "vp-linear"])
@pytest.mark.parametrize("prediction", ["eps", "x0", "v"])
def test_own_space_is_the_plain_loss_and_targets_agree(schedule, prediction):
    """loss_space equal to the prediction type changes nothing; another space's converted target
    is that space's own target (away from the clamp)."""
    x0, eps, out, t = _batch([0.3, 0.5, 0.6])
    d = _denoiser(schedule, prediction)
    c = d.coefs(t, x0)
    target = target_from_x0_eps(prediction, x0, eps, c)
    x_t = q_sample(d.schedule, x0, t, eps)
    same = in_loss_space(DiffusionConfig(loss_space=prediction), d, out, target, x_t, t)
    assert torch.allclose(same[0], out, atol=1e-10) and torch.allclose(same[1], target)
    for space in ("x0", "eps", "v", "flow"):
        goal = in_loss_space(DiffusionConfig(loss_space=space), d, out, target, x_t, t)[1]
        assert torch.allclose(goal, target_from_x0_eps(space, x0, eps, c), atol=1e-10), space
    unchanged = in_loss_space(DiffusionConfig(), d, out, target, x_t, t)
    assert unchanged[0] is out and unchanged[1] is target and unchanged[2] == prediction


def test_clamped_times_bound_the_log_snr_at_jit_t_eps():
    flow = get_schedule("flow")
    t = torch.tensor([0.001, 0.05, 0.3, 0.5, 0.95, 0.999], dtype=torch.float64)
    clamped = clamped_times(flow, t)
    assert torch.allclose(clamped, torch.tensor([0.05, 0.05, 0.3, 0.5, 0.95, 0.95]).double())
    assert torch.equal(clamped[2:4], t[2:4])  # untouched inside the bound: bit for bit
    assert MAX_ABS_LOG_SNR == pytest.approx(2 * math.log(19))
    cosine = get_schedule("cosine")
    lam = cosine.log_snr(clamped_times(cosine, torch.linspace(0.001, 0.999, 50).double()))
    assert lam.abs().max() <= MAX_ABS_LOG_SNR + 1e-6


def test_diffusion_loss_with_flow_space_is_jit_loss_end_to_end():
    """diffusion_loss of a constant x0-predicting net equals JiT's formula on the same draws."""
    x0 = torch.linspace(-1, 1, 16).reshape(1, 1, 4, 4).repeat(6, 1, 1, 1)
    constant = torch.full_like(x0, 0.25)
    d = Denoiser(lambda x, c: constant, get_schedule("flow"), "x0")
    cfg = DiffusionConfig(
        schedule={"kind": "flow"}, prediction="x0", loss_space="flow",
        time_sampling="logit-normal", p_mean=0.8, p_std=0.8,
    )  # fmt: skip
    loss = diffusion_loss(d, x0, None, cfg=cfg, generator=torch.Generator().manual_seed(3))
    gen = torch.Generator().manual_seed(3)
    t = sample_time(cfg, d.schedule, 6, gen).float()
    expected = ((constant - x0).flatten(1).pow(2).mean(1) / t.clamp(min=0.05) ** 2).mean()
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)


def test_unknown_loss_space_lists_the_valid_ones():
    with pytest.raises(ValueError, match=r"\['prediction', 'x0', 'eps', 'v', 'flow'\]"):
        apply_overrides(TrainConfig(), ["diffusion.loss_space=velocity"])
