"""``pixdiff eval``'s table says what it scored, and KID's scale."""

import json

import pytest

from pixdiff.cli.main import main
from pixdiff.eval.report import eval_header, format_table

pytestmark = pytest.mark.usefixtures("one_thread")


def test_the_header_names_run_sampler_guidance_extractor_n_and_seed():
    results = {"run": "runs/mine", "sampler": "heun", "steps": 5, "grid": "karras",
               "guidance": 3.0, "extractor": "fashion-classifier", "n": 500, "seed": 7,
               "dtype": "bf16"}  # fmt: skip
    assert eval_header(results) == (
        "scored: run runs/mine | heun 5 steps (9 NFE), karras grid | guidance 3 | "
        "extractor fashion-classifier | n 500 | seed 7 | bf16"
    )  # Heun: 2 evaluations per step, the last step an Euler step
    unguided = {**results, "guidance": None, "dtype": "fp32"}
    assert eval_header(unguided).endswith(
        "| unguided | extractor fashion-classifier | n 500 | seed 7"
    )


def test_kid_is_printed_with_its_scale():
    table = format_table({"n": 130.0, "fd": 2.5, "kid": 0.00125, "kid_std": 0.0003})
    assert table.splitlines() == [
        "n                                130",
        "fd                               2.5",
        "kid (MMD^2, unscaled: not x1e3)  0.00125",
        "kid_std (spread, unscaled)       0.0003",
    ]


def test_eval_prints_the_header_above_its_table(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("PIXDIFF_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "eval.json"
    argv = ["eval", "--metrics", "fd,kid", "-n", "130", "--steps", "2", "--seed", "3"]
    assert main([*argv, "--batch-size", "130", "--out", str(out), "--no-progress"]) == 0
    result = json.loads(out.read_text())
    assert (result["n"], result["seed"], result["grid"]) == (130, 3, "trailing")
    lines = capsys.readouterr().out.splitlines()
    header = (
        "scored: run shipped | ddim 2 steps (2 NFE), trailing grid | guidance 2 | "
        "extractor fashion-classifier | n 130 | seed 3"
    )
    assert lines[lines.index(header) + 1] == "[samples]"
    assert any(line.startswith("kid (MMD^2, unscaled: not x1e3)  ") for line in lines)
