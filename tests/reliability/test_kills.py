"""Kills and stop signals lose nothing (#14.7): a training run killed (SIGKILL) at a random
moment, also inside a checkpoint write, or stopped by SIGINT/SIGTERM (once or twice quickly, at
startup or mid-run) resumes to the same bits as a run never interrupted; a stop signal ends the
command with one line and exit 130, never a traceback.

The first trials of each kind run in ``make test``; the rest are marked ``reliability``.
"""

from __future__ import annotations

import random
import signal
import subprocess
import sys

import faults
import pytest
from faults import TALLY
from tiny_runs import (
    LONG_STEPS,
    differences,
    error_line,
    logged_steps,
    long_argv,
    resume_argv,
    run_main,
    snapshot,
)

from pixdiff.checkpoint import TRAIN_STATE
from pixdiff.files import is_orphaned_temp
from pixdiff.rundir import LOCK, MARKER


def trials(fast: int, full: int) -> list:
    """Trial numbers 0..full-1, the first ``fast`` of them in the default run."""
    return [i if i < fast else pytest.param(i, marks=pytest.mark.reliability) for i in range(full)]


def recover(out, data, capsys) -> str:
    """Finish an interrupted run as a user would: --resume when it has a checkpoint, else
    start it again (--overwrite once a started run refuses --resume in one line)."""
    if (out / TRAIN_STATE).is_file():
        code, err = run_main(capsys, resume_argv(out))
        assert code == 0, err
        return "resumed"
    if out.exists():
        code, err = run_main(capsys, resume_argv(out))
        assert code == 2 and "cannot resume" in error_line(err)
        if only_leftovers(out):  # killed before its marker was written: train starts again
            code, err = run_main(capsys, long_argv(data, out))
            assert code == 0, err
            return "started again over the leftovers"
        code, err = run_main(capsys, long_argv(data, out, "--overwrite"))
        assert code == 0, err
        return "restarted"
    code, err = run_main(capsys, long_argv(data, out))
    assert code == 0, err
    return "started again"


def only_leftovers(out) -> bool:
    """Whether ``out`` holds nothing but a lock file and temp files of killed atomic writes."""
    return all(p.name == LOCK or is_orphaned_temp(p) for p in out.iterdir())


@pytest.mark.parametrize("leftovers", [[LOCK], [LOCK, f".{MARKER}.ab12cd34.tmp"]])
def test_a_directory_holding_only_leftovers_is_started_again(
    leftovers, tiny_data, tmp_path, capsys
):
    out = tmp_path / "run"
    out.mkdir()
    for name in leftovers:
        (out / name).write_bytes(b"")
    code, err = run_main(capsys, long_argv(tiny_data, out))
    assert code == 0, err


def check_nothing_lost(out, reference) -> None:
    """The run ends bit-identical to the uninterrupted one, with one log row per step and no
    run set aside."""
    lost = differences(out, reference)
    leftovers = list(out.parent.glob(f"{out.name}.replaced-*"))
    TALLY.note("data_lost", bool(lost or leftovers))
    assert not lost and not leftovers, (lost, leftovers)
    assert logged_steps(out) == list(range(1, LONG_STEPS + 1))


def where_it_stopped(out, code: int) -> str:
    if code == 0:
        return "after the end"
    if not out.exists():
        return "before the run directory"
    if any(is_orphaned_temp(p) for p in out.iterdir()):
        return "inside a checkpoint write"
    return "between writes" if (out / TRAIN_STATE).is_file() else "before the first checkpoint"


@pytest.mark.parametrize("trial", trials(1, 24))
def test_a_run_killed_at_a_random_moment_resumes_bit_exactly(
    trial, tiny_data, reference_run, tmp_path, capsys
):
    rng = random.Random(f"kill-{trial}")
    out = tmp_path / "run"
    TALLY.trial("sigkill")
    proc = faults.start(long_argv(tiny_data, out), slow_writes=0.01)
    faults.wait_started(proc)
    if trial % 2:  # half the kills at any moment, half once the run has a checkpoint
        faults.wait_for(out / TRAIN_STATE, proc)
    faults.signal_after(proc, signal.SIGKILL, rng.uniform(0.0, 2.0))
    killed = faults.finish(proc)
    assert killed.code in (0, -signal.SIGKILL) and not killed.traceback, killed.err
    TALLY.note(f"sigkill landed {where_it_stopped(out, killed.code)}")
    TALLY.note(f"sigkill then {recover(out, tiny_data, capsys)}")
    check_nothing_lost(out, reference_run)
    TALLY.survived("sigkill")


