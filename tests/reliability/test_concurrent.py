"""Two writers of one directory (#14.7): two ``train --out SAME`` or two ``sample --out SAME``
started at once. Exactly one wins; the other refuses with one line; the winner's outputs are
complete and unmixed (a run bit-identical to one trained alone, images identical to those sampled
alone with the winner's seed)."""

from __future__ import annotations

import json
import shutil

import faults
import pytest
from faults import TALLY
from test_kills import trials
from tiny_runs import (
    cheap_argv,
    differences,
    error_line,
    long_argv,
    resume_argv,
    run_main,
    snapshot,
)

from pixdiff.cli import output
from pixdiff.cli.main import main
from pixdiff.cli.output import SETTINGS

TRAIN_REFUSALS = ("is being trained by", "already exists", "was filled by another process")
SAMPLE_REFUSALS = ("is being written by another pixdiff command", "is not empty")


def race(argvs: list[list[str]]) -> list[faults.Finished]:
    """Start the commands at once, in real processes; their results in order."""
    procs = [faults.start(argv) for argv in argvs]
    return [faults.finish(p) for p in procs]


def one_winner(results, refusals) -> int:
    """The index of the one command that succeeded; the other refused in one line."""
    assert not any(r.traceback for r in results), [r.err for r in results]
    assert sorted(r.code for r in results) == [0, 2], [(r.code, r.err[-300:]) for r in results]
    loser = next(r for r in results if r.code == 2)
    line = error_line(loser.err)
    assert any(reason in line for reason in refusals), line
    TALLY.note(f"concurrent: loser said '{next(r for r in refusals if r in line)}'")
    return next(i for i, r in enumerate(results) if r.code == 0)


@pytest.mark.parametrize("trial", trials(0, 3))
def test_two_trainers_of_one_new_run(trial, tiny_data, reference_run, tmp_path):
    out = tmp_path / "run"
    TALLY.trial("concurrent writers")
    one_winner(race([long_argv(tiny_data, out)] * 2), TRAIN_REFUSALS)
    lost = differences(out, reference_run)
    TALLY.note("data_lost", bool(lost))
    assert not lost
    TALLY.survived("concurrent writers")


@pytest.mark.parametrize("trial", trials(0, 3))
def test_two_resumes_of_one_run(trial, run_copy, tmp_path, capsys):
    TALLY.trial("concurrent writers")
    solo = shutil.copytree(run_copy, tmp_path / "solo")
    resume = resume_argv(run_copy, "--steps", "6")
    one_winner(race([resume] * 2), TRAIN_REFUSALS)
    code, err = run_main(capsys, resume_argv(solo, "--steps", "6"))
    assert code == 0, err
    lost = differences(run_copy, solo)
    TALLY.note("data_lost", bool(lost))
    assert not lost
    TALLY.survived("concurrent writers")


@pytest.fixture(scope="session")
def alone(paths, tmp_path_factory):
    """What `sample -n 4` writes with seeds 0 and 100 when nothing else runs."""
    found = {}
    for seed in (0, 100):
        out = tmp_path_factory.mktemp("alone") / f"s{seed}"
        argv = [*cheap_argv("sample", paths, out), "-n", "4", "--seed", str(seed)]
        assert main(argv) == 0
        found[seed] = {k: v for k, v in snapshot(out).items() if k != SETTINGS}
    return found


@pytest.mark.parametrize(
    "trial, previous",
    [
        (0, False),  # the default run: one race into a new directory
        *(
            pytest.param(t, p, marks=pytest.mark.reliability)
            for t in range(4)
            for p in (False, True)
            if (t, p) != (0, False)
        ),
    ],
)
def test_two_samplers_into_one_directory(trial, previous, paths, alone, tmp_path):
    out = tmp_path / "out"
    TALLY.trial("concurrent writers")
    extra = ["-n", "4"]
    if previous:  # both replace an earlier output, which lists the same file names
        assert main([*cheap_argv("sample", paths, out), *extra, "--seed", "7"]) == 0
        extra.append("--overwrite-out")
    argvs = [[*cheap_argv("sample", paths, out), *extra, "--seed", s] for s in ("0", "100")]
    results = race(argvs)
    if previous and [r.code for r in results] == [0, 0]:  # one ran after the other had ended:
        TALLY.note("concurrent: --overwrite-out ran one after the other")  # the later one wins
        seed = json.loads((out / SETTINGS).read_text())["flags"]["seed"]
        check_unmixed(out, alone[seed])
    else:
        check_unmixed(out, alone[(0, 100)[one_winner(results, SAMPLE_REFUSALS)]])
    TALLY.survived("concurrent writers")


def check_unmixed(out, expected: dict[str, bytes]) -> None:
    """``out`` holds exactly the winner's complete output, as it is written alone."""
    settings = json.loads((out / SETTINGS).read_text())
    found = {k: v for k, v in snapshot(out).items() if k != SETTINGS}
    mixed = settings["complete"] is not True or sorted(settings["files"]) != sorted(expected)
    TALLY.note("data_lost", mixed or found != expected)
    assert not mixed and found == expected


def test_a_directory_claimed_while_overwrite_out_reads_its_manifest(paths, tmp_path, monkeypatch):
    """The race above made certain: a second sampler claims the directory between the first
    one's reading of the old manifest and its clean-up; the first must refuse, not delete the
    second one's new images."""
    out = tmp_path / "out"
    first = [*cheap_argv("sample", paths, out), "-n", "4", "--overwrite-out"]
    assert main([*first[:-1], "--seed", "7"]) == 0
    real, done = output._manifest, {}

    def manifest_then_another_command(path):
        listed = real(path)
        if not done:
            done["second"] = None
            done["second"] = main([*first, "--seed", "100"])
        return listed

    monkeypatch.setattr(output, "_manifest", manifest_then_another_command)
    first_code = main([*first, "--seed", "0"])
    TALLY.trial("concurrent writers")
    assert sorted([first_code, done["second"]]) == [0, 2]
    winner = 100 if done["second"] == 0 else 0
    expected = {k: v for k, v in snapshot(out).items() if k != SETTINGS}
    settings = json.loads((out / SETTINGS).read_text())
    assert settings["complete"] is True and settings["flags"]["seed"] == winner
    assert sorted(settings["files"]) == sorted(expected) and len(expected) == 5
    TALLY.survived("concurrent writers")
