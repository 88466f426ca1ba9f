"""Training recipes from the CLI: each new weighting, time sampling and a shifted schedule trains
a tiny run; the shift is stored in the run, so sampling rebuilds the schedule it trained on;
unknown names and a shift the schedule cannot take are one-line errors."""

from __future__ import annotations

import csv
import json
import math

import pytest
from test_train_cli import run_main, train_args

from pixdiff.checkpoint import load
from pixdiff.config import parse_override
from pixdiff.schedule_registry import schedule_from_dict
from pixdiff.shifted_schedules import ShiftedSchedule

RECIPES = {
    "sigmoid-interpolated-cosine-logit-normal": [
        'diffusion.schedule={"kind": "vp-cosine", "shift": -1.39, "interpolate": true}',
        'diffusion.prediction="v"',
        "diffusion.weighting=sigmoid",
        "diffusion.sigmoid_bias=-1",
        "diffusion.time_sampling=logit-normal",
        "diffusion.p_mean=0.3",
        "diffusion.p_std=0.8",
    ],
    "soft-min-snr-shifted-flow-log-normal": [
        'diffusion.schedule={"kind": "flow", "shift": 1.0}',
        'diffusion.prediction="flow"',
        "diffusion.weighting=soft-min-snr",
        "diffusion.min_snr_gamma=4",
        "diffusion.time_sampling=log-normal",
        "diffusion.p_mean=0.0",
        "diffusion.p_std=1.0",
    ],
    "min-snr-shifted-edm": [
        'diffusion.schedule={"kind": "edm", "shift": -1.0}',
        'diffusion.prediction="edm"',
        "diffusion.weighting=min-snr",
    ],
}


@pytest.fixture(scope="module")
def folder(image_folder, tmp_path_factory):
    """24 random 16 x 16 images in 3 labelled classes (tests/conftest.py)."""
    return image_folder(tmp_path_factory.mktemp("imgs"), 24, 16, ["cat", "dog", "owl"])


@pytest.mark.parametrize("recipe", sorted(RECIPES))
def test_recipe_trains_stores_its_schedule_and_samples(recipe, folder, tmp_path, capsys):
    out = tmp_path / "run"
    extra = [arg for setting in RECIPES[recipe] for arg in ("--set", setting)]
    code, err = run_main(capsys, *train_args(folder, out, 2, *extra))
    assert code == 0, err
    losses = [float(row["loss"]) for row in csv.DictReader((out / "log.csv").open())]
    assert len(losses) == 2 and all(math.isfinite(x) and x > 0 for x in losses)
    stored = json.loads((out / "config.json").read_text())["train"]["diffusion"]
    for setting in RECIPES[recipe]:  # as given, so sampling can rebuild what was trained
        path, value = parse_override(setting)
        assert stored[path[1]] == value, setting
    schedule = load(out).denoiser.schedule
    assert isinstance(schedule, ShiftedSchedule)
    assert schedule == schedule_from_dict(stored["schedule"])
    code, err = run_main(
        capsys, "sample", str(out), "-n", "2", "--steps", "2", "--out", str(tmp_path / "s"),
        "--no-progress",
    )  # fmt: skip
    assert code == 0, err
    assert sorted(p.name for p in (tmp_path / "s").glob("0*.png")) == ["000000.png", "000001.png"]


@pytest.mark.parametrize(
    ("setting", "message"),
    [
        (
            "diffusion.weighting=bogus",
            "diffusion.weighting must be one of "
            "['none', 'min-snr', 'soft-min-snr', 'sigmoid'], got 'bogus'",
        ),
        (
            "diffusion.time_sampling=bogus",
            "diffusion.time_sampling must be one of "
            "['uniform', 'log-normal', 'logit-normal'], got 'bogus'",
        ),
        ("diffusion.schedule.shift=-1.4", "the discrete 'linear' schedule cannot take a shift"),
        ("diffusion.schedule.interpolate=true", "'interpolate' needs a 'shift'"),
        ("diffusion.p_std=0", "diffusion.p_std must be > 0, got 0"),
        ("diffusion.min_snr_gamma=-5", "diffusion.min_snr_gamma must be > 0, got -5"),
    ],
)
def test_bad_recipe_settings_are_one_line_errors(tmp_path, capsys, setting, message):
    code, err = run_main(capsys, "train", "--out", str(tmp_path / "r"), "--set", setting)
    assert code == 2 and message in err and err.count("\n") == 1, err
    assert not (tmp_path / "r").exists()
