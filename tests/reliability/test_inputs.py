"""What a user can get wrong is one line naming the file or the flag, exit 2 (#14.5): huge
images refused before decoding, undecodable metadata.jsonl and config.json, out-of-range and
wrong-type counts, seeds and devices on every command, and a full disk while sampling."""

from __future__ import annotations

import json
import os

import faults
import pytest
import torch
from faults import TALLY, bomb_png
from PIL import ImageFile
from tiny_runs import cheap_argv, error_line, image_folder, run_main, snapshot, train_argv

from pixdiff.cli import flags
from pixdiff.cli.main import build_parser
from pixdiff.cli.output import SETTINGS
from pixdiff.config import interval_of
from pixdiff.data.folder import MAX_PIXELS
from pixdiff.files import atomic_write, is_orphaned_temp

DEVICE_COMMANDS = [
    "train", "sample", "edit", "inpaint", "upscale", "eval", "bench samplers", "train-classifier",
]  # fmt: skip


def refused(capsys, argv, *named: str) -> str:
    """Run ``pixdiff ARGV``; assert exit 2 and one line naming each of ``named``."""
    TALLY.bad_input("one-line errors")
    code, err = run_main(capsys, argv)
    line = error_line(err)
    assert code == 2 and all(n in line for n in named), line
    return line


@pytest.fixture
def no_decoding(monkeypatch):
    """Fail a test that decodes an image over the pixel limit."""
    real = ImageFile.ImageFile.load

    def load(self):
        assert self.width * self.height <= MAX_PIXELS, "decoded a huge image"
        return real(self)

    monkeypatch.setattr(ImageFile.ImageFile, "load", load)


@pytest.mark.parametrize("side, size", [(20000, "too large"), (9000, "9000x9000")])
@pytest.mark.parametrize("command", ["edit", "upscale", "inpaint"])
def test_a_huge_input_image_is_refused_before_decoding(
    command, side, size, paths, tmp_path, capsys, no_decoding
):
    bomb = bomb_png(tmp_path / "bomb.png", side)
    argv = cheap_argv(command, paths, tmp_path / "out")
    argv[argv.index("--mask" if command == "inpaint" else "--input") + 1] = str(bomb)
    refused(capsys, argv, f"image {bomb} is {size}", f"limit of {MAX_PIXELS:,} pixels")
    assert not (tmp_path / "out").exists()


def test_a_huge_image_in_a_folder_dataset_is_refused_or_skipped(tmp_path, capsys, no_decoding):
    data = image_folder(tmp_path / "data")
    bomb = bomb_png(data / "9.png")  # replaces an image listed in metadata.jsonl
    out = tmp_path / "run"
    refused(capsys, train_argv(data, out), f"image {bomb} is too large", "skip_bad_images")
    assert not out.exists()
    with pytest.warns(UserWarning, match="skipped 1 unreadable image"):
        assert run_main(capsys, train_argv(data, out, "--skip-bad-images"))[0] == 0


@pytest.mark.parametrize(
    "text, message",
    [
        (os.urandom(64) + b"\xff\xfe", "metadata.jsonl is not UTF-8 text (byte"),
        (None, "metadata.jsonl:3: invalid JSON"),
        (b'{"file_name": "0.png", "label": 100000000000000000000}\n', '"label" must be in'),
        (b'{"file_name": "0.png", "label": 1.5}\n', '"label" must be an int'),
        (b'{"file_name": "0.png", "label": true}\n', '"label" must be an int'),
        (b'{"file_name": "0.png", "text": 5}\n', '"text" must be a string'),
        (b'{"file_name": 3}\n', 'expected an object with a "file_name" string'),
        (b'["0.png", 1]\n', 'expected an object with a "file_name" string'),
        (b'{"file_name": "0.png", "text": "a cat"}\n', 'no "text" for 15 of 16 images'),
    ],
)
def test_a_bad_metadata_jsonl_names_the_file(tmp_path, capsys, text, message):
    data = image_folder(tmp_path / "data")
    meta = data / "metadata.jsonl"
    if text is None:  # a bad third line in a good file
        lines = meta.read_text().splitlines()
        text = "\n".join([*lines[:2], '{"file_name": "2.png", "label": 1', *lines[3:]]).encode()
    if b"file_name" in text and b'"text"' not in text:
        text += b"".join(  # the other images keep their labels
            json.dumps({"file_name": f"{i}.png", "label": 0}).encode() + b"\n" for i in range(1, 16)
        )
    meta.write_bytes(text)
    refused(capsys, train_argv(data, tmp_path / "run"), str(meta), message)
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("command", ["sample", "eval"])
def test_a_config_json_of_random_bytes_names_the_file(command, run_copy, paths, tmp_path, capsys):
    config = run_copy / "config.json"
    config.write_bytes(os.urandom(256))
    argv = cheap_argv(command, {**paths, "run": run_copy}, tmp_path / "out")
    refused(capsys, argv, f"{config} is not valid JSON")


