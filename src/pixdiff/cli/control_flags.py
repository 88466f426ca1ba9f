"""The spatial-control flags of ``pixdiff sample`` (and its cascades): the map, or the photo to
compute it from, the map's guidance scale, a ControlNet adapter and its strength
(docs/concepts.md, Section 18)."""

from __future__ import annotations

from dataclasses import replace

from pixdiff.adapters import is_adapter_run, load_run
from pixdiff.checkpoint import LoadedModel
from pixdiff.cli.flags import finite
from pixdiff.pipelines.control import map_from, read_control
from pixdiff.pipelines.steering import Steering


def add_control_flags(p) -> None:
    g = p.add_argument_group("spatial control (see docs/concepts.md, Spatial control)")
    given = g.add_mutually_exclusive_group()
    given.add_argument(
        "--control-image",
        default=None,
        metavar="MAP",
        help="control map image for a model trained with --control (or an adapter): the "
        "model's size (a different size is refused), grey for edges/sketch/mask, RGB for a "
        "layout (another mode is converted with a warning)",
    )
    given.add_argument(
        "--control-from",
        default=None,
        metavar="IMAGE",
        help="compute the model's kind of control map (edges, sketch, mask, layout) from this "
        "photo, of any size (cropped and resized as the training images are)",
    )
    g.add_argument(
        "--control-guidance",
        type=finite,
        default=None,
        metavar="MAP_W",
        help="the map's own guidance scale s_I, beside --guidance TEXT_W for the prompt or "
        "class (InstructPix2Pix, Brooks et al. 2023, Eq. 3); needs a model trained with "
        "control dropout (or an adapter). Default: the map is not guided",
    )
    g.add_argument(
        "--control-scale",
        type=finite,
        default=None,
        metavar="S",
        help="strength of a ControlNet adapter: its outputs times S (default 1; 0 is the base)",
    )
    g.add_argument(
        "--adapter",
        default=None,
        metavar="ADAPTER_RUN",
        help="steer RUN by this ControlNet adapter (from `pixdiff train-control`; it must have "
        "been trained on RUN). An adapter run given as RUN brings its base by itself",
    )


def load_controlled(args, *, ema: bool, device: str) -> LoadedModel | None:
    """RUN with its adapter (--adapter, or RUN an adapter run); None when neither, for the
    caller's ordinary loading."""
    if args.adapter is None and (args.run is None or not is_adapter_run(args.run)):
        return None
    if args.run is None:
        raise ValueError("--adapter ADAPTER_RUN needs the base RUN it was trained on")
    return load_run(args.run, ema=ema, device=device, adapter=args.adapter)


def with_control(args, model: LoadedModel, steering: Steering) -> Steering:
    """``steering`` with the control flags, the map read (or computed) for ``model``."""
    control = None
    if args.control_image is not None:
        control = read_control(model, args.control_image)
    elif args.control_from is not None:
        control = map_from(model, args.control_from)
    return replace(
        steering, control=control, control_guidance=args.control_guidance,
        control_scale=args.control_scale,
    )  # fmt: skip
