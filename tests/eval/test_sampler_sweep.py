"""``pixdiff bench samplers`` on the shipped model, tiny: files, convergence, tuned grids beside
the fixed ones, both metrics on the same images, bad input."""

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
    everything = list(csv.DictReader((out / "sweep.csv").open()))
    # the shipped model has tuned grids (ddim, dpmpp-2m, unipc-bh2 at 4, 5, 6, 8, 10 NFE):
    # without --grid they are swept beside the default grid, where they exist
    tuned = {(r["sampler"], r["budget"]) for r in everything if r["grid"] == "tuned"}
    assert tuned == {("ddim", "6"), ("dpmpp-2m", "6")}
    rows = [r for r in everything if r["grid"] == "trailing"]
    assert len(rows) == len(everything) - 2
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
    assert summary["reference"]["floor_rmse"] < min(float(r["score"]) for r in everything)
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
    assert main(["bench", "samplers", "--metric", "rmse,fid"]) == 2
    err = capsys.readouterr().err
    assert "unknown --metric ['fid']; valid: rmse, fd, rmse,fd" in err and err.count("\n") == 1
    assert main(["bench", "samplers", "--metric", "fd,rmse", "--samplers", "ddim,ddpm"]) == 2
    assert "'ddpm' is stochastic" in capsys.readouterr().err  # rmse, even second, is pathwise


def test_reference_is_cached_and_reused(tmp_path, monkeypatch):
    import pixdiff.eval.sampler_sweep as sweep

    argv = [
        "bench",
        "samplers",
        "-n",
        "2",
        "--samplers",
        "ddim",
        "--nfe",
        "4",
        "--grid",
        "trailing",
    ]
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
    fd = {(r["sampler"], r["budget"], r["grid"]): float(r["score"]) for r in rows}
    assert fd[("ddim", "8", "trailing")] < fd[("ddim", "2", "trailing")]  # more steps, closer
    assert ("ddim", "8", "tuned") in fd  # the shipped model's tuned grid, beside the default
    summary = json.loads((out / "summary.json").read_text())
    assert summary["metric"] == "fd" and not (out / "reference.safetensors").exists()


def test_both_metrics_score_the_same_images_and_the_reference_by_fd(tmp_path, monkeypatch):
    monkeypatch.setenv("PIXDIFF_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "both"
    argv = ["bench", "samplers", "-n", "130", "--samplers", "ddim", "--nfe", "2,4"]
    argv += ["--grid", "trailing", "--reference-steps", "24", "--out", str(out)]
    argv += ["--no-progress", "--batch-size", "130"]
    assert main([*argv, "--metric", "fd,rmse"]) == 0
    both = list(csv.DictReader((out / "sweep.csv").open()))
    summary = json.loads((out / "summary.json").read_text())
    assert main([*argv, "--metric", "rmse"]) == 0  # the same images, scored alone
    alone = list(csv.DictReader((out / "sweep.csv").open()))
    assert "rmse" not in alone[0] and "fd" in both[0] and "rmse" in both[0]
    assert [r["rmse"] for r in both] == [r["score"] for r in alone]
    assert [r["fd"] for r in both] == [r["score"] for r in both]  # ranked by the first metric
    assert float(both[1]["rmse"]) < float(both[0]["rmse"])  # 4 NFE closer than 2
    # the 24-step reference itself, scored by FD, is closer to the data than 2 or 4 DDIM steps
    reference = summary["reference"]
    assert reference["steps"] == 24 and reference["floor_rmse"] < float(both[1]["rmse"])
    assert 0 < reference["fd"] < min(float(r["fd"]) for r in both)
    assert summary["best"]["4"]["scores"] == {
        "fd": float(both[1]["fd"]),
        "rmse": float(both[1]["rmse"]),
    }
