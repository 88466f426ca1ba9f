"""The motion classifier's network (nets/video_classifier.py): shapes, feature width, any frame
count and size, a clear error for frames of the wrong channels, and a tiny net overfits."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from pixdiff.nets.video_classifier import VideoClassifier, VideoClassifierConfig


@pytest.fixture(autouse=True, scope="module")
def _one_thread(one_thread):
    """Single-threaded (tests/conftest.py)."""


def test_shapes_and_feature_dim():
    net = VideoClassifier().eval()
    clips = torch.rand(3, 16, 3, 32, 32) * 2 - 1
    assert net.features(clips).shape == (3, 128)
    assert net(clips).shape == (3, 16)
    # the averages over frames and positions take any frame count and size
    assert net(clips[:, ::2]).shape == (3, 16)
    assert net(torch.zeros(2, 5, 3, 64, 48)).shape == (2, 16)


def test_wrong_input_is_one_line():
    net = VideoClassifier(VideoClassifierConfig(channels=(4,), feature_dim=8, image_size=8))
    with pytest.raises(ValueError, match=r"clips shaped \(B, F, 3, H, W\), got \(2, 1, 8, 8\)"):
        net(torch.zeros(2, 1, 8, 8))
    with pytest.raises(ValueError, match="too small"):
        VideoClassifierConfig(channels=(4, 4, 4, 4), image_size=8)


def test_tiny_net_learns_direction_of_motion():
    """A bright dot moving right vs left: the same frames, opposite order, must be told apart
    (only the temporal convolutions can)."""
    torch.manual_seed(0)
    frames = torch.full((6, 3, 8, 8), -1.0)
    for f in range(6):
        frames[f, :, 3:5, f + 1] = 1.0
    clips = torch.stack([frames, frames.flip(0)])  # (2, 6, 3, 8, 8)
    net = VideoClassifier(VideoClassifierConfig(channels=(8,), feature_dim=8, num_classes=2,
                                                image_size=8, num_frames=6))  # fmt: skip
    optimizer = torch.optim.Adam(net.parameters(), lr=3e-2)
    labels = torch.tensor([0, 1])
    for _ in range(25):
        loss = F.cross_entropy(net(clips), labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert net.eval()(clips).argmax(1).tolist() == [0, 1]
