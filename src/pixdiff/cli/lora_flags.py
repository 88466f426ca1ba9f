"""``--lora`` and ``--lora-scale``: LoRA adapters applied to the model a command samples
(:mod:`pixdiff.loras`), stacked in the order given."""

from __future__ import annotations

from pixdiff.checkpoint import LoadedModel
from pixdiff.loras import apply_loras, is_lora_run, load_lora_run


def add_lora_flags(p) -> None:
    p.add_argument(
        "--lora",
        action="append",
        default=[],
        metavar="PATH",
        help="apply a LoRA (a lora.safetensors file or a LoRA run) trained on this run; "
        "repeat to stack several",
    )
    p.add_argument(
        "--lora-scale",
        type=float,
        action="append",
        default=[],
        metavar="S",
        help="strength of each LoRA (1: as trained, 0: the base): one value for every LoRA, "
        "or one per LoRA in order, a LoRA run given as RUN first",
    )


def with_loras(args, model: LoadedModel, *, ema: bool, device: str) -> LoadedModel:
    """``model`` with the LoRAs of --lora applied at their --lora-scale; a LoRA run given as
    the run is reloaded at its scale. Refuses a LoRA of another base (one line)."""
    own = args.run is not None and is_lora_run(args.run)
    count = len(args.lora) + own
    scales = list(args.lora_scale)
    if scales and count == 0:
        raise ValueError("--lora-scale needs a LoRA: --lora PATH or a LoRA run as RUN")
    if len(scales) == 1:
        scales = scales * count
    if scales and len(scales) != count:
        raise ValueError(f"{count} LoRAs but {len(scales)} --lora-scale values")
    scales = scales or [1.0] * count
    if own and scales[0] != 1.0:
        model = load_lora_run(args.run, ema=ema, device=device, scale=scales[0])
    if args.lora:
        apply_loras(model, args.lora, scales=scales[own:])
    return model
