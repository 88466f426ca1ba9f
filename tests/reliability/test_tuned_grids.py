"""Tuned time grids in a run: `pixdiff tune-grid` writes them, `sample --grid tuned` and the
Python API use them (by default where one exists for the budget), `bench samplers` sweeps them;
a missing grid or a damaged file is one line and changes nothing."""

from __future__ import annotations

import json

import pytest
import torch

import pixdiff
from pixdiff.checkpoint import CheckpointError
from pixdiff.cli.main import main
from pixdiff.pipelines.generate import generate
from pixdiff.sampling import Sampling
from pixdiff.tuned_grids import (
    FILE,
    TunedGrid,
    find_grid,
    read_grids,
    run_sampling,
    write_grid,
)

TUNE = ["-n", "4", "--candidates", "12", "--reference-steps", "24", "--no-progress"]
GRID = TunedGrid("ddim", 3, (1.0, 0.6, 0.2, 0.0), 0.1, {"trailing": 0.2}, {"n": 4})


@pytest.fixture
def tuned_run(run_copy, capsys):
    """A copy of the tiny run with ddim grids tuned at 3 and 4 NFE."""
    assert main(["tune-grid", str(run_copy), "--nfe", "3,4", *TUNE]) == 0
    capsys.readouterr()
    return run_copy


def sample(run, out, *argv: str) -> int:
    return main(["sample", str(run), "-n", "2", "--out", str(out), "--no-progress", *argv])


def test_tune_grid_writes_the_grids_and_prints_tuned_against_fixed(run_copy, capsys):
    assert main(["tune-grid", str(run_copy), "--nfe", "4,3", "--refine", "1", *TUNE]) == 0
    out = capsys.readouterr().out
    assert (
        "class-balanced labels" in out and "trailing" in out and f"wrote {run_copy / FILE}" in out
    )
    doc = json.loads((run_copy / FILE).read_text())
    assert doc["format"] == "pixdiff-tuned-grids" and doc["version"] == 1
    grids = doc["grids"]["ddim"]  # the run's own sampler
    assert sorted(grids) == ["3", "4"]
    for nfe, entry in grids.items():
        assert entry["steps"] == int(nfe) and len(entry["times"]) == int(nfe) + 1
        assert entry["times"][0] == 1.0 and entry["times"][-1] == 0.0
        assert entry["rmse"] <= min(entry["fixed_rmse"].values())
        assert entry["tuned_on"]["n"] == 4 and entry["tuned_on"]["refine_iterations"] == 1


def test_sample_grid_tuned_uses_the_stored_grid_and_so_does_the_default(
    tuned_run, tmp_path, capsys
):
    grid = find_grid(tuned_run, "ddim", nfe=4)
    assert sample(tuned_run, tmp_path / "a", "--nfe", "4", "--grid", "tuned") == 0
    assert f"grid: tuned for ddim at 4 NFE ({tuned_run / FILE})" in capsys.readouterr().out
    settings = json.loads((tmp_path / "a" / "settings.json").read_text())
    assert settings["grid"] == list(grid.times)
    assert sample(tuned_run, tmp_path / "b", "--nfe", "4") == 0  # no --grid: the tuned one
    assert "grid: tuned" in capsys.readouterr().out
    assert sample(tuned_run, tmp_path / "c", "--nfe", "4", "--grid", "trailing") == 0
    assert "grid: tuned" not in capsys.readouterr().out
    png = "000001.png"
    assert (tmp_path / "a" / png).read_bytes() == (tmp_path / "b" / png).read_bytes()
    assert (tmp_path / "a" / png).read_bytes() != (tmp_path / "c" / png).read_bytes()


