"""``pixdiff bench samplers`` on the shipped model, tiny: files, convergence, bad input."""

import csv
import json

import pytest

from pixdiff.cli.main import main
from pixdiff.eval.sampler_sweep import SweepRow, best_per_budget, check_samplers


def test_bench_samplers_writes_csv_plot_summary_and_converges(tmp_path, capsys):
    out = tmp_path / "bench"
    argv = ["bench", "samplers", "-n", "3", "--samplers", "ddim,dpmpp-2m,heun", "--nfe", "3,6,12"]
    argv += ["--reference-steps", "48", "--out", str(out), "--no-progress", "--seed", "5"]
    assert main(argv) == 0
    rows = list(csv.DictReader((out / "sweep.csv").open()))
    assert {r["sampler"] for r in rows} == {"ddim", "dpmpp-2m", "heun"}
    heun = [r for r in rows if r["sampler"] == "heun"]
    assert [(int(r["budget"]), int(r["nfe"]), int(r["steps"])) for r in heun] == [
        (3, 3, 2),  # Heun's last step is an Euler step: 2 x steps - 1 NFE
        (6, 5, 3),
        (12, 11, 6),
    ]
    for name in ("ddim", "dpmpp-2m"):  # more NFE, closer to the reference
        rmse = [float(r["score"]) for r in rows if r["sampler"] == name]
        assert rmse == sorted(rmse, reverse=True), (name, rmse)
    summary = json.loads((out / "summary.json").read_text())
    assert set(summary["best"]) == {"3", "6", "12"}
    assert summary["reference"]["floor_rmse"] < min(float(r["score"]) for r in rows)
    assert (out / "sweep.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "NFE <=  12:" in capsys.readouterr().out


def test_best_per_budget_picks_the_lowest():
    rows = [SweepRow("a", 10, 10, 10, 0.2, 1.0), SweepRow("b", 10, 10, 5, 0.1, 1.0)]
    rows.append(SweepRow("a", 20, 20, 20, 0.05, 1.0))
    assert {b: r.sampler for b, r in best_per_budget(rows).items()} == {10: "b", 20: "a"}


def test_bad_input(capsys):
    with pytest.raises(ValueError, match="'ddpm' is stochastic"):
        check_samplers(["ddim", "ddpm"])
    with pytest.raises(ValueError, match="unknown sampler 'nope'"):
        check_samplers(["nope"])
    assert main(["bench", "samplers", "--nfe", "5,x"]) == 2
    assert "--nfe must be a comma-separated list" in capsys.readouterr().err


def test_reference_is_cached_and_reused(tmp_path, monkeypatch):
    import pixdiff.eval.sampler_sweep as sweep

    argv = ["bench", "samplers", "-n", "2", "--samplers", "ddim", "--nfe", "4"]
    argv += ["--reference-steps", "8", "--out", str(tmp_path), "--no-progress"]
    assert main(argv) == 0
    calls = []
    real_draw = sweep.draw
    monkeypatch.setattr(sweep, "draw", lambda *a, **k: calls.append(a[2:4]) or real_draw(*a, **k))
    assert main(argv) == 0
    assert calls == [("ddim", 4)]  # only the sweep; the reference came from the cache
    assert main([*argv, "--seed", "1"]) == 0  # another request: recomputed
    assert ("dpmpp-2m", 8) in calls


def test_bench_samplers_by_frechet_distance_takes_stochastic_samplers(tmp_path, monkeypatch):
    monkeypatch.setenv("PIXDIFF_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "fd"
    argv = ["bench", "samplers", "--metric", "fd", "-n", "130", "--samplers", "ddim,ddpm"]
    argv += ["--nfe", "2,8", "--out", str(out), "--no-progress", "--batch-size", "130"]
    assert main(argv) == 0
    rows = list(csv.DictReader((out / "sweep.csv").open()))
    assert {(r["sampler"], r["budget"]) for r in rows} == {
        ("ddim", "2"),
        ("ddim", "8"),
        ("ddpm", "2"),
        ("ddpm", "8"),
    }
    fd = {(r["sampler"], r["budget"]): float(r["score"]) for r in rows}
    assert fd[("ddim", "8")] < fd[("ddim", "2")]  # more steps, closer to the data
    summary = json.loads((out / "summary.json").read_text())
    assert summary["metric"] == "fd" and not (out / "reference.safetensors").exists()
