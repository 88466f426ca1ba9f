"""A seeded fuzzer over every flag of every command (#14.7), enumerated from
``build_parser()``: out-of-range, wrong-type and hostile values (negative, zero, huge, NaN, inf,
'1e20', empty, path traversal, non-UTF-8, missing and wrong paths) in place of one flag of a
fast, working invocation. Each must end with exit 0 (the value was fine) or 2 with exactly one
line on stderr (pixdiff's one-line warnings and the data loader's progress bar aside), never a
traceback, and must leave a run directory and an output directory that exist beforehand as they
were (a command that succeeds may add files beside them, never change or remove one).

Cases run in this process, like the other CLI tests (``serve`` with the shipped models left out
and uvicorn.run stubbed: it would serve for ever); the full suite also runs a sample of them as
real processes. ``make test`` tries FAST_PER_OPTION values per flag; the full suite all of them.
Bugs it found in files outside the reliability task are listed in KNOWN: they must still fail
(so a fix is noticed and the entry removed), and nothing else may.
"""

from __future__ import annotations

import argparse
import io
import os
import random
import signal
import warnings
from contextlib import contextmanager, redirect_stderr, redirect_stdout
from dataclasses import dataclass
from pathlib import Path

import faults
import pytest
from faults import HOSTILE, TALLY
from tiny_runs import cheap_argv, snapshot

from pixdiff.cli.main import build_parser, main

FAST_PER_OPTION = 2
FULL_RANDOM_PER_OPTION = 8  # random mixes of the hostile values, beyond all of them
PLACES = ("{run}", "{outdir}", "{file}", "{missing}")  # existing and missing paths
NOISE = ("pixdiff: warning:", "%|")  # lines a real process may print besides the error
SETS = (  # hostile config overrides for train --set, beyond the generic values
    "run.steps=1e30", "data.image_size=100000", 'run.device="banana"', "optim.lr=NaN",
    "model.overrides.model_channels=-1", 'model.preset="../../etc"', "optim.batch_size=0",
    "run.seed=-1", "run.checkpoint_every=-5", "diffusion.schedule={}", "optim.grad_accum=3",
    'data.name="{missing}"', 'text.encoder="{file}"', "model.overrides.attention_resolutions=[1e9]",
    "run.log_every=0", 'sample.sampler="nope"', "diffusion.prediction=5", "run=1", "nope.x=1",
    "optim.lr=1e60", "optim.betas=[2, 2]", "optim.grad_clip=-1", "data.channels=2",
)  # fmt: skip
# what some flags need to take effect in the fast invocation (else they are ignored)
EXTRA = {
    ("eval", "--extractor"): ["--metrics", "fd"],
    ("bench samplers", "--extractor"): ["--metric", "fd"],
}
# train always ends with these, so that a valid but huge --steps or --batch-size stays cheap
TRAIN_GUARD = ["--set", "run.steps=2", "--set", "optim.batch_size=4"]
KNOWN: dict[tuple[str, str, str], str] = {}


def commands() -> dict[str, argparse.ArgumentParser]:
    """Every command of build_parser() by name ('bench samplers' for a nested one)."""
    found = {}

    def walk(parser, words):
        subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
        if not subs:
            found[" ".join(words)] = parser
        for sub in subs:
            for name, child in sub.choices.items():
                walk(child, [*words, name])

    walk(build_parser(), [])
    return found


@dataclass
class Case:
    command: str
    flag: str
    value: str
    argv: list[str]


def flag_values(command: str, action, rng: random.Random, full: bool) -> list[str]:
    """The hostile values tried for one flag."""
    values = [*HOSTILE, *PLACES] + faults.hostile_values(rng, len(HOSTILE) + 8)[-8:]
    if action.option_strings == ["--set"]:
        values += SETS
    if not full:
        values = rng.sample(values, FAST_PER_OPTION)
    if command == "demo":  # a demo that starts runs for minutes: only what it must refuse
        values = ["{run}", "{outdir}", "{file}"]
    return values


