"""Settings that would silently change a run are refused (#14.6): --resume with a flag that
changes what the run trains (only --set changes it on purpose), and an absurd class count."""

from __future__ import annotations

import pytest
from tiny_runs import error_line, image_folder, resume_argv, run_main, snapshot, train_argv

from pixdiff.cli.main import build_parser
from pixdiff.cli.train import build_config
from pixdiff.data import load_dataset
from pixdiff.training import trainer


@pytest.mark.parametrize(
    "flags, named",
    [
        (["--image-size", "32"], "--image-size would change data.image_size of run"),
        (["--preset", "unet-small"], "--preset would change model.preset"),
        (["--seed", "3"], "--seed would change run.seed"),
        (["--formulation", "edm"], "--config/--formulation would change diffusion."),
    ],
)
def test_resume_refuses_a_flag_that_changes_the_run(run_copy, capsys, flags, named):
    before = snapshot(run_copy)
    code, err = run_main(capsys, resume_argv(run_copy, *flags))
    line = error_line(err)
    assert code == 2 and named in line and "--set" in line
    assert snapshot(run_copy) == before


def test_resume_takes_run_options_repeated_flags_and_set(run_copy, tiny_data):
    argv = resume_argv(run_copy, "--steps", "5", "--image-size", "8", "--data", str(tiny_data))
    argv += ["--device", "cpu", "--set", "data.image_size=32", "--set", "optim.lr=1e-3"]
    cfg = build_config(build_parser().parse_args(argv))
    assert (cfg.run.steps, cfg.data.image_size, cfg.optim.lr) == (5, 32, 1e-3)
    assert cfg.model.preset == "unet-tiny"  # from the run's config.json


def test_an_absurd_class_count_is_refused_unless_forced(tmp_path, capsys):
    data = image_folder(tmp_path / "data", labels=(0, 1_000_000))
    out = tmp_path / "run"
    code, err = run_main(capsys, train_argv(data, out))
    line = error_line(err)
    assert code == 2 and "1000001 classes" in line and "--force-classes" in line
    assert not out.exists()
    cfg = build_config(build_parser().parse_args(train_argv(data, out, "--force-classes")))
    images = load_dataset(str(data), image_size=8)
    assert trainer.net_config_for(cfg, images, force_classes=True).num_classes == 1_000_001
