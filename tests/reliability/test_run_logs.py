"""log.csv and eval.csv cannot block a resume (#14.3): rows are appended by one write() each; on
resume rows past the checkpoint are dropped and a damaged log is set aside with a warning."""

from __future__ import annotations

import os

import pytest
from tiny_runs import resume_argv, run_main

from pixdiff.rundir import append_row, start_log

FIELDS = ["step", "loss"]


@pytest.mark.parametrize(
    "text, damage, kept",
    [
        (b"1,0.5\n2,0.4\n", "no header", "1,0.5\n2,0.4\n"),
        (b"step,loss\n1,0.5\n\x00\xffgarbage\n2,0.4\n", "1 unreadable row", "1,0.5\n2,0.4\n"),
        (b"step,loss\n1,0.5\n2,0.", "a torn last line", "1,0.5\n"),
        (b"\x8f\x13\x00", "no header", ""),
    ],
)
def test_a_damaged_log_is_set_aside_not_refused(tmp_path, text, damage, kept):
    path = tmp_path / "log.csv"
    path.write_bytes(text)
    with pytest.warns(UserWarning, match=f"log.csv is damaged \\({damage}.*log.csv.damaged-1"):
        start_log(path, FIELDS, resume_step=5)
    assert (tmp_path / "log.csv.damaged-1").read_bytes() == text
    assert path.read_text() == "step,loss\n" + kept


def test_rows_past_the_checkpoint_are_dropped_and_a_second_damage_gets_the_next_name(tmp_path):
    path = tmp_path / "log.csv"
    path.write_text("step,loss\n1,0.5\n2,0.4\n3,0.3\n")
    start_log(path, FIELDS, resume_step=2)
    assert path.read_text() == "step,loss\n1,0.5\n2,0.4\n"
    assert os.listdir(tmp_path) == ["log.csv"]
    for n in (1, 2):
        path.write_text("garbage")
        with pytest.warns(UserWarning, match=f"damaged-{n}"):
            start_log(path, FIELDS, resume_step=2)
    start_log(path, FIELDS, resume_step=None)  # a new run: only the header
    assert path.read_text() == "step,loss\n"


def test_each_row_is_appended_by_one_write(tmp_path, monkeypatch):
    path = tmp_path / "log.csv"
    start_log(path, FIELDS, resume_step=None)
    writes = []
    real = os.write

    def write(fd, data):
        writes.append(bytes(data))
        return real(fd, data)

    monkeypatch.setattr(os, "write", write)
    append_row(path, FIELDS, {"step": 1, "loss": "0.5"})
    append_row(path, FIELDS, {"step": 2})
    monkeypatch.undo()
    assert writes == [b"1,0.5\n", b"2,\n"]
    assert path.read_text() == "step,loss\n1,0.5\n2,\n"
    with pytest.raises(ValueError):
        append_row(path, FIELDS, {"step": 3, "los": "0.1"})


def test_resume_sets_a_torn_log_aside_and_goes_on(run_copy, capsys):
    log = run_copy / "log.csv"
    torn = log.read_bytes() + b"7,0.12"
    log.write_bytes(torn)
    with pytest.warns(UserWarning, match="log.csv is damaged \\(a torn last line"):
        code, err = run_main(capsys, resume_argv(run_copy, "--steps", "3"))
    assert code == 0, err
    assert (run_copy / "log.csv.damaged-1").read_bytes() == torn
    assert [int(line.split(",")[0]) for line in log.read_text().splitlines()[1:]] == [1, 2, 3]
