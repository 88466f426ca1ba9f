"""What the video networks share: clip inputs turned into the per-frame inputs of their image
network, the configs' image part, and loading an image network's weights into a video one.

A clip batch is x of shape (B, F, C, H, W) with c_noise (B,) and a :class:`Cond` for each clip
(labels, text context, pooled embedding: shared by the clip's frames). The fields shaped like
the clip, ``low_res``, ``self_cond``, ``control`` and ``known``, are (B, F, ...): one per frame.

A network with ``known_frames`` also takes, per frame, the known frames' pixels and a mask
(``cond.known``, (B, F, C + 1, H, W); Ho et al. 2022a, Sec. 3.1, conditioning by concatenation):
its image network concatenates them to x_t as its control map (``control_channels`` C + 1,
:func:`pixdiff.nets.layers.network_input`), and their input weights start at zero, so the
network starts as one without them (:func:`zero_known_inputs`, :func:`init_from_image`).
"""

from __future__ import annotations

import dataclasses
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

import torch
from torch import Tensor, nn

from pixdiff.conditioning import Cond
from pixdiff.nets.checks import (
    broadcast_c_noise,
    check_cond,
    check_config_ints,
    check_shape,
    required_cond,
    self_conditioned,
    state_mismatch,
)

PER_FRAME = ("low_res", "self_cond", "control", "known")  # Cond fields given for every frame

C = TypeVar("C")


def image_fields(config: Any, image_cls: type) -> dict[str, Any]:
    """The fields of ``config`` that ``image_cls`` (the image network's config) declares."""
    return {f.name: getattr(config, f.name) for f in dataclasses.fields(image_cls)}


@dataclasses.dataclass(frozen=True)
class TemporalOptions:
    """The fields every video network config adds to its image network's.

    Attributes:
        num_frames: frames of the clips the network is trained on (the default clip length
            of sampling); the network accepts any number of frames.
        temporal_pos_bias: learned relative position bias in temporal attention (T5 buckets,
            :class:`.temporal.RelativePositionBias`); False leaves attention blind to frame order.
        pos_bias_buckets: buckets of frame offsets (T5: 32); half for each direction.
        pos_bias_max_distance: offsets from this on share the last bucket (T5: 128).
        known_frames: also take known frames and their mask, ``cond.known`` (Ho et al. 2022a,
            Sec. 3.1; trained with ``data.known_frames``): image-to-video, interpolation and
            extension. Absent at a call, nothing is known (all zeros).
    """

    num_frames: int = 8
    temporal_pos_bias: bool = True
    pos_bias_buckets: int = 32
    pos_bias_max_distance: int = 128
    known_frames: bool = False

    def check_temporal(self) -> None:
        """Raise a ValueError naming a temporal field out of range."""
        check_config_ints(
            self, positive=("num_frames", "pos_bias_buckets", "pos_bias_max_distance")
        )
        if self.pos_bias_buckets < 4 or self.pos_bias_max_distance <= self.pos_bias_buckets // 4:
            raise ValueError(
                f"pos_bias_buckets={self.pos_bias_buckets} must be >= 4 and "
                f"pos_bias_max_distance={self.pos_bias_max_distance} above pos_bias_buckets / 4"
            )
        if self.known_frames and getattr(self, "control_channels", 0):
            raise ValueError("known_frames uses the control input: set control_channels=0")

    def spatial_fields(self, image_cls: type) -> dict[str, Any]:
        """The per-frame image network's config fields: this config's, with the known frames
        and their mask (C + 1 channels) as its control map when ``known_frames``."""
        fields = image_fields(self, image_cls)
        if self.known_frames:
            fields["control_channels"] = fields["in_channels"] + 1
        return fields

    def sample_frames(self, frames: int | None) -> int:
        """The clip length to sample: ``frames``, else ``num_frames``; a ValueError beyond
        ``num_frames``. The relative position bias was learned on offsets below num_frames
        only, and T5's log-spaced buckets give longer offsets a bias no clip trained
        (Raffel et al. 2020, Sec. 2.1), so the network does not extrapolate in time."""
        if frames is None:
            return self.num_frames
        if not 1 <= frames <= self.num_frames:
            raise ValueError(
                f"--frames {frames}: the model was trained on {self.num_frames}-frame clips and "
                f"makes 1 to {self.num_frames} frames (its temporal position bias never saw "
                "longer offsets)"
            )
        return frames

    @classmethod
    def from_image(cls: type[C], image: Any, **video_fields: Any) -> C:
        """This video config with every field of the image network's config ``image`` and
        the given video fields (``num_frames``, the temporal layers' placement, ...)."""
        return cls(**image_fields(image, type(image)), **video_fields)


