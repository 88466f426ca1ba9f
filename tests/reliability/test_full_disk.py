"""A full disk loses nothing (#14.7): training and sampling on a small real disk (a tmpfs, when
the tests run as root; else ENOSPC from os.fsync, see faults.full_disk_after) end with one line;
a run keeps its previous checkpoint, which then resumes to the same bits as a run never
interrupted; a sample output is marked incomplete."""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil

import faults
import pytest
from faults import TALLY, small_disk
from tiny_runs import differences, error_line, long_argv, resume_argv, run_main

from pixdiff import rundir
from pixdiff.checkpoint import TRAIN_STATE, read_tensors
from pixdiff.cli.output import SETTINGS
from pixdiff.files import DiskFullError, is_orphaned_temp

# disk sizes (KiB) that fill up at each stage of a run: the marker, model.safetensors of the
# first checkpoint, its train_state.safetensors, then model.safetensors and
# train_state.safetensors of the second (a run's files take about 2 MiB)
RUN_DISKS = [4, 64, 1200, 2200, 3000]
# write-calls that succeed before the simulated disk is full (without a tmpfs)
SIMULATED = {4: 0, 64: 1, 1200: 3, 2200: 4, 3000: 6}


@contextlib.contextmanager
def full_disk(path, kib: int, monkeypatch, *, filled: bool = False):
    """A disk of ``kib`` KiB at ``path`` (``filled``: already full); a simulated one (ENOSPC
    after SIMULATED[kib] atomic writes) where no tmpfs can be mounted."""
    with small_disk(path, kib) as real:
        TALLY.note("full disk: real tmpfs" if real else "full disk: simulated ENOSPC")
        if real and filled:
            fill(path / "filler")
        elif not real:
            monkeypatch.setattr(
                os, "fsync", faults.full_disk_after(0 if filled else SIMULATED[kib])
            )
        yield


def fill(path) -> None:
    """Write ``path`` until the disk is full."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT)
    try:
        while True:
            os.write(fd, bytes(4096))
    except OSError as e:
        assert e.errno == errno.ENOSPC
    finally:
        os.close(fd)


@pytest.mark.parametrize("kib", RUN_DISKS)
def test_training_on_a_full_disk_keeps_the_last_checkpoint(
    kib, tiny_data, reference_run, tmp_path, capsys, monkeypatch
):
    out = tmp_path / "disk" / "run"
    TALLY.trial("full disk")
    with full_disk(tmp_path / "disk", kib, monkeypatch):
        code, err = run_main(capsys, long_argv(tiny_data, out))
        line = error_line(err)
        assert code == 2 and "no space left on device while writing" in line, line
        if not (out / TRAIN_STATE).is_file():
            assert not out.exists()  # a new run without a checkpoint is removed whole
            TALLY.survived("full disk")
            return
        assert "previous checkpoint is intact" in line
        assert not any(is_orphaned_temp(p) for p in out.iterdir())
        TALLY.note(
            f"full disk: checkpoint of step {read_tensors(out / TRAIN_STATE)[1]['step']} kept"
        )
        copy = shutil.copytree(out, tmp_path / "moved")  # the user makes room elsewhere
    monkeypatch.undo()
    code, err = run_main(capsys, resume_argv(copy))
    assert code == 0, err
    lost = differences(copy, reference_run)
    TALLY.note("data_lost", bool(lost))
    assert not lost
    TALLY.survived("full disk")


def test_training_on_a_disk_that_is_already_full(tiny_data, tmp_path, capsys, monkeypatch):
    out = tmp_path / "disk" / "run"
    TALLY.trial("full disk")
    with full_disk(tmp_path / "disk", 64, monkeypatch, filled=True):
        code, err = run_main(capsys, long_argv(tiny_data, out))
        line = error_line(err)  # the lock (a real tmpfs) or the marker (simulated) is named
        assert code == 2 and f"no space left on device while writing {out}/" in line, line
    TALLY.survived("full disk")


def test_a_full_disk_while_taking_the_lock_names_the_lock_file(run_copy, monkeypatch):
    def full(fd, data, offset):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(rundir.os, "pwrite", full)
    with pytest.raises(DiskFullError) as e:
        rundir.RunLock(run_copy)
    assert str(e.value) == (
        f"no space left on device while writing {run_copy / rundir.LOCK}; nothing in the run "
        "was changed"
    )
    monkeypatch.undo()
    rundir.RunLock(run_copy).release()  # the failed attempt did not keep the lock


def test_a_run_that_could_not_start_on_a_full_disk_leaves_nothing(
    tiny_data, tmp_path, capsys, monkeypatch
):
    out = tmp_path / "disk" / "run"
    with full_disk(tmp_path / "disk", 64, monkeypatch, filled=True):
        assert run_main(capsys, long_argv(tiny_data, out))[0] == 2
        assert not out.exists()


@pytest.mark.parametrize("kib, filled", [(4, True), (4, False), (8, False), (16, False)])
def test_sampling_on_a_full_disk_marks_the_output_incomplete(
    kib, filled, paths, tmp_path, capsys, monkeypatch
):
    out = tmp_path / "disk" / "out"
    TALLY.trial("full disk")
    argv = ["sample", paths["run"], "-n", "8", "--steps", "1", "--out", out, "--no-progress"]
    with full_disk(tmp_path / "disk", kib, monkeypatch, filled=filled):
        code, err = run_main(capsys, argv)
        line = error_line(err)
        assert code == 2 and "no space left on device while writing" in line, line
        names = os.listdir(out)
        assert not any(is_orphaned_temp(out / n) for n in names)
        if SETTINGS in names:  # nothing claims to be complete
            assert json.loads((out / SETTINGS).read_text())["complete"] is False
            assert f"{SETTINGS} marks the output incomplete" in line
        else:
            assert names == [] and "nothing was written" in line
    TALLY.survived("full disk")