def with_value(command: str, base: list[str], action, value: str) -> list[str]:
    """``base`` with ``value`` for ``action`` (replacing the value ``base`` gives it)."""
    words = len(command.split())
    if not action.option_strings:  # the positional RUN
        return [*base[:words], value, *base[words + 1 :]] if action.dest == "run" else base
    flag = action.option_strings[-1]
    if action.nargs == 0:
        return [*base, f"{flag}={value}"]
    given = [value, value] if action.nargs == 2 else [value]
    for option in action.option_strings:
        if option in base and option != "--set":
            i = base.index(option)
            end = i + 1 + (2 if action.nargs == 2 else 1)
            return [*base[:i], option, *given, *base[end:]]
    return [*base, flag, *given]


def cases(command: str, parser, places: dict[str, Path], full: bool) -> list[Case]:
    rng = random.Random(f"fuzz-{command}")
    found = []
    for action in parser._actions:
        if isinstance(action, argparse._HelpAction):
            continue
        flag = action.option_strings[-1] if action.option_strings else action.dest.upper()
        for value in flag_values(command, action, rng, full):
            for place in PLACES:
                value = value.replace(place, str(places[place[1:-1]]))
            out = places["sandbox"] / f"out-{len(found)}"
            base = cheap_argv(command, places, out) + EXTRA.get((command, flag), [])
            argv = with_value(command, base, action, value)
            argv += TRAIN_GUARD if command == "train" else []
            found.append(Case(command, flag, value, argv))
    return found


class Hang(BaseException):
    """A case ran past its time limit."""


@contextmanager
def time_limit(seconds: int):
    def hang(signum, frame):
        raise Hang

    old = signal.signal(signal.SIGALRM, hang)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


def fingerprint(root: Path) -> dict[str, tuple[int, int, int]]:
    """Every file under ``root`` (but the lock file) by path: (inode, size, mtime): a write in
    place or a replacement changes it."""
    return {
        str(p.relative_to(root)): (p.stat().st_ino, p.stat().st_size, p.stat().st_mtime_ns)
        for p in root.rglob("*")
        if p.is_file() and p.name != ".lock"
    }


def check(case: Case, kept: dict[Path, dict], original: dict[Path, dict]) -> str | None:
    """Run one case in this process; what went wrong, or None."""
    TALLY.bad_input(f"cli fuzz: {case.command}")
    stderr = io.StringIO()  # takes any str, as a real stderr does (backslashreplace)
    limit = 5 if (case.command, case.flag, case.value) in KNOWN else 60
    try:
        with time_limit(limit), warnings.catch_warnings(), redirect_stderr(stderr):
            warnings.simplefilter("ignore")
            with redirect_stdout(io.StringIO()):
                code = main(case.argv)
    except Hang:
        return f"ran past {limit} s"
    except BaseException as e:  # what a real process would print as a traceback
        TALLY.note("tracebacks")
        return f"traceback: {type(e).__name__}: {e}"
    err = stderr.getvalue()
    lines = [ln for ln in err.splitlines() if ln.strip() and not any(n in ln for n in NOISE)]
    TALLY.note(f"cli fuzz: exit {code}")
    if code not in (0, 2):
        return f"exit {code}"
    if code == 2 and (len(lines) != 1 or not lines[0].startswith("pixdiff")):
        return f"{len(lines)} lines on stderr: {lines[:3]}"
    for root, before in kept.items():
        now = fingerprint(root)
        changed = [k for k in original[root] if now.get(k) != original[root][k]]
        added = sorted(set(now) - set(before))
        kept[root] = now  # a command that succeeds may add files (and change those later)
        if changed or (code == 2 and added):
            TALLY.note("data_lost")
            return f"changed {root.name}: {changed[:3]} added {added[:3]}"
    return None


@pytest.fixture
def places(run_copy, paths, tmp_path, capsys, monkeypatch) -> dict[str, Path]:
    """The fuzzer's paths: the fast invocations' inputs, a run and an output directory that
    exist beforehand, a text file, a missing path; the working directory is a sandbox in
    tmp_path, so relative values ('..', '../x') stay inside it."""
    outdir = tmp_path / "previous-output"
    assert main(cheap_argv("sample", paths, outdir)) == 0
    notes = tmp_path / "notes.txt"
    notes.write_text("the user's notes\n")
    sandbox = tmp_path / "a" / "b" / "sandbox"
    sandbox.mkdir(parents=True)
    monkeypatch.chdir(sandbox)
    stub_the_server(monkeypatch)
    capsys.readouterr()
    return {
        **paths, "run": run_copy, "outdir": outdir, "file": notes,
        "missing": tmp_path / "no" / "such" / "x", "sandbox": sandbox,
    }  # fmt: skip


