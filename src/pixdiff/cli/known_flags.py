"""The known-frame flags of ``pixdiff sample`` on a video run: image-to-video from a first
frame, interpolation and extension from a clip's frames (docs/video.md, Image-to-video)."""

from __future__ import annotations

import argparse
from dataclasses import replace

from pixdiff.cli import flags
from pixdiff.pipelines.known_frames import read_known
from pixdiff.pipelines.steering import Steering


def add_known_flags(p) -> None:
    g = p.add_argument_group("known frames of a video model (see docs/video.md, Image-to-video)")
    given = g.add_mutually_exclusive_group()
    given.add_argument(
        "--first-frame",
        default=None,
        metavar="IMAGE",
        help="image-to-video: every clip starts with this image (the model's frame size)",
    )
    given.add_argument(
        "--known-frames",
        default=None,
        metavar="FILE",
        help="a GIF or video whose frames the clips show at --known-index: interpolation "
        "(e.g. 0,3), extension (its frames first: 0,1,...)",
    )
    g.add_argument(
        "--known-index",
        type=index_list,
        default=None,
        metavar="I,J,...",
        help="the clip positions (from 0) of the --known-frames, one per frame (default: "
        "0, 1, ..., its frames - 1; with --first-frame: 0)",
    )
    g.add_argument(
        "--known-mode",
        choices=("concat", "replace"),
        default=None,
        help="concat (default): the network is given the frames (a run trained with "
        "--set data.known_frames=...); replace: RePaint-style replacement at every step, any "
        "video run. Either way the given frames are pasted into the clip at the end",
    )
    flags.add_resample_flag(g)


def index_list(text: str) -> tuple[int, ...]:
    """'0,1,3' -> (0, 1, 3)."""
    try:
        return tuple(int(i) for i in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected frame positions as 0,1,3, got {text!r}"
        ) from None


def with_known(args, model, request: Steering) -> Steering:
    """The request with the known frames the flags give, read for ``model`` (its frames)."""
    known = read_known(
        model, first_frame=args.first_frame, known_frames=args.known_frames,
        known_index=args.known_index, mode=args.known_mode, resample=args.resample,
    )  # fmt: skip
    return replace(request, known=known)
