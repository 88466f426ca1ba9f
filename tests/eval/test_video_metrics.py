"""Video metrics (eval/video.py) and the motion classifier's store (eval/motion_classifier.py):
the FVD-style distance of a set against itself is ~0 and grows when frames are shuffled in time,
motion accuracy with a stub classifier, temporal consistency of static vs moving clips, the
reference cache, the save/load round trip, and one-line errors for bad input."""

from __future__ import annotations

import pytest
import torch

from pixdiff.checkpoint import CheckpointError
from pixdiff.data import ClipSpec, to_model_space
from pixdiff.eval.classifier import FashionClassifier
from pixdiff.eval.features import classifier_extractor
from pixdiff.eval.motion_classifier import (
    ClipExtractor,
    load_clip_extractor,
    load_video_classifier,
    save_video_classifier,
)
from pixdiff.eval.video import (
    clip_reference,
    motion_accuracy,
    parse_video_metrics,
    real_reference,
    score_clips,
    shuffle_frames,
    temporal_change,
)
from pixdiff.nets.video_classifier import VideoClassifier, VideoClassifierConfig

D = 6  # feature width of the tiny nets: FD needs D + 1 clips


def tiny_clip_extractor(seed: int = 0) -> ClipExtractor:
    torch.manual_seed(seed)
    config = VideoClassifierConfig(channels=(4, 8), feature_dim=D, image_size=8, num_frames=4)
    return ClipExtractor(VideoClassifier(config), name="tiny", fingerprint=f"seed{seed}")


def tiny_frame_extractor():
    torch.manual_seed(1)
    model = FashionClassifier(channels=(2, 2, 2), feature_dim=D, in_channels=3, image_size=8)
    return classifier_extractor(model, name="tiny-frames", fingerprint="t")


def moving_dots(n: int, frames: int = 4, *, seed: int = 0) -> torch.Tensor:
    """n clips (n, F, 3, 8, 8) in [-1, 1]: a 2x2 dot moving one pixel per frame rightwards, from
    a random start, on a random grey background."""
    g = torch.Generator().manual_seed(seed)
    clips = torch.rand(n, 1, 3, 1, 1, generator=g).expand(n, frames, 3, 8, 8) * 0.5 - 1
    clips = clips.clone()
    for i in range(n):
        y, x = torch.randint(0, 6, (2,), generator=g).tolist()
        x = min(x, 7 - frames)
        for f in range(frames):
            clips[i, f, :, y : y + 2, x + f : x + f + 2] = 1.0
    return clips


class FrameDifferences:
    """A clip extractor that sees motion by construction: its features are the frame-to-frame
    differences, average-pooled to 2x2 (N, (F - 1) * 4); no logits."""

    def embed(self, clips):
        diffs = (clips[:, 1:] - clips[:, :-1]).mean(2)  # (N, F - 1, H, W)
        pooled = torch.nn.functional.adaptive_avg_pool2d(diffs, 2)
        return pooled.flatten(1).double(), None


@pytest.fixture(scope="module")
def extractors():
    return tiny_clip_extractor(), tiny_frame_extractor()


def test_fvd_of_a_set_against_itself_is_zero_and_grows_when_shuffled(extractors):
    _, frames_ex = extractors
    clips_ex = FrameDifferences()
    real = moving_dots(64)
    reference = real_reference(real, clip_extractor=clips_ex, frame_extractor=frames_ex)
    same = score_clips(real, None, reference, clip_extractor=clips_ex, frame_extractor=frames_ex,
                       metrics=["fvd", "frame-fd"])  # fmt: skip
    assert same["fvd"] == pytest.approx(0, abs=1e-8)
    assert same["frame_fd"] == pytest.approx(0, abs=1e-8)
    shuffled = shuffle_frames(real, generator=torch.Generator().manual_seed(0))
    assert sorted(shuffled[0].flatten(1).sum(1).tolist()) == pytest.approx(
        sorted(real[0].flatten(1).sum(1).tolist())
    )  # the same frames, in another order
    worse = score_clips(shuffled, None, reference, clip_extractor=clips_ex,
                        frame_extractor=frames_ex, metrics=["fvd", "frame-fd"])  # fmt: skip
    held_out = score_clips(moving_dots(64, seed=1), None, reference, clip_extractor=clips_ex,
                           frame_extractor=frames_ex, metrics=["fvd"])  # fmt: skip
    assert worse["fvd"] > 3 * held_out["fvd"] > 0
    # frame-level FD ignores the order: it cannot see the shuffle
    assert worse["frame_fd"] == pytest.approx(0, abs=1e-8)


class StubClassifier:
    """Predicts the motion of each clip from a lookup by its first pixel (a stand-in for the
    shipped weights): logits one-hot at ``truth[i]``."""

    def __init__(self, truth: torch.Tensor):
        self.truth = truth

    def embed(self, clips):
        logits = torch.nn.functional.one_hot(self.truth[: len(clips)], 16).double()
        return logits.clone(), logits


def test_motion_accuracy_with_a_stub_classifier(extractors):
    _, frames_ex = extractors
    real = moving_dots(8)
    motions = torch.tensor([0, 1, 2, 3, 4, 5, 6, 7])
    reference = real_reference(
        real, clip_extractor=tiny_clip_extractor(), frame_extractor=frames_ex
    )
    stub = StubClassifier(motions)
    score = score_clips(real, motions, reference, clip_extractor=stub, frame_extractor=frames_ex,
                        metrics=["motion"])  # fmt: skip
    assert score == {"n": 8.0, "motion_acc": 1.0}
    half = motions.clone()
    half[:4] = 15
    assert motion_accuracy(stub.embed(real)[1], half) == 0.5
    with pytest.raises(ValueError, match=r"motion ids must be in 0\.\.15"):
        motion_accuracy(stub.embed(real)[1], motions + 10)


