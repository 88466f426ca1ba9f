"""Learned variance (Nichol & Dhariwal 2021): the hybrid loss, its config, and a tiny CLI run."""

from __future__ import annotations

import csv
import json
import math

import numpy as np
import pytest
import torch
from PIL import Image

import pixdiff
from pixdiff.checkpoint import CheckpointError, read_tensors
from pixdiff.cli.main import main
from pixdiff.config import DiffusionConfig, TrainConfig, apply_overrides
from pixdiff.denoiser import Denoiser
from pixdiff.discrete_schedules import DiscreteSchedule
from pixdiff.training import trainer
from pixdiff.training.losses import diffusion_loss, vlb_loss

HYBRID = DiffusionConfig(learn_sigma=True)


class Raw:
    """A 'network' returning a fixed leaf tensor (mean and variance channels), so gradients of
    a loss with respect to each half of the output can be read off directly."""

    def __init__(self, out: torch.Tensor):
        self.out = out

    def __call__(self, x_in, c_noise):
        return self.out


def images(n: int = 4) -> torch.Tensor:
    k = torch.randint(0, 256, (n, 1, 4, 4), generator=torch.Generator().manual_seed(0))
    return k / 127.5 - 1


@pytest.mark.parametrize("index", [0, 1, 500, 999])
def test_vlb_term_trains_only_the_variance_and_is_finite(index):
    """L_vlb sees the mean through a stop-gradient (Nichol & Dhariwal 2021, Sec. 3.1): its
    gradient reaches only the variance channels; at the decoder step (t = 1, index 0) and the
    last step (t = T) it is finite, as is its gradient."""
    schedule = DiscreteSchedule("linear", 1000)
    x0 = images()
    out = torch.randn(4, 2, 4, 4, generator=torch.Generator().manual_seed(1)).requires_grad_(True)
    d = Denoiser(Raw(out), schedule, "eps", learn_sigma=True)
    t = torch.full((4,), (index + 1) / 1000, dtype=torch.float64)
    noise = torch.randn(x0.shape, generator=torch.Generator().manual_seed(2))
    x_t = pixdiff.q_sample(schedule, x0, t, noise)
    loss = vlb_loss(schedule, x0, x_t, t, d(x_t, t)).mean()
    (grad,) = torch.autograd.grad(loss, out)
    assert torch.isfinite(loss) and torch.isfinite(grad).all()
    assert torch.equal(grad[:, :1], torch.zeros_like(grad[:, :1]))  # the mean: none
    assert grad[:, 1:].abs().sum() > 0  # the variance: some


