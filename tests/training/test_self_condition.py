"""Self-conditioning in training (Chen et al. 2023, Alg. 1): half the batches see the network's
own first estimate, made without gradients; a tiny run trains, stores it and samples."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from pixdiff.cli.main import main
from pixdiff.conditioning import Cond
from pixdiff.config import DiffusionConfig
from pixdiff.denoiser import Denoiser
from pixdiff.nets import build_net, preset
from pixdiff.schedule_registry import get_schedule
from pixdiff.training.losses import diffusion_loss
from pixdiff.training.self_condition import training_cond

pytestmark = pytest.mark.usefixtures("one_thread")


def tiny(self_condition: bool) -> Denoiser:
    torch.manual_seed(0)
    cfg = preset(
        "unet-tiny", in_channels=1, out_channels=1, image_size=8, attention_resolutions=(4,),
        dropout=0.0, **({"self_condition": True} if self_condition else {}),
    )  # fmt: skip
    net = build_net(cfg)
    with torch.no_grad():  # leave the zero-init: the estimate must be non-zero to be seen
        for p in net.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return Denoiser(net, get_schedule("linear"), "eps")


def batch(n=8):
    g = torch.Generator().manual_seed(1)
    x_t = torch.randn(n, 1, 8, 8, generator=g)
    return x_t, torch.full((n,), 0.5, dtype=torch.float64)


def test_a_plain_network_draws_nothing_and_gets_its_cond_back():
    den, (x_t, t) = tiny(False), batch()
    gen = torch.Generator().manual_seed(3)
    state = gen.get_state()
    cond = Cond(label=torch.zeros(8, dtype=torch.long))
    assert training_cond(den, x_t, t, cond, gen) is cond
    assert torch.equal(gen.get_state(), state)


def test_half_the_batches_see_their_own_first_estimate_without_gradients():
    den, (x_t, t) = tiny(True), batch()
    gen = torch.Generator().manual_seed(0)
    first = den(x_t, t).x0  # zeros as the previous estimate
    given = []
    for _ in range(400):
        cond = training_cond(den, x_t, t, None, gen)
        if cond is not None:
            assert not cond.self_cond.requires_grad  # the paper's stop-gradient
            torch.testing.assert_close(cond.self_cond, first.detach())
        given.append(cond is not None)
    # one coin per batch, p = 1/2: 400 draws lie within 5 standard deviations (0.125)
    assert abs(np.mean(given) - 0.5) < 0.125
    assert first.abs().max() > 0  # a real estimate, not zeros


def test_the_loss_backpropagates_whether_or_not_a_batch_gets_an_estimate():
    """Over seeds that give both kinds of batch, gradients reach every weight, finite."""
    den = tiny(True)
    x0 = torch.linspace(-1, 1, 64).reshape(1, 1, 8, 8).repeat(4, 1, 1, 1)
    cfg = DiffusionConfig(self_condition=True)
    calls = []
    den.net.register_forward_hook(lambda m, args, out: calls.append(torch.is_grad_enabled()))
    for seed in range(8):
        den.zero_grad()
        gen = torch.Generator().manual_seed(seed)
        diffusion_loss(den, x0, None, cfg=cfg, generator=gen).backward()
        assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in den.parameters())
    # 8 passes with gradients; each extra first-estimate pass ran without them
    assert calls.count(True) == 8 and 0 < calls.count(False) < 8


# ----------------------------------------------------------------------------- the CLI

TINY = [
    "--preset", "unet-tiny", "--batch-size", "8", "--image-size", "16", "--steps", "3",
    "--no-progress", "--set", "run.sample_every=0", "--set", "run.threads=1",
    "--set", "optim.warmup_steps=2", "--set", "model.overrides.attention_resolutions=[8]",
]  # fmt: skip


@pytest.fixture(scope="module")
def data(tmp_path_factory, image_folder):
    return image_folder(tmp_path_factory.mktemp("sc") / "imgs", 16, 16, ["cat", "dog"])


def test_a_tiny_self_conditioned_run_trains_stores_it_and_samples(data, tmp_path):
    out = tmp_path / "run"
    flag = ["--set", "diffusion.self_condition=true"]
    assert main(["train", "--data", str(data), "--out", str(out), *TINY, *flag]) == 0
    config = json.loads((out / "config.json").read_text())
    assert config["net"]["self_condition"] is True
    assert config["train"]["diffusion"]["self_condition"] is True
    for name, extra in (("seq", []), ("par", ["--parallel", "picard"])):
        args = ["sample", str(out), "-n", "2", "--steps", "3", "--class", "dog", "--no-progress"]
        assert main([*args, "--out", str(tmp_path / name), *extra]) == 0
        assert Image.open(tmp_path / name / "000000.png").size == (16, 16)


def test_distilling_a_self_conditioned_teacher_is_refused_in_one_line(data, tmp_path, capsys):
    out = tmp_path / "teacher"
    flag = ["--set", "diffusion.self_condition=true"]
    assert main(["train", "--data", str(data), "--out", str(out), *TINY, *flag]) == 0
    args = ["distill", str(out), "--method", "progressive", "--out", str(tmp_path / "student")]
    assert main([*args, "--batch-size", "4", "--no-progress", "--set", "run.threads=1"]) == 2
    err = capsys.readouterr().err.strip()
    assert "self-conditioned teacher" in err and len(err.splitlines()) == 1, err
    assert not (tmp_path / "student").exists()


def test_a_plain_run_has_no_self_conditioning(data, tmp_path):
    out = tmp_path / "plain"
    assert main(["train", "--data", str(data), "--out", str(out), *TINY]) == 0
    config = json.loads((out / "config.json").read_text())
    assert config["net"]["self_condition"] is False
    assert config["train"]["diffusion"]["self_condition"] is False


def test_the_network_override_is_refused_in_one_line(data, tmp_path, capsys):
    flag = ["--set", "model.overrides.self_condition=true"]
    assert main(["train", "--data", str(data), "--out", str(tmp_path / "x"), *TINY, *flag]) != 0
    err = capsys.readouterr().err.strip()
    assert "diffusion.self_condition=true" in err and len(err.splitlines()) == 1, err
