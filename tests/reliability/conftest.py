"""A tiny finished run, trained once per session, and a fresh copy of it for each test."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from tiny_runs import image_folder, train_argv

from pixdiff.cli.main import main


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory) -> Path:
    return image_folder(tmp_path_factory.mktemp("data") / "imgs")


@pytest.fixture(scope="session")
def finished_run(tiny_data, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("runs") / "finished"
    assert main(train_argv(tiny_data, out)) == 0
    return out


@pytest.fixture
def run_copy(finished_run, tmp_path) -> Path:
    """A copy of the finished 2-step run that a test may change."""
    return Path(shutil.copytree(finished_run, tmp_path / "run"))
