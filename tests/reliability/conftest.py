"""A tiny finished run, trained once per session, and a fresh copy of it for each test; the
reference runs the fault trials are compared with; and the suite's summary, written as JSON to
$PIXDIFF_RELIABILITY_SUMMARY when that is set (RELIABILITY.md quotes it)."""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

import pytest
import torch
from faults import TALLY
from tiny_runs import LONG_STEPS, image_folder, input_images, long_argv, train_argv

from pixdiff.cli.main import main
from pixdiff.eval.inception import FIDInceptionV3

SUMMARY = "PIXDIFF_RELIABILITY_SUMMARY"


@pytest.fixture(scope="session", autouse=True)
def summary(request):
    """Write what the suite did (faults.TALLY) to $PIXDIFF_RELIABILITY_SUMMARY at the end."""
    start = time.monotonic()
    yield TALLY
    path = os.environ.get(SUMMARY)
    if path:
        TALLY.write(
            Path(path),
            tests_failed=request.session.testsfailed,
            seconds=round(time.monotonic() - start, 1),
            cpus=os.cpu_count(),
        )


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


@pytest.fixture(scope="session")
def reference_run(tiny_data, tmp_path_factory) -> Path:
    """An uninterrupted run of LONG_STEPS steps, what every interrupted one must end as."""
    out = tmp_path_factory.mktemp("runs") / f"reference-{LONG_STEPS}"
    assert main(long_argv(tiny_data, out)) == 0
    return out


@pytest.fixture(scope="session")
def paths(tiny_data, finished_run, tmp_path_factory) -> dict[str, Path]:
    """What :func:`tiny_runs.cheap_argv` needs: the finished run, a 4 -> 8 super-resolution
    run, the data, input images, a copy of the run for tune-grid to write into, random
    Inception-v3 FID weights, the run exported as a diffusers folder, a TorchScript scorer, a
    pairs file and a LoRA run of it."""
    sr = tmp_path_factory.mktemp("runs") / "sr"
    assert main(train_argv(tiny_data, sr, "--sr-from", "4")) == 0
    images = input_images(tmp_path_factory.mktemp("inputs"))
    tune = shutil.copytree(finished_run, tmp_path_factory.mktemp("runs") / "tune")
    inception = tmp_path_factory.mktemp("inception") / "random.pth"  # for convert-inception
    torch.save(FIDInceptionV3().state_dict(), inception)
    diffusers = tmp_path_factory.mktemp("diffusers") / "pipeline"  # for import
    assert main(["export", str(finished_run), str(diffusers), "--to", "diffusers"]) == 0
    adapt = tmp_path_factory.mktemp("adapt")  # for make-pairs, align and lora merge
    torch.jit.trace(MeanScore(), torch.zeros(1, 3, 8, 8)).save(str(adapt / "scorer.pt"))
    pairs = adapt / "pairs.jsonl"
    pairs.write_text(json.dumps({"class": 0, "chosen": str(images["in8"]),
                                 "rejected": str(images["in8"])}) + "\n")  # fmt: skip
    lora = adapt / "lora"
    assert main(["finetune", str(finished_run), "--out", str(lora), "--data", str(tiny_data),
                 "--lora-rank", "2", "--steps", "1", "--batch-size", "4", "--no-progress",
                 "--sample-every", "0"]) == 0  # fmt: skip
    return {"run": finished_run, "sr": sr, "data": tiny_data, "tune": tune,
            "inception": inception, "diffusers": diffusers, "scorer": adapt / "scorer.pt",
            "pairs": pairs, "lora": lora, **images}  # fmt: skip


class MeanScore(torch.nn.Module):
    """A TorchScript scorer for make-pairs: an image's mean."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(1).mean(1)
