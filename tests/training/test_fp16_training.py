"""fp16 training with loss scaling (``pixdiff train --precision fp16``): the scaler's state is
in the checkpoint, and a run cut in two and resumed ends bit-identical to one run straight
through, scaler included. On the CPU, torch's fp16 autocast stands in for a GPU's."""

import json

import pytest
import torch

from pixdiff.checkpoint import CheckpointError, read_tensors, save_tensors
from pixdiff.cli.main import main
from pixdiff.config import RunConfig, TrainConfig
from pixdiff.train_state import restore_checkpoint, save_checkpoint
from pixdiff.training.loss_scaling import grad_scaler

TINY = [
    "--preset", "unet-tiny", "--batch-size", "8", "--image-size", "16", "--no-progress",
    "--set", "run.sample_every=0", "--set", "run.threads=1", "--set", "optim.warmup_steps=1",
    "--set", "model.overrides.attention_resolutions=[8]", "--set", "run.checkpoint_every=100",
]  # fmt: skip


@pytest.fixture(autouse=True, scope="module")
def _one_thread(one_thread):
    """Single-threaded (tests/conftest.py)."""


@pytest.fixture(scope="module")
def data(tmp_path_factory, image_folder):
    return image_folder(tmp_path_factory.mktemp("imgs") / "imgs", 16, 16, ["cat", "dog"])


def train(data, out, steps: int, *extra: str) -> None:
    argv = ["train", "--data", str(data), "--out", str(out), "--steps", str(steps), *TINY]
    assert main([*argv, *extra]) == 0


def scaler_of(run) -> dict:
    return json.loads(read_tensors(run / "train_state.safetensors")[1]["loss_scaler"])


def test_fp16_run_resumes_bit_exactly_with_its_loss_scaler(data, tmp_path):
    train(data, tmp_path / "straight", 4, "--precision", "fp16", "--lr", "1e-3")
    train(data, tmp_path / "cut", 2, "--precision", "fp16", "--lr", "1e-3")
    halfway = scaler_of(tmp_path / "cut")
    assert halfway["_growth_tracker"] == 2  # two good steps at the initial scale
    train(data, tmp_path / "cut", 4, "--resume")
    config = json.loads((tmp_path / "cut" / "config.json").read_text())["train"]
    assert config["run"]["precision"] == "fp16" and config["optim"]["lr"] == 1e-3  # --lr stored
    straight, resumed = scaler_of(tmp_path / "straight"), scaler_of(tmp_path / "cut")
    assert straight == resumed and resumed["_growth_tracker"] == 4  # went on from 2, not 0
    for name in ("model.safetensors", "ema.safetensors"):
        a, b = (
            read_tensors(tmp_path / "straight" / name)[0],
            read_tensors(tmp_path / "cut" / name)[0],
        )
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), name


def test_scaler_state_round_trips_exactly_and_a_bad_one_is_named(tmp_path):
    net = torch.nn.Linear(2, 2)
    opt = torch.optim.AdamW(net.parameters())
    scaler = torch.amp.GradScaler("cpu", init_scale=1234.5, growth_interval=7)
    scaler.load_state_dict({**scaler.state_dict(), "_growth_tracker": 5})
    gen = torch.Generator().manual_seed(0)
    save = {"net": net, "ema": torch.nn.Linear(2, 2), "optimizer": opt, "generator": gen}
    save_checkpoint(tmp_path, **save, step=3, config={}, scaler=scaler)
    fresh = torch.amp.GradScaler("cpu")
    assert restore_checkpoint(tmp_path, **save, scaler=fresh) == 3
    assert fresh.state_dict() == scaler.state_dict()  # scale, tracker, factors, interval
    state = tmp_path / "train_state.safetensors"
    tensors, meta = read_tensors(state)
    for bad in ('{"scale": -1, "_growth_tracker": 0}', "not json"):
        save_tensors(state, tensors, {**meta, "loss_scaler": bad})
        with pytest.raises(CheckpointError, match="malformed entry loss_scaler"):
            restore_checkpoint(tmp_path, **save, scaler=torch.amp.GradScaler("cpu"))


def test_an_fp32_run_has_no_scaler_and_resumes_into_fp16(data, tmp_path):
    train(data, tmp_path / "run", 1)
    assert "loss_scaler" not in read_tensors(tmp_path / "run" / "train_state.safetensors")[1]
    train(data, tmp_path / "run", 2, "--resume", "--precision", "fp16")  # run.* may change
    assert scaler_of(tmp_path / "run")["scale"] > 0


def test_no_loss_scaler_on_the_device_is_one_line(monkeypatch):
    cfg = TrainConfig(run=RunConfig(precision="fp16"))
    assert isinstance(grad_scaler(cfg, torch.device("cpu")), torch.amp.GradScaler)
    assert grad_scaler(TrainConfig(), torch.device("cpu")) is None  # fp32: nothing to scale

    class Disabled(torch.amp.GradScaler):  # as torch makes one where it has none
        def is_enabled(self) -> bool:
            return False

    monkeypatch.setattr(torch.amp, "GradScaler", Disabled)
    with pytest.raises(ValueError, match="^fp16 training needs loss scaling.*bf16 or fp32$"):
        grad_scaler(cfg, torch.device("cpu"))