def stops(fast: set[str], full: int) -> list:
    """(signal, how many times, when, trial) for SIGINT and SIGTERM, once or twice quickly, at
    startup or mid-run; the first trial of the ``fast`` ones in the default run."""
    cases = []
    for sig in (signal.SIGINT, signal.SIGTERM):
        for times in (1, 2):
            for phase in ("startup", "mid-run"):
                name = f"{sig.name}x{times}-{phase}"
                for trial in range(full):
                    marks = () if name in fast and trial == 0 else pytest.mark.reliability
                    cases.append(pytest.param(sig, times, phase, trial, marks=marks))
    return cases


@pytest.mark.parametrize(
    "sig, times, phase, trial", stops({"SIGINTx2-startup", "SIGTERMx1-mid-run"}, full=3)
)
def test_a_stop_signal_ends_with_one_line_and_resumes_bit_exactly(
    sig, times, phase, trial, tiny_data, reference_run, tmp_path, capsys
):
    rng = random.Random(f"{sig.name}-{times}-{phase}-{trial}")
    out = tmp_path / "run"
    TALLY.trial("stop signal")
    proc = faults.start(long_argv(tiny_data, out))
    faults.wait_started(proc)
    if phase == "mid-run":
        faults.wait_for(out / TRAIN_STATE, proc)
    faults.signal_after(proc, sig, rng.uniform(0.0, 0.5), times=times)
    stopped = faults.finish(proc)
    assert not stopped.traceback, stopped.err
    if stopped.code != 0:
        line = error_line(stopped.err)
        assert stopped.code == 130 and line.startswith("pixdiff train: interrupted"), line
    TALLY.note(f"stop signal landed {where_it_stopped(out, stopped.code)}")
    recover(out, tiny_data, capsys)
    check_nothing_lost(out, reference_run)
    TALLY.survived("stop signal")


@pytest.mark.parametrize("trial", trials(1, 6))
def test_a_stop_signal_during_overwrite_puts_the_old_run_back(
    trial, run_copy, tiny_data, reference_run, capsys
):
    rng = random.Random(f"overwrite-{trial}")
    before = snapshot(run_copy)
    TALLY.trial("stop signal during --overwrite")
    proc = faults.start(long_argv(tiny_data, run_copy, "--overwrite"), slow_writes=0.01)
    faults.wait_started(proc)
    sig = rng.choice([signal.SIGINT, signal.SIGTERM])
    faults.signal_after(proc, sig, rng.uniform(0.0, 2.0), times=rng.choice([1, 2]))
    stopped = faults.finish(proc)
    assert not stopped.traceback, stopped.err
    if not (run_copy / TRAIN_STATE).is_file() or snapshot(run_copy) == before:
        assert snapshot(run_copy) == before  # stopped before the new run's first checkpoint
        TALLY.note("overwrite stopped before the new run's first checkpoint: old run kept")
    else:
        recover(run_copy, tiny_data, capsys)
        check_nothing_lost(run_copy, reference_run)
    assert not list(run_copy.parent.glob(f"{run_copy.name}.replaced-*"))
    TALLY.survived("stop signal during --overwrite")


def test_the_package_and_the_command_import_no_torch_until_used():
    """What answers Ctrl-C is in place before torch is imported: ``import pixdiff`` and the
    console script's module are lazy (PEP 562), and every public name still resolves."""
    code = (
        "import sys, pixdiff, pixdiff.cli.main; before = 'torch' in sys.modules; "
        "from pixdiff import load; import pixdiff as p; "
        "assert all(getattr(p, n) is not None for n in p.__all__); print(before, p.load is load)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.stdout.split() == ["False", "True"], done.stderr[-500:]


@pytest.mark.parametrize("delay", [0.1, pytest.param(0.3, marks=pytest.mark.reliability), 0.6])
def test_a_stop_signal_while_pixdiff_is_imported_is_one_line(delay, tiny_data, tmp_path):
    """Ctrl-C while the ``pixdiff`` command imports torch (``import pixdiff`` is lazy)."""
    TALLY.trial("stop signal while importing")
    argv = [sys.executable, "-m", "pixdiff.cli.main", *long_argv(tiny_data, tmp_path / "run")]
    # a terminal's foreground command: SIGINT at its default even when this test runs in a
    # background job, whose children inherit an ignored SIGINT (pixdiff keeps it ignored)
    proc = subprocess.Popen(
        argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )  # fmt: skip
    faults.signal_after(proc, signal.SIGINT, delay)
    stopped = faults.finish(proc)
    lines = [ln for ln in stopped.err.splitlines() if ln.strip()]
    assert not stopped.traceback and stopped.code == 130, stopped.err[-500:]
    assert len(lines) == 1 and lines[0].startswith("pixdiff train: interrupted"), lines
    assert not (tmp_path / "run").exists()
    TALLY.survived("stop signal while importing")
