"""Diffusion-DPO's loss (Wallace et al. 2024, Eq. 14) and DreamBooth's batches (Ruiz et al.
2023) (issue #19): log 2 when the model is its reference, a gradient that prefers lowering the
preferred image's error, and prior-preservation batches in the set ratio."""

import math

import pytest
import torch

from pixdiff.config import DiffusionConfig
from pixdiff.data import ImageSet
from pixdiff.denoiser import Denoiser
from pixdiff.schedule_registry import get_schedule
from pixdiff.training.dreambooth import mixed_batches
from pixdiff.training.preference import dpo_loss, dpo_objective


def test_dpo_objective_is_log2_at_the_reference_and_prefers_the_chosen():
    err = torch.tensor([0.3, 0.8, 0.1])
    model_w = err.clone().requires_grad_(True)
    model_l = (err + 0.2).requires_grad_(True)
    loss = dpo_objective(model_w, model_l, err, err + 0.2, beta=100.0)
    assert loss.item() == pytest.approx(math.log(2), abs=1e-7)
    loss.backward()
    # descent lowers the preferred image's error and raises the rejected one's: d/de_w > 0
    assert (model_w.grad > 0).all() and (model_l.grad < 0).all()
    # exactly -(d/dx log sigmoid(x)) * d inside / d e_w = 0.5 * 0.5 * beta / N
    torch.testing.assert_close(model_w.grad, torch.full((3,), 0.25 * 100 / 3))
    # a model better than its reference on the chosen image has a lower loss
    better = dpo_objective(err - 0.01, err + 0.2, err, err + 0.2, beta=100.0)
    assert better.item() < math.log(2)


class Linear(torch.nn.Module):
    """A tiny eps-network with one weight: enough for the sign of the gradient."""

    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.tensor(0.5))

    def forward(self, x, c_noise, cond=None):
        return self.w * x


def test_dpo_loss_on_a_network_is_log2_when_it_is_its_reference():
    schedule = get_schedule("linear")
    model = Denoiser(Linear(), schedule, "eps")
    reference = Denoiser(Linear().requires_grad_(False), schedule, "eps")
    x_w, x_l = torch.randn(4, 1, 4, 4), torch.randn(4, 1, 4, 4)
    g = torch.Generator().manual_seed(0)
    loss, acc = dpo_loss(model, reference, x_w, x_l, None, cfg=DiffusionConfig(), beta=50.0,
                         generator=g)  # fmt: skip
    assert loss.item() == pytest.approx(math.log(2), abs=1e-6)
    loss.backward()
    assert model.net.w.grad is not None and acc == 0.0


def test_prior_preservation_batches_mix_in_the_set_ratio():
    inst = ImageSet(torch.zeros(3, 1, 4, 4, dtype=torch.uint8), captions=["a sks emoji"] * 3)
    prior = ImageSet(torch.full((10, 1, 4, 4), 255, dtype=torch.uint8),
                     captions=["an emoji"] * 10)  # fmt: skip
    for share, n_prior in ((0.5, 4), (0.25, 2), (0.75, 6)):
        stream = mixed_batches(inst, prior, batch_size=8, prior_share=share, seed=0)
        for _ in range(5):
            b = next(stream)
            assert b.images.shape[0] == 8
            assert b.captions.count("an emoji") == n_prior
            assert (b.images[:n_prior] == 1).all() and (b.images[n_prior:] == -1).all()
    with pytest.raises(ValueError, match="no class image"):
        next(mixed_batches(inst, prior, batch_size=2, prior_share=0.1, seed=0))
    # resumable: batch k is the same whether the stream started at 0 or at k
    a = mixed_batches(inst, prior, batch_size=8, prior_share=0.5, seed=3)
    [next(a) for _ in range(3)]
    b = mixed_batches(inst, prior, batch_size=8, prior_share=0.5, seed=3, start_step=3)
    assert next(a).captions == next(b).captions