FLAG_CASES = [
    ("-n", "100000000000", f"must be [1, {flags.MAX_IMAGES}]"),
    ("--batch-size", "0", "must be >= 1, got 0"),
    ("--seed", "1e20", "expected"),
    ("--seed", "-1", str(flags.MAX_SEED)),
    ("--device", "banana", "unknown device 'banana'"),
    ("--device", "cuda", "CUDA is not available on this machine; use --device cpu"),
    ("--device", "cuda:0", "CUDA is not available on this machine; use --device cpu"),
]


def subcommand(name: str):
    """The argparse parser of a subcommand ('bench samplers' for a nested one)."""
    parser = build_parser()
    for word in name.split():
        parser = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction")
        parser = parser.choices[word]
    return parser


def options_of(command: str) -> set[str]:
    return {o for a in subcommand(command)._actions for o in a.option_strings}


@pytest.mark.parametrize(
    "command, flag, value, message",
    [(c, *case) for c in DEVICE_COMMANDS for case in FLAG_CASES if case[0] in options_of(c)],
)
def test_counts_seeds_and_devices_are_checked_by_every_command(
    command, flag, value, message, paths, tmp_path, capsys, monkeypatch
):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # as on this CPU machine
    argv = cheap_argv(command, paths, tmp_path / "out")
    if flag in argv:
        del argv[argv.index(flag) : argv.index(flag) + 2]
    refused(capsys, [*argv, flag, value], flag.lstrip("-"), message)
    assert not (tmp_path / "out").exists()


@pytest.mark.filterwarnings("ignore:Data has no positive values")  # bench's log plot of RMSE 0
@pytest.mark.parametrize("command", DEVICE_COMMANDS)
def test_device_auto_is_accepted_by_every_command(command, paths, tmp_path, capsys):
    argv = [*cheap_argv(command, paths, tmp_path / "out"), "--device", "auto"]
    code, err = run_main(capsys, argv)
    assert code == 0, err


def test_one_seed_range_for_every_command(paths, tmp_path, capsys):
    assert interval_of("run.seed") == f"[0, {flags.MAX_SEED}]"
    for command in ("sample", "edit", "upscale"):
        argv = cheap_argv(command, paths, tmp_path / command)
        line = refused(capsys, [*argv, "--seed", str(flags.MAX_SEED), "-n", "2"], "-n 2")
        assert f"seeds up to {flags.MAX_SEED + 1}" in line
        code, err = run_main(capsys, [*argv, "--seed", str(flags.MAX_SEED - 1), "-n", "2"])
        assert code == 0, err


def test_a_full_disk_while_sampling_is_one_line_and_marks_the_output_incomplete(
    paths, tmp_path, capsys, monkeypatch
):
    out = tmp_path / "out"
    monkeypatch.setattr(os, "fsync", faults.full_disk_after(2))  # settings.json, then 2 images
    TALLY.trial("full disk (simulated)")
    argv = ["sample", paths["run"], "-n", "6", "--steps", "1", "--out", out, "--no-progress"]
    line = refused(capsys, argv, "no space left on device while writing", ".png")
    assert f"{SETTINGS} marks the output incomplete" in line
    settings = json.loads((out / SETTINGS).read_text())
    assert settings["complete"] is False
    assert not any(is_orphaned_temp(p) for p in out.iterdir())
    TALLY.survived("full disk (simulated)")


def test_atomic_write_refuses_a_directory_or_a_special_file(tmp_path, run_copy, paths, capsys):
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    with pytest.raises(ValueError, match="not a regular file"):
        atomic_write(fifo, b"x")
    with pytest.raises(IsADirectoryError, match="is a directory"):
        atomic_write(run_copy, b"x")
    assert fifo.is_fifo() and sorted(os.listdir(tmp_path)) == ["pipe", "run"]
    before = snapshot(run_copy)
    for target in (fifo, run_copy):  # eval --out FILE: neither is replaced by a file
        argv = cheap_argv("eval", {**paths, "run": run_copy}, tmp_path / "out")
        argv[argv.index("--out") + 1] = str(target)
        refused(capsys, argv, str(target))
    assert fifo.is_fifo() and snapshot(run_copy) == before
