"""Every file of a run damaged (#14.7): truncated, a range zeroed (a lost block), one bit
flipped. ``sample`` (``--raw`` for model.safetensors) and ``train --resume`` then refuse with
one line or carry on exactly as with the undamaged run (a damaged log.csv set aside with a
warning): never a traceback, never a silent wrong load (a load that succeeds with other weights
or settings than were saved).

A zeroed range or a flipped bit inside safetensors tensor data, or a flipped digit in
config.json, is caught by the files' SHA-256 checksums (``pixdiff.checkpoint``).
"""

from __future__ import annotations

import random
import shutil
import warnings

import pytest
import torch
from faults import DAMAGES, TALLY
from tiny_runs import differences, resume_argv, run_main

from pixdiff.checkpoint import load
from pixdiff.rundir import MARKER

FILES = ["config.json", "model.safetensors", "ema.safetensors", "train_state.safetensors",
         "log.csv", MARKER]  # fmt: skip
FAST_TRIALS, FULL_TRIALS = 3, 12
CHECKSUMMED = {(f, d) for f in FILES[1:4] for d in ("zero", "flip")} | {("config.json", "flip")}


def combos() -> list:
    """(file, damage, trials): in the default run, FAST_TRIALS of truncation and of any damage
    of the log and the marker, and one trial of each damage only the checksums catch; in the
    full suite, FULL_TRIALS of every damage of every file."""
    cases = []
    for name in FILES:
        for damage in DAMAGES:
            if damage == "truncate" or name not in FILES[:4]:
                cases.append(pytest.param(name, damage, FAST_TRIALS, id=f"{name}-{damage}"))
            elif (name, damage) in CHECKSUMMED:
                cases.append(pytest.param(name, damage, 1, id=f"{name}-{damage}"))
            cases.append(
                pytest.param(
                    name,
                    damage,
                    FULL_TRIALS,
                    marks=pytest.mark.reliability,
                    id=f"{name}-{damage}-full",
                )
            )
    return cases


@pytest.fixture(scope="session")
def resumed(finished_run, tmp_path_factory):
    """The finished run, undamaged, resumed to 3 steps."""
    out = shutil.copytree(finished_run, tmp_path_factory.mktemp("resumed") / "run")
    from pixdiff.cli.main import main

    assert main(resume_argv(out, "--steps", "3", "--no-progress")) == 0
    return out


def outcome(capsys, argv) -> tuple[int | None, list[str]]:
    """(exit code, stderr lines but warnings and progress bars); None for an exception."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            code, err = run_main(capsys, argv)
    except Exception as e:  # a real process would print a traceback
        return None, [f"{type(e).__name__}: {e}"]
    lines = [
        ln for ln in err.splitlines() if ln.strip() and "warning:" not in ln and "%|" not in ln
    ]
    return code, lines


def same_load(run, reference, raw: bool) -> bool:
    """Whether loading ``run`` gives the weights and settings of ``reference``."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        a, b = load(run, ema=not raw), load(reference, ema=not raw)
    sa, sb = a.net.state_dict(), b.net.state_dict()
    return a.config == b.config and all(torch.equal(sa[k], sb[k]) for k in sb)


def judge(what: str, code, lines, correct) -> list[str]:
    """Problems of one command on a damaged run: a traceback, an unclear refusal, a silent
    wrong load (``correct()`` False after exit 0)."""
    if code is None:
        TALLY.note("tracebacks")
        return [f"{what}: traceback {lines}"]
    if code == 2:
        TALLY.note("damaged files: refused in one line")
        return [] if len(lines) == 1 else [f"{what}: {len(lines)} lines {lines[:3]}"]
    if code != 0:
        return [f"{what}: exit {code}"]
    if not correct():
        TALLY.note("silent_wrong_loads")
        return [f"{what}: silent wrong load"]
    TALLY.note("damaged files: carried on correctly")
    return []


@pytest.mark.parametrize("name, damage, trials", combos())
def test_a_damaged_run_file_is_refused_in_one_line_or_harmless(
    name, damage, trials, finished_run, resumed, tmp_path, capsys
):
    problems = []
    for trial in range(trials):
        run = shutil.copytree(finished_run, tmp_path / f"run{trial}")
        how = DAMAGES[damage](run / name, random.Random(f"{name}-{damage}-{trial}"))
        TALLY.trial("damaged file")
        TALLY.bad_input("damaged file")
        found = sample_and_resume(run, name, how, finished_run, resumed, capsys)
        TALLY.survived("damaged file", not found)
        problems += found
    assert not problems, "\n".join(problems)


def sample_and_resume(run, name: str, how: str, finished_run, resumed, capsys) -> list[str]:
    """Sample from and resume the damaged ``run``; the problems found."""
    raw = name == "model.safetensors"
    argv = ["sample", run, "-n", "1", "--steps", "1", "--out", run.parent / f"{run.name}-out"]
    code, lines = outcome(capsys, [*argv, "--no-progress", *(["--raw"] if raw else [])])
    found = judge(f"{how}: sample", code, lines, lambda: same_load(run, finished_run, raw))
    code, lines = outcome(capsys, resume_argv(run, "--steps", "3"))
    return found + judge(f"{how}: resume", code, lines, lambda: not differences(run, resumed))