def test_python_api_defaults_to_the_tuned_grid_only_where_one_exists(tuned_run, finished_run):
    model = pixdiff.load(tuned_run)
    grid = find_grid(tuned_run, "ddim", nfe=3)
    want = generate(model, None, Sampling("ddim", 3, times=grid.times), n=2).clamp(-1, 1)
    assert torch.equal(model.generate(nfe=3, n=2, output="tensor"), want)
    assert torch.equal(model.generate(steps=3, n=2, output="tensor"), want)
    untuned = pixdiff.load(finished_run)  # no tuned_grids.json: the schedule's default grid
    plain = generate(untuned, None, Sampling("ddim", 3), n=2).clamp(-1, 1)
    assert torch.equal(untuned.generate(nfe=3, n=2, output="tensor"), plain)
    assert run_sampling(finished_run, "ddim", 3, nfe=3) == (Sampling("ddim", 3), None)


def test_grid_tuned_without_a_grid_is_one_line_and_writes_nothing(run_copy, tmp_path, capsys):
    assert sample(run_copy, tmp_path / "out", "--nfe", "7", "--grid", "tuned") == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert (
        f"no tuned grid for ddim at 7 NFE in {run_copy}; make one with "
        f"`pixdiff tune-grid {run_copy} --nfe 7 --sampler ddim`"
    ) in err
    assert not (tmp_path / "out").exists() and not (run_copy / FILE).exists()


def test_grids_round_trip_and_a_second_grid_keeps_the_first(run_copy):
    write_grid(run_copy, GRID)
    other = TunedGrid("dpmpp-2m", 5, (1.0, 0.8, 0.5, 0.3, 0.1, 0.0), 0.05)
    write_grid(run_copy, other)
    grids = read_grids(run_copy)
    assert grids == {"ddim": {3: GRID}, "dpmpp-2m": {5: other}}
    assert (
        find_grid(run_copy, "ddim", steps=3) == GRID and find_grid(run_copy, "ddim", nfe=4) is None
    )


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("{not json", "is not valid JSON"),
        ('{"format": "other", "version": 1, "grids": {}}', "is not a pixdiff tuned-grids file"),
        (
            '{"format": "pixdiff-tuned-grids", "version": 1, "grids": {"ddim": {"3": '
            '{"times": [1.0, 0.2, 0.6, 0.0], "steps": 3, "rmse": 0.1}}}}',
            "malformed entry grids.ddim.3",
        ),
        (
            '{"format": "pixdiff-tuned-grids", "version": 1, "grids": {"ddim": {"3": {}}}}',
            "malformed entry grids.ddim.3.times",
        ),
    ],
)
def test_a_damaged_file_is_one_line_naming_it_and_is_never_overwritten(run_copy, text, message):
    path = run_copy / FILE
    path.write_text(text)
    with pytest.raises(CheckpointError, match=message) as caught:
        read_grids(run_copy)
    assert str(path) in str(caught.value) and "\n" not in str(caught.value)
    with pytest.raises(CheckpointError):
        write_grid(run_copy, GRID)
    assert path.read_text() == text


def test_tune_grid_bad_input_is_one_line(run_copy, capsys):
    for argv, message in [
        (["--sampler", "ddpm"], "'ddpm' is stochastic"),
        (["--nfe", "0"], "--nfe budgets must be >= 1"),
        (["--nfe", "40"], "need more than 12 candidate times"),
    ]:
        assert main(["tune-grid", str(run_copy), *TUNE, *argv]) == 2
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1, err
    assert not (run_copy / FILE).exists()


def test_bench_samplers_sweeps_tuned_grids_beside_fixed_ones(tuned_run, tmp_path, capsys):
    out = tmp_path / "bench"
    argv = ["bench", "samplers", str(tuned_run), "-n", "2", "--samplers", "ddim", "--nfe", "3,4"]
    argv += ["--grid", "trailing,tuned", "--reference-steps", "8", "--out", str(out)]
    assert main([*argv, "--no-progress"]) == 0
    rows = (out / "sweep.csv").read_text().splitlines()
    assert rows[0].endswith(",grid")
    assert sorted(r.split(",")[-1] for r in rows[1:]) == ["trailing", "trailing", "tuned", "tuned"]
    capsys.readouterr()
    assert main([*argv[:-4], "--grid", "tuned", "--nfe", "7", "--out", str(out)]) == 2
    assert "no tuned grid for ddim at 7 NFE" in capsys.readouterr().err