def test_temporal_consistency_static_vs_moving(extractors):
    _, frames_ex = extractors
    moving = moving_dots(16)
    static = moving[:, :1].expand_as(moving).contiguous()
    reference = real_reference(
        moving, clip_extractor=tiny_clip_extractor(), frame_extractor=frames_ex
    )
    kw = {"clip_extractor": tiny_clip_extractor(), "frame_extractor": frames_ex,
          "metrics": ["temporal"]}  # fmt: skip
    still = score_clips(static, None, reference, **kw)
    moved = score_clips(moving, None, reference, **kw)
    assert still["temporal"] == 0.0
    assert moved["temporal"] > 0
    assert moved["temporal_ratio"] == pytest.approx(1.0)
    assert moved["temporal_real"] == pytest.approx(moved["temporal"])
    feats = torch.tensor([[[0.0, 0.0], [3.0, 4.0], [3.0, 4.0]]])  # changes 5, then 0
    assert temporal_change(feats).tolist() == [2.5]


def test_bad_input_is_one_clear_line(extractors):
    clips_ex, frames_ex = extractors
    real = moving_dots(8)
    reference = real_reference(real, clip_extractor=clips_ex, frame_extractor=frames_ex)
    kw = {"clip_extractor": clips_ex, "frame_extractor": frames_ex}
    with pytest.raises(
        ValueError, match=r"unknown video metric\(s\) \['fid'\]; valid: fvd, motion"
    ):
        parse_video_metrics("fvd,fid")
    with pytest.raises(
        ValueError, match=r"takes clips shaped \(N, F, C, H, W\) .* got \(8, 3, 8, 8\)"
    ):
        score_clips(real[:, 0], None, reference, **kw)
    with pytest.raises(
        ValueError, match=r"shaped \(2, 3, 8, 8\) .* reference clips \(4, 3, 8, 8\)"
    ):
        score_clips(real[:, :2], None, reference, **kw)
    with pytest.raises(ValueError, match=r"\[-1, 1\]"):
        score_clips(real * 3, None, reference, **kw)
    with pytest.raises(ValueError, match="needs the motion id"):
        score_clips(real, None, reference, metrics=["motion"], **kw)
    with pytest.raises(ValueError, match="FD needs at least D\\+1"):
        score_clips(real[:3], None, reference, metrics=["fvd"], **kw)


def test_classifier_round_trip_and_errors(tmp_path):
    model = tiny_clip_extractor().model
    folder = save_video_classifier(model, tmp_path / "motion", metadata={"acc": 0.5})
    loaded = load_video_classifier(folder)
    clips = moving_dots(3)
    assert torch.equal(loaded(clips), model.eval()(clips))
    ex = load_clip_extractor(str(folder))
    assert ex.name == "video-classifier-motion" and len(ex.fingerprint) == 16
    # frames of another size and grey clips are fitted to the network
    feats, logits = ex.embed(clips[:, :, :1].repeat(1, 1, 1, 2, 2))
    assert feats.shape == (3, D) and logits.shape == (3, 16)
    with pytest.raises(FileNotFoundError, match="unknown clip extractor"):
        load_clip_extractor(str(tmp_path / "nowhere"))
    (folder / "config.json").write_text('{"format": "something else"}')
    with pytest.raises(CheckpointError, match="not a pixdiff video classifier"):
        load_video_classifier(folder)


def test_clip_reference_is_cached(tmp_path, extractors, monkeypatch):
    clips_ex, frames_ex = extractors
    spec = ClipSpec(source="emoji", size=32, frames=4, num_clips=8, split="test")
    first = clip_reference(spec, clip_extractor=clips_ex, frame_extractor=frames_ex,
                           cache_dir=tmp_path)  # fmt: skip
    assert len(list(tmp_path.glob("clips-emoji-test-32px-4f-n8-*.safetensors"))) == 1

    def no_render(*args, **kwargs):
        raise AssertionError("the cached reference was not used")

    monkeypatch.setattr("pixdiff.eval.video.load_clips", no_render)
    again = clip_reference(spec, clip_extractor=clips_ex, frame_extractor=frames_ex,
                           cache_dir=tmp_path)  # fmt: skip
    assert again.clip_shape == first.clip_shape == (4, 3, 32, 32)
    assert torch.equal(again.clips.sigma, first.clips.sigma)
    assert torch.equal(again.temporal, first.temporal)


def test_shipped_classifier_baselines():
    """The issue's baseline: real clips with frames shuffled in time score worse than held-out
    real clips against the real reference, and the shipped classifier tells motions apart."""
    from pixdiff.data import load_clips
    from pixdiff.eval.motion_classifier import MOTION_DIR

    if not (MOTION_DIR / "model.safetensors").is_file():
        pytest.fail(f"the shipped motion classifier is missing from {MOTION_DIR}")
    ex = load_clip_extractor()
    ref = load_clips(ClipSpec(source="both", frames=16, num_clips=160, split="test", seed=1))
    real = load_clips(ClipSpec(source="both", frames=16, num_clips=160, split="test", seed=2))
    from pixdiff.eval.fid import FeatureStats, frechet_distance

    stats = FeatureStats.from_features(ex.embed(ref.clips)[0])
    feats, logits = ex.embed(real.clips)
    shuffled = shuffle_frames(
        to_model_space(real.clips), generator=torch.Generator().manual_seed(0)
    )
    fvd_real = frechet_distance(FeatureStats.from_features(feats), stats)
    fvd_shuffled = frechet_distance(FeatureStats.from_features(ex.embed(shuffled)[0]), stats)
    assert fvd_shuffled > 2 * fvd_real
    assert motion_accuracy(logits, real.motions) > 0.8