def check_clip(x: Tensor, *, channels: int, who: str) -> tuple[int, int]:
    """(B, F) of a clip batch; a ValueError unless x is (B, F, channels, H, W)."""
    if x.dim() != 5 or x.shape[2] != channels:
        raise ValueError(
            f"{who} expects clips x of shape (B, F, {channels}, H, W), got {tuple(x.shape)}"
        )
    return x.shape[0], x.shape[1]


def check_independent(independent: Tensor | None, batch: int) -> None:
    """A ValueError unless ``independent`` is None or a (B,) bool tensor."""
    if independent is None:
        return
    if independent.dtype != torch.bool or tuple(independent.shape) != (batch,):
        raise ValueError(
            f"independent_frames must be a bool tensor of shape ({batch},) (one flag per clip), "
            f"got {independent.dtype} {tuple(independent.shape)}"
        )


def frames_cond(cond: Cond | None, batch: int, frames: int, *, config: Any, who: str) -> Cond:
    """The per-frame Cond of the B * F frames from the per-clip ``cond`` of B clips.

    Checked at the clip level first (fields the network was built for, batch B), so a wrong
    condition names the clip batch; clip fields are repeated for each frame, the fields in
    :data:`PER_FRAME` flattened from (B, F, ...) to (B * F, ...).
    """
    optional = ("self_cond",) * self_conditioned(config) + ("known",) * config.known_frames
    cond = check_cond(cond, batch=batch, required=required_cond(config), who=who, optional=optional)
    for name in PER_FRAME:
        value = getattr(cond, name)
        if value is not None and (value.dim() < 2 or value.shape[1] != frames):
            raise ValueError(
                f"{who}: cond.{name} is given per frame, (B={batch}, F={frames}, ...), "
                f"got {tuple(value.shape)}"
            )
    spread = {
        n: v.flatten(0, 1) if n in PER_FRAME else v.repeat_interleave(frames, dim=0)
        for n, v in ((n, getattr(cond, n)) for n in cond.present())
    }
    return dataclasses.replace(cond, **spread)


def frames_inputs(
    x: Tensor,
    c_noise: Tensor | float,
    cond: Cond | None,
    independent: Tensor | None,
    *,
    config: Any,
    who: str,
) -> tuple[Tensor, Tensor, Cond]:
    """Check a clip batch and return the image network's inputs for its B * F frames:
    (x (B * F, C, H, W), c_noise (B * F,), Cond for every frame)."""
    batch, frames = check_clip(x, channels=config.in_channels, who=who)
    check_independent(independent, batch)
    c_noise = broadcast_c_noise(c_noise, batch, x.device).repeat_interleave(frames)
    per_frame = frames_cond(cond, batch, frames, config=config, who=who)
    if config.known_frames:
        per_frame = known_as_control(per_frame, x)
    return x.flatten(0, 1), c_noise, per_frame


def known_as_control(cond: Cond, x: Tensor) -> Cond:
    """The per-frame Cond with ``known`` (B * F, C + 1, H, W), zeros when absent, moved to
    the image network's control map, which it concatenates to x_t."""
    b, f, c, h, w = x.shape
    known = cond.known
    if known is None:
        known = x.new_zeros(b * f, c + 1, h, w)
    check_shape("known", known, (b * f, c + 1, h, w))
    return dataclasses.replace(cond, known=None, control=known)


def split_independent(
    cond: Cond | None, independent: Tensor | None, *, who: str
) -> tuple[Cond | None, Tensor | None]:
    """(the Cond less its ``independent_frames``, the flag from either place); a ValueError
    when both give it. The image network never sees the field."""
    if cond is None or cond.independent_frames is None:
        return cond, independent
    if independent is not None:
        raise ValueError(f"{who}: independent_frames given both as an argument and in cond")
    rest = dataclasses.replace(cond, independent_frames=None)
    return (rest if rest.present() else None), cond.independent_frames


