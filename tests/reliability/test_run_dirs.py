"""Run directories lose nothing (#14.1, #14.2): only a marked run is replaced, every check runs
before anything is touched, a failed start puts the old run back, and a locked run refuses a
second trainer."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from tiny_runs import error_line, full_disk_on, resume_argv, run_main, snapshot, train_argv

from pixdiff import checkpoint
from pixdiff.checkpoint import read_tensors
from pixdiff.classifier_store import check_out_dir
from pixdiff.rundir import LOCK, MARKER, LockError, RunLock, claim, is_run
from pixdiff.training import trainer


def no_leftovers(run) -> bool:
    return not list(run.parent.glob(f"{run.name}.replaced-*"))


def test_overwrite_refuses_a_directory_pixdiff_did_not_mark(tmp_path, capsys):
    proj = tmp_path / "proj"
    proj.mkdir()
    (proj / "config.json").write_text('{"name":"app"}\n')
    (proj / "keep.txt").write_text("x\n")
    before = snapshot(proj)
    argv = ["train", "--data", "fashion-mnist", "--preset", "unet-tiny", "--steps", "2"]
    code, err = run_main(capsys, [*argv, "--out", proj, "--overwrite"])
    line = error_line(err)
    assert code == 2 and f"refusing to overwrite {proj}" in line
    assert MARKER in line and "config.json, keep.txt" in line
    assert snapshot(proj) == before and sorted(p.name for p in proj.iterdir()) == [
        "config.json",
        "keep.txt",
    ]


def test_a_new_run_refuses_a_filled_directory_that_is_not_a_run(tiny_data, tmp_path, capsys):
    proj = tmp_path / "proj"
    proj.mkdir()
    (proj / "notes.md").write_text("mine\n")
    code, err = run_main(capsys, train_argv(tiny_data, proj))
    assert code == 2 and "is not a pixdiff run directory" in error_line(err)
    assert [p.name for p in proj.iterdir()] == ["notes.md"]


@pytest.mark.parametrize(
    "typo, named",
    [
        (["--preset", "unet-hueg"], "unet-hueg"),
        (["--data", "/no/such/folder"], "/no/such/folder"),
        (["--image-size", "6"], "attention_resolutions [4] never occur"),  # network construction
    ],
)
def test_a_failing_overwrite_leaves_the_finished_run_intact(
    run_copy, tiny_data, typo, named, capsys
):
    before = snapshot(run_copy)
    code, err = run_main(capsys, train_argv(tiny_data, run_copy, "--overwrite", *typo))
    assert code == 2 and named in error_line(err)
    assert snapshot(run_copy) == before and no_leftovers(run_copy)


def test_a_dry_batch_fails_before_the_run_is_touched(run_copy, tiny_data, monkeypatch, capsys):
    def misfit(*args, **kwargs):
        raise RuntimeError("mat1 and mat2 shapes cannot be multiplied (4x8 and 9x16)\nmore")

    monkeypatch.setattr(trainer, "batch_inputs", misfit)
    before = snapshot(run_copy)
    code, err = run_main(capsys, train_argv(tiny_data, run_copy, "--overwrite"))
    line = error_line(err)
    assert code == 2 and "a first batch through the network failed: mat1 and mat2" in line
    assert snapshot(run_copy) == before and no_leftovers(run_copy)


def test_a_failed_start_puts_the_replaced_run_back(run_copy, tiny_data, monkeypatch, capsys):
    before = snapshot(run_copy)
    full_disk_on("model.safetensors", monkeypatch)
    code, err = run_main(capsys, train_argv(tiny_data, run_copy, "--overwrite", "--seed", "1"))
    line = error_line(err)
    assert code == 2 and "no space left on device while writing" in line
    assert "model.safetensors; the previous checkpoint is intact" in line
    assert snapshot(run_copy) == before and no_leftovers(run_copy)


def test_a_failed_start_of_a_new_run_leaves_nothing(tiny_data, tmp_path, monkeypatch, capsys):
    full_disk_on("model.safetensors", monkeypatch)
    out = tmp_path / "new"
    code, err = run_main(capsys, train_argv(tiny_data, out))
    assert code == 2 and "no space left" in error_line(err)
    assert not out.exists()
    empty = tmp_path / "empty"  # a directory the user made stays, empty
    empty.mkdir()
    assert run_main(capsys, train_argv(tiny_data, empty))[0] == 2
    assert empty.is_dir() and not list(empty.iterdir())


def test_overwrite_replaces_a_run_once_the_new_one_has_a_checkpoint(run_copy, tiny_data, capsys):
    (run_copy / "samples").mkdir()
    (run_copy / "samples" / "old.png").write_bytes(b"only the old run had this")
    old = read_tensors(run_copy / "ema.safetensors")[0]
    code, err = run_main(capsys, train_argv(tiny_data, run_copy, "--overwrite", "--seed", "1"))
    assert code == 0, err
    assert not (run_copy / "samples" / "old.png").exists() and no_leftovers(run_copy)
    assert is_run(run_copy) and json.loads((run_copy / MARKER).read_text())["version"] == 1
    new = read_tensors(run_copy / "ema.safetensors")[0]
    assert any(not (new[k] == old[k]).all() for k in old)


def test_a_run_being_trained_refuses_a_second_trainer(run_copy, tiny_data, capsys):
    lock = RunLock(run_copy)
    try:
        before = snapshot(run_copy)
        overwrite = train_argv(tiny_data, run_copy, "--overwrite")
        for argv in (resume_argv(run_copy), overwrite, train_argv(tiny_data, run_copy)):
            code, err = run_main(capsys, argv)
            line = error_line(err)
            assert code == 2 and f"run {run_copy} is being trained by process {os.getpid()}" in line
            assert "(since " in line
        assert snapshot(run_copy) == before
        assert checkpoint.load(run_copy).num_classes == 2  # sampling from it is fine
    finally:
        lock.release()


CHILD_LOCKS = """
import fcntl, json, os, sys, time
fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT)
fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
os.ftruncate(fd, 0)
os.write(fd, json.dumps({"pid": os.getpid(), "since": "then"}).encode())
print("locked", flush=True)
time.sleep(120)
"""


def test_the_lock_of_a_killed_trainer_does_not_block(run_copy):
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD_LOCKS, str(run_copy / LOCK)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert child.stdout.readline().strip() == "locked"
        with pytest.raises(LockError, match=f"process {child.pid} \\(since then\\)"):
            claim(run_copy, resume=True, overwrite=False)
    finally:
        child.kill()
        child.wait()
    claim(run_copy, resume=True, overwrite=False).release()


def test_a_run_from_before_the_marker_loads_resumes_and_is_not_overwritten(
    run_copy, tiny_data, capsys
):
    (run_copy / MARKER).unlink()
    (run_copy / LOCK).unlink()
    assert checkpoint.load(run_copy).num_classes == 2
    before = snapshot(run_copy)
    code, err = run_main(capsys, train_argv(tiny_data, run_copy, "--overwrite"))
    line = error_line(err)
    assert code == 2 and "from before pixdiff marked its runs" in line and "--resume" in line
    assert snapshot(run_copy) == before
    code, err = run_main(capsys, resume_argv(run_copy, "--steps", "3"))
    assert code == 0, err
    assert is_run(run_copy) and read_tensors(run_copy / "ema.safetensors")[1]["step"] == "3"


def test_resume_and_overwrite_together_are_refused(run_copy, tiny_data, capsys):
    code, err = run_main(capsys, train_argv(tiny_data, run_copy, "--overwrite", "--resume"))
    assert code == 2 and "contradict" in error_line(err)


@pytest.mark.parametrize("held", [["model.safetensors"], ["config.json", "model.safetensors"]])
def test_train_classifier_does_not_replace_weights_without_overwrite(tmp_path, held):
    for name in held:
        (tmp_path / name).write_bytes(b"someone's file")
    with pytest.raises(FileExistsError) as e:
        check_out_dir(tmp_path, overwrite=False)
    assert str(e.value) == (
        f"{tmp_path} already holds {' and '.join(held)}; pass --overwrite to replace it"
    )
    assert check_out_dir(tmp_path, overwrite=True) == tmp_path
    assert all((tmp_path / n).read_bytes() == b"someone's file" for n in held)
