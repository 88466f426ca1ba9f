"""A small (2+1)D video classifier: the feature network of pixdiff's video metrics.

Each block is a spatial 3x3 convolution applied to every frame, then a temporal convolution
of 3 frames at every position, each followed by BatchNorm and ReLU: the factorised "(2+1)D"
convolution of Tran et al. 2018, "A Closer Look at Spatiotemporal Convolutions for Action
Recognition", Sec. 3.5. A spatial 2x2 max-pool ends each block; an average over frames and
positions then gives one vector per clip, and a linear layer with ReLU its penultimate
features (the FVD-style distance's features), then a linear head the motion logits.

It is trained on the 16 motions of :data:`pixdiff.data.MOTIONS` (``bench/train_motion_
classifier.py``); the averages make it accept any frame count and frame size, but its
features mean what they were trained to mean only near its training clips (16 or 8 frames of
32x32 RGB: ``pixdiff.eval.motion_classifier`` resizes frames to that).
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor, nn

from pixdiff.nets.checks import check_config_ints


@dataclass(frozen=True)
class VideoClassifierConfig:
    """The network's shape; stored in the classifier's ``config.json``.

    Attributes:
        channels: output channels of the (2+1)D blocks (each halves H and W).
        feature_dim: width of the penultimate (feature) layer.
        num_classes: classes of the head (16 motions).
        in_channels: frame channels (3: grey clips are repeated to RGB before).
        image_size: frame side it is trained at (frames are resized to it before).
        num_frames: frames of its training clips.
    """

    channels: tuple[int, ...] = (16, 32, 64)
    feature_dim: int = 128
    num_classes: int = 16
    in_channels: int = 3
    image_size: int = 32
    num_frames: int = 16

    def __post_init__(self) -> None:
        object.__setattr__(self, "channels", tuple(int(c) for c in self.channels))
        check_config_ints(
            self, positive=("feature_dim", "num_classes", "in_channels", "image_size", "num_frames")
        )
        if not self.channels or min(self.channels) < 1:
            raise ValueError(f"channels must be positive ints, got {self.channels}")
        if self.image_size < 2 ** len(self.channels):
            raise ValueError(
                f"image_size {self.image_size} is too small for {len(self.channels)} poolings"
            )


def _block(c_in: int, c_out: int) -> nn.Sequential:
    """(2+1)D block: per-frame 3x3 conv, temporal 3-tap conv (each BN + ReLU), 2x2 pool."""
    return nn.Sequential(
        nn.Conv3d(c_in, c_out, (1, 3, 3), padding=(0, 1, 1), bias=False),
        nn.BatchNorm3d(c_out),
        nn.ReLU(inplace=True),
        nn.Conv3d(c_out, c_out, (3, 1, 1), padding=(1, 0, 0), bias=False),
        nn.BatchNorm3d(c_out),
        nn.ReLU(inplace=True),
        nn.MaxPool3d((1, 2, 2)),
    )


class VideoClassifier(nn.Module):
    """(2+1)D conv blocks, a mean over (F, H, W), a feature layer and a class head.

    Args:
        config: the network's shape (:class:`VideoClassifierConfig`).
    """

    def __init__(self, config: VideoClassifierConfig | None = None) -> None:
        super().__init__()
        self.config = config or VideoClassifierConfig()
        widths = (self.config.in_channels, *self.config.channels)
        self.trunk = nn.Sequential(
            *(_block(a, b) for a, b in zip(widths[:-1], widths[1:], strict=True))
        )
        self.embed = nn.Sequential(
            nn.Linear(widths[-1], self.config.feature_dim), nn.ReLU(inplace=True)
        )
        self.head = nn.Linear(self.config.feature_dim, self.config.num_classes)

    def features(self, clips: Tensor) -> Tensor:
        """Penultimate features (B, feature_dim) of clips (B, F, C, H, W) in [-1, 1]."""
        if clips.ndim != 5 or clips.shape[2] != self.config.in_channels:
            raise ValueError(
                f"the video classifier takes clips shaped (B, F, {self.config.in_channels}, H, W), "
                f"got {tuple(clips.shape)}"
            )
        h = self.trunk(clips.transpose(1, 2))  # (B, C, F, H, W) -> (B, C', F, H / 8, W / 8)
        return self.embed(h.mean(dim=(2, 3, 4)))

    def forward(self, clips: Tensor) -> Tensor:
        """Class logits (B, num_classes) of clips (B, F, C, H, W) in [-1, 1]."""
        return self.head(self.features(clips))
