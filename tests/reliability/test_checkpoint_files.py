"""Damaged, suspicious or half-written run files give one line naming the file and the entry,
never a traceback and never a silent guess (#14.6); a full disk keeps the last checkpoint; the
SHA-256 checksums of safetensors and JSON files catch what no format check can (a flipped bit)."""

from __future__ import annotations

import errno
import hashlib
import json
import os
import warnings

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save as st_save
from tiny_runs import error_line, full_disk_on, resume_argv, run_main, train_argv

from pixdiff import files
from pixdiff.checkpoint import (
    CheckpointError,
    load,
    read_json,
    read_tensors,
    save_tensors,
    write_json,
)
from pixdiff.files import DiskFullError, atomic_write, remove_orphaned_temps
from pixdiff.shipped import shipped_run


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


def test_a_folder_that_is_not_a_run_is_named_without_the_ema_warning(tmp_path):
    (tmp_path / "photos").mkdir()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the raw-weights warning would mislead here
        with pytest.raises(CheckpointError, match=r"photos/config.json does not exist: .* not a"):
            load(tmp_path / "photos")


# ----------------------------------------------------------------------------- checksums


def flip(path, at: int, bit: int = 0) -> None:
    """Flip one bit of the file (``at`` from the start, or from the end when negative)."""
    data = bytearray(path.read_bytes())
    data[at] ^= 1 << bit
    path.write_bytes(bytes(data))


def test_safetensors_round_trip_with_the_sha256_of_their_content(tmp_path):
    path = tmp_path / "w.safetensors"
    tensors = {
        "a": torch.randn(3, 5),
        "b": torch.arange(7),
        "c": torch.randn(4, dtype=torch.float64).to(torch.bfloat16),
    }
    save_tensors(path, tensors, {"step": "12"})
    back, meta = read_tensors(path)
    assert meta == {"step": "12"} and all(torch.equal(back[k], v) for k, v in tensors.items())
    # the stored checksum is SHA-256 over the canonical header without it, then the tensor bytes
    data = path.read_bytes()
    n = int.from_bytes(data[:8], "little")
    header = json.loads(data[8 : 8 + n])
    stored = header["__metadata__"].pop("checksum")
    canonical = json.dumps(header, sort_keys=True, separators=(",", ":")).encode()
    assert stored == "sha256:" + hashlib.sha256(canonical + data[8 + n :]).hexdigest()
    assert (8 + n) % 8 == 0  # tensor data stays aligned as safetensors writes it
    assert safetensors_metadata(path) == {"step": "12", "checksum": stored}  # still safetensors


def safetensors_metadata(path) -> dict:
    with safe_open(path, framework="pt") as f:
        return f.metadata()


@pytest.mark.parametrize("where", ["tensor data", "metadata value", "checksum"])
def test_a_flipped_bit_in_a_safetensors_file_is_refused_naming_the_file(tmp_path, where):
    path = tmp_path / "w.safetensors"
    save_tensors(path, {"a": torch.randn(64)}, {"step": "12"})
    text = path.read_bytes()
    at = {
        "tensor data": len(text) - 100,  # inside a's float32 data: still a valid file
        "metadata value": text.index(b'"12"') + 1,  # step 12 -> 02
        "checksum": text.index(b"sha256:") + 20,
    }[where]
    flip(path, at)
    with safe_open(path, framework="pt") as f:  # safetensors alone would load it
        assert f.get_tensor("a").shape == (64,)
    with pytest.raises(CheckpointError) as e:
        read_tensors(path)
    assert str(e.value).startswith(f"{path}: checksum mismatch, the file is damaged; ")
    assert "\n" not in str(e.value)


def test_safetensors_written_before_checksums_load_as_before(tmp_path):
    path = tmp_path / "old.safetensors"
    tensors = {"a": torch.randn(3), "b": torch.ones(2, dtype=torch.bfloat16)}
    path.write_bytes(st_save(tensors, metadata={"step": "3"}))
    back, meta = read_tensors(path)
    assert meta == {"step": "3"} and all(torch.equal(back[k], v) for k, v in tensors.items())
    flip(path, -1)  # without a checksum a flipped bit is not caught: why there is one now
    assert not torch.equal(read_tensors(path)[0]["b"], tensors["b"])


def test_the_shipped_models_have_no_checksum_and_load(tmp_path):
    run = shipped_run("fashion")
    assert "checksum" not in safetensors_metadata(run / "ema.safetensors")
    assert "checksum" not in json.loads((run / "config.json").read_text())
    model = load(run)
    assert model.net.config.image_size == 28
    assert next(model.net.parameters()).dtype == torch.float32  # bf16 on disk, cast on load


def test_a_damaged_run_file_is_one_line_naming_it_from_sample_and_resume(run_copy, capsys):
    ema = run_copy / "ema.safetensors"
    flip(ema, -5, bit=3)
    out = run_copy.parent / "out"
    argv = ["sample", str(run_copy), "-n", "1", "--steps", "1", "--out", str(out), "--no-progress"]
    code, err = run_main(capsys, argv)
    assert code == 2 and f"{ema}: checksum mismatch, the file is damaged" in error_line(err)
    flip(ema, -5, bit=3)  # repaired
    state = run_copy / "train_state.safetensors"
    flip(state, -5)
    code, err = run_main(capsys, resume_argv(run_copy, "--steps", "3"))
    assert code == 2 and f"{state}: checksum mismatch, the file is damaged" in error_line(err)


def test_json_files_carry_a_checksum_that_ignores_formatting(tmp_path):
    path = tmp_path / "config.json"
    obj = {"train": {"lr": 1e-4, "steps": 3, "names": ("a", "b")}, "net": {"type": "unet"}}
    write_json(path, obj)
    doc = json.loads(path.read_text())
    assert list(doc)[-1] == "checksum" and doc["checksum"].startswith("sha256:")
    lists = {"train": {"lr": 1e-4, "steps": 3, "names": ["a", "b"]}, "net": {"type": "unet"}}
    assert read_json(path) == lists  # what a reader sees: tuples as lists, no checksum
    # re-indented, keys reordered, 1e-4 spelled 0.0001: the same content, accepted
    doc["train"] = {"steps": 3, "names": ["a", "b"], "lr": 0.0001}
    path.write_text(json.dumps(dict(reversed(doc.items()))))
    assert read_json(path)["train"]["lr"] == 1e-4


def test_a_hand_edited_config_json_is_refused_until_its_checksum_is_deleted(run_copy):
    path = run_copy / "config.json"
    doc = json.loads(path.read_text())
    doc["train"]["diffusion"]["sigma_data"] = 0.25  # an edit a bit flip could also make
    path.write_text(json.dumps(doc, indent=2))
    with pytest.raises(CheckpointError) as e:
        load(run_copy)
    assert str(e.value) == (
        f"{path}: checksum mismatch, the file is damaged or was edited by hand; to keep your "
        'edits delete its "checksum" entry, else restore the file from a copy'
    )
    del doc["checksum"]  # what the message says: the edit is accepted deliberately
    path.write_text(json.dumps(doc, indent=2))
    assert load(run_copy).denoiser.sigma_data == 0.25
