"""Damaged, suspicious or half-written run files give one line naming the file and the entry,
never a traceback and never a silent guess (#14.6); a full disk keeps the last checkpoint."""

from __future__ import annotations

import errno
import json
import os

import pytest
import torch
from tiny_runs import error_line, full_disk_on, resume_argv, run_main, train_argv

from pixdiff import files
from pixdiff.checkpoint import CheckpointError, load, read_json, read_tensors, save_tensors
from pixdiff.files import DiskFullError, atomic_write, remove_orphaned_temps


def test_atomic_write_keeps_the_old_file_when_the_disk_is_full(tmp_path, monkeypatch):
    path = tmp_path / "model.safetensors"
    path.write_bytes(b"old")

    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(files.os, "fsync", full)
    with pytest.raises(DiskFullError, match="no space left on device while writing .*model"):
        atomic_write(path, b"new")
    monkeypatch.undo()
    assert path.read_bytes() == b"old" and os.listdir(tmp_path) == ["model.safetensors"]


def test_a_full_disk_mid_run_keeps_the_last_checkpoint(tiny_data, tmp_path, monkeypatch, capsys):
    out = tmp_path / "run"
    full_disk_on("train_state.safetensors", monkeypatch, after=2)  # startup, step 1: fine
    argv = train_argv(tiny_data, out, "--set", "run.checkpoint_every=1", steps=4)
    code, err = run_main(capsys, argv)
    line = error_line(err)
    assert code == 2 and "train_state.safetensors; the previous checkpoint is intact" in line
    assert read_tensors(out / "train_state.safetensors")[1]["step"] == "1"
    monkeypatch.undo()
    code, err = run_main(capsys, resume_argv(out))
    assert code == 0, err
    assert read_tensors(out / "train_state.safetensors")[1]["step"] == "4"


def test_only_pixdiffs_orphaned_temp_files_are_removed(run_copy, capsys):
    orphans = [run_copy / ".model.safetensors.ab12cd_9.tmp", run_copy / ".log.csv.zzzzzzzz.tmp"]
    kept = [
        run_copy / "notes.tmp",
        run_copy / ".model.safetensors.tmp",
        run_copy / ".x.ABCDEFGH.tmp",
    ]
    for p in orphans + kept:
        p.write_bytes(b"half")
    assert remove_orphaned_temps(run_copy / "nowhere") == []
    code, err = run_main(capsys, resume_argv(run_copy, "--steps", "3"))
    assert code == 0, err
    assert not any(p.exists() for p in orphans) and all(p.read_bytes() == b"half" for p in kept)


@pytest.mark.parametrize(
    "text, message",
    [
        (None, "config.json: missing or malformed entry train.diffusion"),
        (b"\x8f\x00\xffrandom\x13bytes", "config.json is not valid JSON"),
        (b"[1, 2]", "config.json is not valid JSON for pixdiff"),
        (b'{"net": {"type": "unet"}}', "config.json: missing or malformed entry train"),
    ],
)
def test_a_malformed_config_json_is_one_line(run_copy, text, message):
    path = run_copy / "config.json"
    if text is None:
        config = read_json(path)
        del config["train"]["diffusion"]
        text = json.dumps(config).encode()
    path.write_bytes(text)
    with pytest.raises(CheckpointError) as e:
        load(run_copy)
    assert message in str(e.value) and "\n" not in str(e.value)


def test_resume_refuses_a_config_json_without_its_diffusion_section(run_copy, capsys):
    path = run_copy / "config.json"
    config = read_json(path)
    del config["train"]["diffusion"]
    path.write_text(json.dumps(config))
    code, err = run_main(capsys, resume_argv(run_copy))
    assert code == 2 and f"{path}: missing or malformed entry train.diffusion" in error_line(err)
    path.write_bytes(b"\x8f\x00\xff")
    code, err = run_main(capsys, resume_argv(run_copy))
    assert code == 2 and f"{path} is not valid JSON" in error_line(err)


@pytest.mark.parametrize(
    "damage, entry",
    [
        (lambda t, m: m.pop("step"), "step"),
        (lambda t, m: m.update(step="two"), "step"),
        (lambda t, m: t.pop("rng.torch"), "rng.torch"),
        (lambda t, m: t.update({"rng.noise": t["rng.noise"].float()}), "rng.noise"),
        (lambda t, m: t.update({"rng.noise": t["rng.noise"][:10]}), "rng"),
        (lambda t, m: m.update(param_groups="{"), "param_groups"),
        (lambda t, m: m.update(param_groups="3"), "param_groups"),
    ],
)
def test_a_malformed_train_state_is_one_line(run_copy, capsys, damage, entry):
    path = run_copy / "train_state.safetensors"
    tensors, meta = read_tensors(path)
    damage(tensors, meta)
    save_tensors(path, tensors, meta)
    code, err = run_main(capsys, resume_argv(run_copy, "--steps", "3"))
    assert code == 2 and f"{path}: missing or malformed entry {entry}" in error_line(err)


def poison(path, key_of, value) -> str:
    """Set one element of the first floating tensor (``key_of`` picks the keys) to ``value``."""
    tensors, meta = read_tensors(path)
    key = next(k for k in sorted(tensors) if key_of(k) and tensors[k].is_floating_point())
    tensors[key].view(-1)[0] = value
    save_tensors(path, tensors, meta)
    return key


def test_resume_refuses_nan_in_the_ema_weights(run_copy, capsys):
    path = run_copy / "train_state.safetensors"
    key = poison(path, lambda k: k.startswith("ema."), float("nan"))
    code, err = run_main(capsys, resume_argv(run_copy, "--steps", "3"))
    line = error_line(err)
    assert code == 2 and f"{path} (ema): tensor {key[4:]} holds NaN or infinite" in line


def test_loading_refuses_non_finite_and_non_float_weights(run_copy):
    path = run_copy / "ema.safetensors"
    key = poison(path, lambda k: True, float("inf"))
    with pytest.raises(CheckpointError, match=f"{path}: tensor {key} holds NaN or infinite"):
        load(run_copy)
    tensors, meta = read_tensors(path)
    save_tensors(path, {k: torch.zeros_like(v, dtype=torch.int64) for k, v in tensors.items()})
    with pytest.raises(CheckpointError, match="is torch.int64, not floating point"):
        load(run_copy)


def test_a_run_without_ema_weights_warns_that_the_raw_ones_are_used(run_copy):
    (run_copy / "ema.safetensors").unlink()
    with pytest.warns(UserWarning, match="has no ema.safetensors; sampling from the raw weights"):
        load(run_copy)
