"""``pixdiff eval`` with the video metrics: one clear line for an image run, a mix of video and
image metrics, or a dataset without motions; the held-out protocol's clip specs."""

import pytest

from pixdiff.cli.main import main
from pixdiff.eval.video_report import held_out_specs

pytestmark = pytest.mark.usefixtures("one_thread")


def test_video_metrics_of_an_image_run_are_refused(capsys):
    argv = ["eval", "--metrics", "fvd,motion", "-n", "4", "--steps", "1", "--no-progress"]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "score clips, but the model makes images shaped (1, 28, 28)" in err[0]
    assert main(["eval", "--metrics", "fvd,fd", "-n", "4", "--no-progress"]) == 2
    assert "unknown video metric(s) ['fd']; valid: fvd, motion, frame-fd, temporal" in (
        capsys.readouterr().err
    )


def test_held_out_specs():
    scored, reference = held_out_specs("emoji-clips", (8, 3, 32, 32), 256)
    assert (scored.split, reference.split) == ("test", "test")
    assert (scored.seed, reference.seed) == (1, 0)
    assert (reference.source, reference.frames, reference.size) == ("emoji", 8, 32)
    with pytest.raises(ValueError, match="synthetic clips .* got --data 'fashion-mnist'"):
        held_out_specs("fashion-mnist", (8, 1, 32, 32), 256)


@pytest.fixture(scope="module")
def video_run(tmp_path_factory):
    """A 1-step text-to-video run on 4-frame grey clips (the trainer's video path)."""
    root = tmp_path_factory.mktemp("video-eval")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("PIXDIFF_CACHE", str(root / "cache"))
        argv = ["train", "--data", "fashion-clips", "--frames", "4", "--set", "data.num_clips=8",
                "--preset", "video-unet-tiny", "--image-size", "32", "--batch-size", "4",
                "--no-progress", "--set", "run.sample_every=0", "--set", "run.threads=1",
                "--set", "model.overrides.model_channels=8", "--steps", "1",
                "--out", str(root / "run")]  # fmt: skip
        assert main(argv) == 0
    return root


def test_eval_of_a_video_run(video_run, monkeypatch, capsys):
    import json

    monkeypatch.setenv("PIXDIFF_CACHE", str(video_run / "cache"))
    out = video_run / "eval.json"
    argv = ["eval", str(video_run / "run"), "-n", "40", "--steps", "1", "--no-progress",
            "--metrics", "motion,temporal,frame-fd", "--out", str(out)]  # fmt: skip
    assert main(argv) == 0
    scores = json.loads(out.read_text())["metrics"]["clips"]
    assert set(scores) == {"n", "motion_acc", "temporal", "temporal_real", "temporal_ratio",
                           "frame_fd"}  # fmt: skip
    assert 0 <= scores["motion_acc"] <= 1 and scores["temporal_real"] > 0
    argv[argv.index("motion,temporal,frame-fd")] = "fvd"  # 40 clips < 129
    assert main(argv) == 2
    assert "FD needs at least D+1 = 129 samples" in capsys.readouterr().err
