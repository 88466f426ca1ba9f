"""``pixdiff eval`` on the shipped model, tiny: the JSON, the table, the floor, bad input."""

import json

import pytest

from pixdiff.cli.main import main
from pixdiff.eval.report import balanced_labels, parse_metrics

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("PIXDIFF_CACHE", str(tmp_path / "cache"))
    return tmp_path


def test_eval_writes_json_and_prints_a_table(cache, capsys):
    out = cache / "eval.json"
    argv = ["eval", "--metrics", "fd,kid,pr,is,acc", "-n", "130", "--steps", "4"]
    argv += ["--out", str(out), "--no-progress", "--floor", "--batch-size", "130"]
    assert main(argv) == 0
    result = json.loads(out.read_text())
    samples, floor = result["metrics"]["samples"], result["metrics"]["real_floor"]
    assert set(samples) >= {"fd", "kid", "kid_std", "precision", "recall", "is", "acc"}
    # 4 DDIM steps make poor images: worse than real images of the other split on every metric
    assert floor["fd"] < samples["fd"] and floor["kid"] < samples["kid"]
    assert floor["acc"] > 0.8 and 0 <= samples["acc"] <= 1
    assert floor["split"] == "train" and result["guidance"] == 2.0  # the run's default
    assert "fd" in capsys.readouterr().out
    assert any((cache / "cache" / "reference-stats").iterdir())  # cached for the next run


def test_bad_input(cache, capsys):
    with pytest.raises(ValueError, match="unknown metric"):
        parse_metrics("fd,fid")
    assert main(["eval", "--metrics", "fd", "-n", "20", "--steps", "2", "--no-progress"]) == 2
    assert "FD needs at least D+1 = 129 samples" in capsys.readouterr().err
    assert balanced_labels(5, 3).tolist() == [0, 1, 2, 0, 1]
    assert balanced_labels(5, 0) is None


def test_eval_bits_per_dim_bound(cache):
    out = cache / "bpd.json"
    argv = ["eval", "--metrics", "bpd", "--bpd-n", "3", "--bpd-t-samples", "4"]
    assert main([*argv, "--out", str(out), "--no-progress"]) == 0
    bpd = json.loads(out.read_text())["metrics"]["bpd"]
    assert bpd["method"] == "bound" and bpd["n"] == 3
    # the parts add up; a model that learned anything beats 8 bits/dim (uniform over 256 levels)
    assert abs(bpd["prior"] + bpd["decoder"] + bpd["kl"] - bpd["bpd"]) < 1e-6
    assert 0 < bpd["bpd"] < 8


def test_periodic_eval_refuses_a_mismatched_extractor():
    from pixdiff.eval.report import PeriodicEval

    with pytest.raises(ValueError, match=r"takes images shaped \(1, 28, 28\), the model makes"):
        PeriodicEval("emoji", "fashion-classifier", "fd", (3, 32, 32), "cpu")
    with pytest.raises(ValueError, match="none of 'bpd'"):
        PeriodicEval("fashion-mnist", "fashion-classifier", "bpd", (1, 28, 28), "cpu")
