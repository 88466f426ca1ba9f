"""Losses of every formulation, time sampling, EMA, and the NaN guard (the weightings:
test_weightings.py)."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch
from PIL import Image

from pixdiff.checkpoint import read_tensors
from pixdiff.config import FORMULATIONS, DiffusionConfig, TrainConfig, apply_overrides
from pixdiff.denoiser import Denoiser
from pixdiff.discrete_schedules import DiscreteSchedule
from pixdiff.nets import build_net, preset
from pixdiff.schedule_registry import schedule_from_dict
from pixdiff.training import trainer
from pixdiff.training.ema import EMA
from pixdiff.training.losses import diffusion_loss, sample_time


@pytest.mark.parametrize("name", sorted(FORMULATIONS))
def test_every_formulation_trains(name):
    """A tiny net on a fixed batch: the loss of each formulation falls well below its start."""
    torch.manual_seed(0)
    cfg = FORMULATIONS[name]
    net = build_net(
        preset(
            "unet-tiny",
            in_channels=1,
            out_channels=1,
            image_size=8,
            attention_resolutions=(4,),
            dropout=0.0,
        )
    )
    d = Denoiser(net, schedule_from_dict(cfg.schedule), cfg.prediction, sigma_data=0.5)
    x0 = torch.linspace(-1, 1, 64).reshape(1, 1, 8, 8).repeat(8, 1, 1, 1)
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)

    def loss_now(seed):
        return diffusion_loss(d, x0, None, cfg=cfg, generator=torch.Generator().manual_seed(seed))

    with torch.no_grad():
        start = sum(loss_now(s).item() for s in range(8))
    for step in range(120):
        loss = loss_now(100 + step)
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        end = sum(loss_now(s).item() for s in range(8))
    assert end < 0.5 * start, (name, start, end)


def test_time_sampling_distributions():
    g = torch.Generator().manual_seed(0)
    disc = DiscreteSchedule()
    t = sample_time(DiffusionConfig(), disc, 20000, g)
    idx = disc.timestep(t).round()
    assert idx.min() == 0 and idx.max() == 999
    torch.testing.assert_close(disc.timestep(t), idx, rtol=0, atol=1e-9)  # exact nodes
    edm = FORMULATIONS["edm"]
    t = sample_time(edm, schedule_from_dict(edm.schedule), 20000, g)
    log_sigma = torch.log(80 * t)
    assert abs(log_sigma.mean().item() + 1.2) < 0.05 and abs(log_sigma.std().item() - 1.2) < 0.05
    flow = FORMULATIONS["flow"]
    t = sample_time(flow, schedule_from_dict(flow.schedule), 20000, g)
    logit = torch.log(t / (1 - t))
    assert abs(logit.mean().item()) < 0.05 and abs(logit.std().item() - 1) < 0.05


def test_ema_warmup_and_tracking():
    net = torch.nn.Linear(2, 2)
    ema = EMA(net, decay=0.99)
    assert ema.current_decay(0) == pytest.approx(0.1) and ema.current_decay(10**6) == 0.99
    with torch.no_grad():
        net.weight.fill_(1.0)
    for n in range(2000):
        ema.update(net, n)
    torch.testing.assert_close(ema.module.weight, torch.ones(2, 2), rtol=0, atol=1e-6)


def test_lr_warmup_then_cosine():
    cfg = apply_overrides(
        TrainConfig(),
        ["optim.warmup_steps=10", 'optim.lr_schedule="cosine"', "run.steps=110", "optim.lr=1.0"],
    )
    assert trainer.lr_at(0, cfg) == pytest.approx(0.1) and trainer.lr_at(9, cfg) == 1.0
    assert trainer.lr_at(60, cfg) == pytest.approx(0.5) and trainer.lr_at(110, cfg) == 0


@pytest.fixture
def folder(tmp_path):
    root = tmp_path / "imgs"
    root.mkdir()
    for i in range(8):
        Image.new("RGB", (8, 8), (30 * i, 0, 0)).save(root / f"{i}.png")
    return root


def tiny_cfg(folder, *extra):
    return apply_overrides(
        TrainConfig(),
        [
            f"data.name={folder}",
            "data.image_size=8",
            'model.preset="unet-tiny"',
            "model.overrides.attention_resolutions=[4]",
            "optim.batch_size=4",
            "run.sample_every=0",
            "run.log_every=1",
            "run.threads=1",
            *extra,
        ],
    )


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(folder, tmp_path, monkeypatch):
    real = trainer.diffusion_loss
    calls = {"n": 0}

    def poisoned(*args, **kwargs):
        calls["n"] += 1
        loss = real(*args, **kwargs)
        return loss * float("nan") if calls["n"] == 4 else loss

    monkeypatch.setattr(trainer, "diffusion_loss", poisoned)
    cfg = tiny_cfg(folder, "run.steps=10", "run.checkpoint_every=2")
    with pytest.raises(trainer.TrainingError, match="at step 4; the last good checkpoint"):
        trainer.train(cfg, tmp_path / "run", progress=False)
    assert read_tensors(tmp_path / "run" / "train_state.safetensors")[1]["step"] == "2"
    monkeypatch.setattr(trainer, "diffusion_loss", real)
    trainer.train(cfg, tmp_path / "run", resume=True, progress=False)
    assert read_tensors(tmp_path / "run" / "train_state.safetensors")[1]["step"] == "10"


@pytest.mark.parametrize("net", ["dit-tiny", "unet-tiny"])
@pytest.mark.parametrize("formulation", ["edm", "flow"])
def test_presets_and_formulations_train_through_the_same_path(folder, tmp_path, net, formulation):
    cfg = replace(
        tiny_cfg(folder, "run.steps=2", f'model.preset="{net}"'),
        diffusion=FORMULATIONS[formulation],
    )
    if net == "dit-tiny":
        cfg = apply_overrides(cfg, ['model.overrides={"patch_size": 2}'])
    cfg = apply_overrides(cfg, ["run.sample_every=2"])
    run = trainer.train(cfg, tmp_path / "run", progress=False)
    assert read_tensors(run / "ema.safetensors")[1]["step"] == "2"
    grid = Image.open(run / "samples" / "step_0000002.png")  # 8x8 grid of 8px images, 2x scale
    assert grid.size == (2 * (8 * 10 + 2), 2 * (8 * 10 + 2))