class VideoNet(nn.Module, ABC):
    """What a factorised video network is: an image network ``spatial`` run on every frame,
    and temporal layers it reaches through the image network's ``block_hook``.

    Subclasses set ``config``, ``spatial`` and ``temporal`` and give :meth:`block_hook`.
    """

    config: Any
    spatial: nn.Module

    def forward(
        self,
        x: Tensor,
        c_noise: Tensor,
        cond: Cond | None = None,
        *,
        independent_frames: Tensor | None = None,
    ) -> Tensor:
        """Predict the network output for noisy clips.

        Args:
            x: (B, F, in_channels, H, W) noisy clips; H and W as the image network needs.
            c_noise: (B,) noise conditioning of each clip, or a scalar.
            cond: one Cond per clip (label, context, pooled: shared by its frames; low_res,
                self_cond and control given per frame as (B, F, ...)).
            independent_frames: (B,) bool, True where a clip's frames are unrelated images
                (joint image-video training, Ho et al. 2022a, Sec. 3): each frame attends only
                to itself and skips the temporal convolutions. None: every clip is a video.
                The same flag may come as ``cond.independent_frames`` (how the trainer and
                the Denoiser pass it), not both.

        Returns:
            (B, F, out_channels * (2 if learn_sigma else 1), H, W).
        """
        who = type(self).__name__
        cond, independent_frames = split_independent(cond, independent_frames, who=who)
        frames_x, frames_noise, frames_cond = frames_inputs(
            x, c_noise, cond, independent_frames, config=self.config, who=who
        )
        hook = self.block_hook(x.shape[1], independent_frames)
        out = self.spatial(frames_x, frames_noise, frames_cond, block_hook=hook)
        return out.unflatten(0, (x.shape[0], x.shape[1]))

    @abstractmethod
    def block_hook(self, frames: int, independent: Tensor | None) -> Callable[..., Tensor]:
        """The image network's ``block_hook`` that runs the temporal layers on clips of
        ``frames`` frames."""

    @abstractmethod
    def input_conv(self) -> nn.Conv2d:
        """The image network's first layer, which x_t and the known frames enter."""

    def required_cond(self) -> list[str]:
        """Names of the Cond fields this network needs on every call (the known frames'
        control map is filled in when absent)."""
        needed = self.spatial.required_cond()
        return [n for n in needed if not (n == "control" and self.config.known_frames)]


def zero_known_inputs(video_net: VideoNet) -> None:
    """Zero the input weights of the known frames and mask (the input's last C + 1 channels),
    so a fresh network's output does not depend on them: it starts as one without known
    frames, as ControlNet's zero convolutions start (Zhang et al. 2023, Sec. 3.1)."""
    if video_net.config.known_frames:
        with torch.no_grad():
            video_net.input_conv().weight[:, -known_channels(video_net.config) :].zero_()


def known_input(clips: Tensor, given: Tensor) -> Tensor:
    """``cond.known`` for clips (B, F, C, H, W) of which the frames where ``given`` (B, F) bool
    is True are known: (B, F, C + 1, H, W), the given frames' pixels (zeros elsewhere) and the
    mask channel (Ho et al. 2022a, Sec. 3.1)."""
    mask = given.to(clips.dtype)[:, :, None, None, None].expand(
        *clips.shape[:2], 1, *clips.shape[3:]
    )
    return torch.cat([clips * mask, mask], dim=2)


def known_channels(config: Any) -> int:
    """Channels of ``cond.known`` per frame: the frame's C and the mask (0 without)."""
    return config.in_channels + 1 if config.known_frames else 0


def with_known_inputs(own: Mapping[str, Tensor], state: Mapping[str, Tensor], extra: int):
    """``state`` (an image network's, or a video network's without known frames) with zero
    input weights appended for the ``extra`` known-frame channels, where a weight of ``own``
    has exactly that many more input channels (the first layer's); others unchanged."""
    out = dict(state)
    for key, theirs in state.items():
        mine = own.get(key)
        grown = mine is not None and mine.dim() == 4 and theirs.dim() == 4
        if grown and mine.shape[1] == theirs.shape[1] + extra and mine.shape[0] == theirs.shape[0]:
            out[key] = torch.cat(
                [theirs, theirs.new_zeros(theirs.shape[0], extra, *theirs.shape[2:])], 1
            )
    return out


def init_from_image(video_net: VideoNet, image_state: Mapping[str, Tensor]) -> list[str]:
    """Load an image network's weights into the spatial layers of a video network, as
    Make-A-Video (Singer et al. 2022, Sec. 3.2) starts its spatial layers from a trained
    text-to-image model and its new temporal layers as the identity.

    ``image_state`` is the state dict of the image U-Net (DiT) the video network's
    ``spatial`` submodule is: built from the same config fields (``Video*Config.from_image``).
    The temporal layers keep their zero-initialised outputs, and a network with known frames
    gets zero weights for them (:func:`with_known_inputs`), so afterwards the video network
    computes exactly the image network on every frame.

    Returns:
        The video network's state-dict keys left as they were (the temporal layers).

    Raises:
        ValueError: naming missing, unexpected and mis-shaped keys (then nothing is loaded).
    """
    spatial = video_net.spatial
    extra = known_channels(video_net.config)
    image_state = with_known_inputs(spatial.state_dict(), image_state, extra)
    mismatch = state_mismatch(spatial.state_dict(), image_state, theirs="image", ours="video")
    if mismatch:
        raise ValueError(
            f"the image weights do not fit {type(video_net).__name__}'s spatial "
            f"{type(spatial).__name__}: {mismatch}. Build the video config from the image "
            "model's (Video*Config.from_image) and pass the image network's own state dict "
            "(a text-conditioned run's is under 'net.')"
        )
    spatial.load_state_dict(dict(image_state))
    return sorted(k for k in video_net.state_dict() if not k.startswith("spatial."))