def stub_the_server(monkeypatch) -> None:
    """``pixdiff serve`` checks its flags and loads its runs, then returns instead of serving;
    the shipped models are left out (they take seconds to load)."""
    try:
        import uvicorn

        from pixdiff.serve import models
    except ModuleNotFoundError:  # then serve refuses in one line: its extra is not installed
        return

    monkeypatch.setattr(uvicorn, "run", lambda *args, **kwargs: None)
    monkeypatch.setattr(models, "SHIPPED", ())


def fuzz(command: str, places, *, full: bool) -> None:
    kept = {p: fingerprint(p) for p in (places["run"], places["outdir"])}
    original, contents = dict(kept), {p: snapshot(p) for p in kept}
    failures = []
    for case in cases(command, commands()[command], places, full):
        problem = check(case, kept, original)
        known = KNOWN.get((case.command, case.flag, case.value))
        if known:
            TALLY.note(f"cli fuzz: known bug outside this task ({known})")
            problem = None if problem else "fixed: remove it from KNOWN"
        if problem:
            failures.append(f"{case.flag} {case.value[:60]!r}: {problem}")
    for root, before in contents.items():  # byte for byte: nothing that existed changed
        now = snapshot(root)
        assert all(now.get(k) == v for k, v in before.items()), f"{root} changed"
    assert not failures, "\n".join(failures[:30])


COMMANDS = sorted(commands())


@pytest.mark.parametrize("command", COMMANDS)
def test_hostile_flag_values_are_one_line_or_fine(command, places):
    fuzz(command, places, full=False)


@pytest.mark.reliability
@pytest.mark.parametrize("command", COMMANDS)
def test_every_hostile_value_for_every_flag(command, places):
    fuzz(command, places, full=True)


@pytest.mark.reliability
def test_fuzz_cases_in_real_processes(places):
    """A sample of the cases as real processes: the exit code and stderr a user sees."""
    rng = random.Random("fuzz-processes")
    everything = [
        c
        for name in COMMANDS
        if name != "serve"  # a real process would serve for ever
        for c in cases(name, commands()[name], places, False)
        if (c.command, c.flag, c.value) not in KNOWN
    ]
    failures = []
    for case in rng.sample(everything, 30):
        TALLY.bad_input("cli fuzz: real processes")
        done = faults.run(case.argv, timeout=120)
        lines = [
            ln for ln in done.err.splitlines() if ln.strip() and not any(n in ln for n in NOISE)
        ]
        if done.traceback or done.code not in (0, 2) or (done.code == 2 and len(lines) != 1):
            TALLY.note("tracebacks", done.traceback)
            failures.append(f"{case.command} {case.flag} {case.value!r}: {done.code} {lines[-3:]}")
    assert not failures, "\n".join(failures)


def test_the_fuzzer_sees_every_command_and_flag():
    found = commands()
    assert {"train", "sample", "eval", "edit", "inpaint", "upscale", "demo"} <= set(found)
    assert {"bench samplers", "train-classifier"} <= set(found)
    flags = {o for p in found.values() for a in p._actions for o in a.option_strings}
    assert {"--seed", "--device", "--out", "--set", "--guidance-interval", "--cascade"} <= flags
    keys = ("run", "sr", "data", "tune", "in8", "in4", "mask8", "inception", "diffusers", "scorer",
            "pairs", "lora")  # fmt: skip
    for name in found:  # a new command needs a fast invocation to be fuzzed
        assert cheap_argv(name, dict.fromkeys(keys, Path("x")), Path("out"))[0] == name.split()[0]
    assert os.environ.get("PIXDIFF_DEBUG") is None  # it would turn errors into tracebacks