@pytest.mark.parametrize("index", [1, 10, 100])
def test_vlb_term_is_minimised_by_the_true_posterior_variance(index):
    """Given the exact mean (a model whose eps is the true noise), KL(q || p) vanishes exactly
    when p's variance is q's, beta~_t, i.e. the variance output v = -1 (Eq. 15); at v = 0 (the
    geometric mean of beta~ and beta) it is positive and its gradient pushes v down."""
    schedule = DiscreteSchedule("linear", 1000)
    x0 = images().double()
    noise = torch.randn(x0.shape, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    t = torch.full((4,), (index + 1) / 1000, dtype=torch.float64)
    x_t = pixdiff.q_sample(schedule, x0, t, noise)
    for v, sign in ((-1.0, 0), (0.0, 1)):
        var = torch.full_like(x0, v).requires_grad_(True)
        d = Denoiser(Raw(torch.cat([noise, var], 1)), schedule, "eps", learn_sigma=True)
        loss = vlb_loss(schedule, x0, x_t, t, d(x_t, t)).mean()
        (grad,) = torch.autograd.grad(loss, var)
        if sign == 0:
            assert abs(loss.item()) < 1e-9 and grad.abs().max() < 1e-9
        else:
            assert loss.item() > 1e-6 and (grad > 0).all()


def test_hybrid_loss_is_l_simple_plus_the_weighted_vlb():
    """L_hybrid = L_simple + lambda L_vlb (Eq. 16): the hybrid loss's gradient on the mean
    channels is L_simple's alone, and lambda = 0 leaves L_simple."""
    schedule = DiscreteSchedule("linear", 1000)
    out = torch.randn(4, 2, 4, 4, generator=torch.Generator().manual_seed(1)).requires_grad_(True)
    d = Denoiser(Raw(out), schedule, "eps", learn_sigma=True)
    plain = DiffusionConfig()

    def loss(cfg):
        return diffusion_loss(
            d, images(), None, cfg=cfg, generator=torch.Generator().manual_seed(3)
        )

    (g_hybrid,) = torch.autograd.grad(loss(HYBRID), out)
    (g_simple,) = torch.autograd.grad(loss(plain), out)
    torch.testing.assert_close(g_hybrid[:, :1], g_simple[:, :1])
    assert g_simple[:, 1:].abs().sum() == 0 and g_hybrid[:, 1:].abs().sum() > 0
    no_vlb = DiffusionConfig(learn_sigma=True, vlb_weight=0.0)
    torch.testing.assert_close(loss(no_vlb), loss(plain))


def test_config_refuses_learn_sigma_without_a_discrete_schedule(tmp_path):
    with pytest.raises(ValueError, match="learn_sigma needs a discrete beta schedule"):
        apply_overrides(
            TrainConfig(), ['diffusion.schedule={"kind": "edm"}', "diffusion.learn_sigma=true"]
        )
    with pytest.raises(ValueError, match="time_sampling 'uniform'"):
        apply_overrides(
            TrainConfig(), ['diffusion.time_sampling="log-normal"', "diffusion.learn_sigma=true"]
        )
    cfg = apply_overrides(TrainConfig(), ["model.overrides.learn_sigma=true"])
    with pytest.raises(trainer.TrainingError, match="set diffusion.learn_sigma"):
        trainer.net_config_for(cfg, _Data())


class _Data:
    """What net_config_for reads of a dataset."""

    images = torch.zeros(1, 1, 28, 28)
    labels = None
    captions = None
    num_classes = 0


def test_learned_sigma_run_trains_loads_and_samples(tmp_path, capsys):
    root = tmp_path / "imgs"
    root.mkdir()
    rng = np.random.default_rng(0)
    for i in range(8):
        Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)).save(root / f"{i}.png")
    run = tmp_path / "run"
    args = ["train", "--data", str(root), "--out", str(run), "--preset", "unet-tiny"]
    args += ["--formulation", "ddpm", "--image-size", "8", "--steps", "3", "--batch-size", "4"]
    for s in (
        "diffusion.learn_sigma=true",
        "run.sample_every=0",
        "run.log_every=1",
        "run.threads=1",
    ):
        args += ["--set", s]
    args += ["--set", "model.overrides.attention_resolutions=[4]", "--no-progress"]
    assert main(args) == 0
    with (run / "log.csv").open() as f:
        losses = [float(r["loss"]) for r in csv.DictReader(f)]
    assert len(losses) == 3 and all(math.isfinite(v) for v in losses)
    # the zero-initialised variance half of the output conv was trained (by L_vlb alone)
    weights, _ = read_tensors(run / "model.safetensors")
    assert weights["out.2.weight"].shape[0] == 6 and weights["out.2.weight"][3:].abs().sum() > 0
    model = pixdiff.load(run)
    assert model.denoiser.learn_sigma and model.net.config.learn_sigma
    out = model.denoiser(torch.zeros(2, 3, 8, 8), torch.tensor(0.5))
    assert out.var_output is not None and out.var_output.shape == (2, 3, 8, 8)
    edited = json.loads((run / "config.json").read_text())
    del edited["checksum"]  # how a hand edit is accepted (RELIABILITY.md)
    edited["train"]["diffusion"]["learn_sigma"] = False
    (run / "config.json").write_text(json.dumps(edited))
    with pytest.raises(CheckpointError, match="learn_sigma"):
        pixdiff.load(run)
    edited["train"]["diffusion"]["learn_sigma"] = True
    (run / "config.json").write_text(json.dumps(edited))
    samples = tmp_path / "samples"
    code = main(
        ["sample", str(run), "--sampler", "ddpm-learned", "--steps", "4", "-n", "2"]
        + ["--out", str(samples), "--no-progress"]
    )
    assert code == 0, capsys.readouterr().err
    assert Image.open(samples / "000001.png").size == (8, 8)
