"""Checks of what a network is given: its inputs ``(x, c_noise, cond)`` against its config,
and the strict dict round-trip of the frozen config dataclasses (JSON in run directories).

Each raises one ValueError that names the problem, so a user's wrong image size or missing
condition reads as a sentence, not as a shape error deep inside a convolution.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any, TypeVar

import torch
from torch import Tensor

from pixdiff.conditioning import Cond, check_supported

C = TypeVar("C")


# ----------------------------------------------------------------------------- input checks


def check_image(x: Tensor, *, channels: int, multiple: int, who: str) -> None:
    """Raise a ValueError unless ``x`` is (N, channels, H, W), H and W multiples of ``multiple``."""
    if x.dim() != 4 or x.shape[1] != channels:
        raise ValueError(f"{who} expects x of shape (N, {channels}, H, W), got {tuple(x.shape)}")
    if x.shape[2] % multiple or x.shape[3] % multiple:
        raise ValueError(
            f"{who} needs H and W divisible by {multiple}, got {x.shape[2]}x{x.shape[3]}; "
            "resize or pad the image, or change the network's levels / patch size"
        )


def broadcast_c_noise(c_noise: Tensor | float, batch: int, device: torch.device) -> Tensor:
    """Turn a scalar or (N,) noise level into an (N,) tensor on ``device``."""
    c = torch.as_tensor(c_noise, device=device)
    if c.dim() == 0:
        c = c.expand(batch)
    if c.shape != (batch,):
        raise ValueError(f"c_noise must be a scalar or shape ({batch},), got {tuple(c.shape)}")
    return c


def check_cond(
    cond: Cond | None,
    *,
    batch: int,
    required: Sequence[str],
    who: str,
    optional: Sequence[str] = (),
) -> Cond:
    """Check ``cond`` carries exactly the fields a network was built for, with batch ``batch``.

    ``context_mask`` is optional whenever ``context`` is required, and so are the fields in
    ``optional``. Returns ``cond`` or an empty Cond.
    """
    cond = Cond() if cond is None else cond
    optional = set(optional) | ({"context_mask"} if "context" in required else set())
    check_supported(cond, set(required) | optional, who)
    missing = [n for n in required if getattr(cond, n) is None]
    if missing:
        raise ValueError(
            f"{who} was built for conditioning {list(required)} but cond lacks {missing}; "
            "for an unconditional pass give the null label (id num_classes) / empty context"
        )
    for name in cond.present():
        if getattr(cond, name).shape[0] != batch:
            raise ValueError(f"cond.{name} has batch {getattr(cond, name).shape[0]}, x has {batch}")
    return cond


def check_shape(name: str, value: Tensor, expected: tuple[int, ...]) -> None:
    """Raise a ValueError naming ``cond.<name>`` unless it has shape ``expected``."""
    if tuple(value.shape) != expected:
        raise ValueError(f"cond.{name} must have shape {expected}, got {tuple(value.shape)}")


def check_context(
    context: Tensor, context_mask: Tensor | None, *, batch: int, context_dim: int
) -> None:
    """Raise a ValueError unless context is (N, L, context_dim) and the mask (N, L) bool."""
    if context.dim() != 3 or context.shape[0] != batch or context.shape[2] != context_dim:
        raise ValueError(
            f"cond.context must be (N={batch}, L, {context_dim}), got {tuple(context.shape)}"
        )
    if context_mask is None:
        return
    if context_mask.dtype != torch.bool or context_mask.shape != context.shape[:2]:
        raise ValueError(
            f"cond.context_mask must be bool of shape {tuple(context.shape[:2])} "
            f"(True = real token), got {context_mask.dtype} {tuple(context_mask.shape)}"
        )


# ----------------------------------------------------------------------------- configs


def config_to_dict(config: Any) -> dict[str, Any]:
    """A frozen config dataclass as a JSON-ready dict (tuples become lists)."""
    return {
        k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(config).items()
    }


def check_config_ints(
    config: Any, *, positive: Sequence[str] = (), non_negative: Sequence[str] = ()
) -> None:
    """Raise a ValueError naming every integer field of ``config`` outside its allowed range."""
    bad = [
        f"{n}={getattr(config, n)!r} (must be an int >= 1)"
        for n in positive
        if not isinstance(getattr(config, n), int) or getattr(config, n) < 1
    ]
    bad += [
        f"{n}={getattr(config, n)!r} (must be an int >= 0)"
        for n in non_negative
        if not isinstance(getattr(config, n), int) or getattr(config, n) < 0
    ]
    if bad:
        raise ValueError(f"invalid {type(config).__name__}: {', '.join(bad)}")


def config_from_dict(cls: type[C], d: dict[str, Any]) -> C:
    """Strictly rebuild a config dataclass from a dict read back from JSON.

    Lists are restored to tuples; an unknown key raises a ValueError listing the valid keys.
    """
    valid = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(set(d) - set(valid))
    if unknown:
        raise ValueError(f"unknown {cls.__name__} keys {unknown}; valid keys are {valid}")
    return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in d.items()})


def required_cond(config: Any) -> list[str]:
    """Names of the Cond fields a network built from ``config`` needs on every call."""
    low_res = config.low_res_channels > 0
    wanted = {
        "label": config.num_classes > 0,
        "context": config.context_dim > 0,
        "pooled": config.pooled_dim > 0,
        "low_res": low_res,
        "low_res_noise": low_res,
        "guidance": config.guidance_embed,
        "control": control_channels(config) > 0,
    }
    return [name for name, needed in wanted.items() if needed]


def check_net_inputs(x: Tensor, cond: Cond | None, config: Any, *, multiple: int, who: str) -> Cond:
    """Validate x and cond against a UNet/DiT config, raising ValueError naming the problem."""
    c = config
    check_image(x, channels=c.in_channels, multiple=multiple, who=who)
    self_cond = ("self_cond",) if self_conditioned(c) else ()
    cond = check_cond(
        cond, batch=x.shape[0], required=required_cond(c), who=who, optional=self_cond
    )
    if cond.context is not None:
        check_context(cond.context, cond.context_mask, batch=x.shape[0], context_dim=c.context_dim)
    if cond.pooled is not None:
        check_shape("pooled", cond.pooled, (x.shape[0], c.pooled_dim))
    if cond.low_res is not None:
        if cond.low_res.dim() != 4 or cond.low_res.shape[1] != c.low_res_channels:
            raise ValueError(
                f"cond.low_res must be (N, {c.low_res_channels}, h, w), "
                f"got {tuple(cond.low_res.shape)}"
            )
        check_shape("low_res_noise", cond.low_res_noise, (x.shape[0],))
    if cond.guidance is not None:
        check_shape("guidance", cond.guidance, (x.shape[0],))
    if cond.self_cond is not None:
        check_shape("self_cond", cond.self_cond, tuple(x.shape))
    if cond.control is not None:
        n, _, h, w = x.shape
        check_shape("control", cond.control, (n, control_channels(c), h, w))
    return cond


def input_channels(config: Any) -> int:
    """Channels of a UNet/DiT's first layer: x_t, the upsampled low-res image (SR3), for
    self-conditioning the previous x0 estimate (Chen et al. 2023, Sec. 3), and a spatial
    control map (concatenated as in InstructPix2Pix, Brooks et al. 2023, Sec. 3.2)."""
    x_t = config.in_channels * (2 if self_conditioned(config) else 1)
    return x_t + config.low_res_channels + control_channels(config)


def control_channels(config: Any) -> int:
    """Channels of the control map a network config concatenates to x_t (0: none; a config
    from before the field existed has none)."""
    return int(getattr(config, "control_channels", 0))


def self_conditioned(config: Any) -> bool:
    """Whether a network config takes the previous x0 estimate (a config from before the field
    existed, or of a network without it, does not)."""
    return bool(getattr(config, "self_condition", False))


def state_mismatch(
    own: Mapping[str, Tensor], state: Mapping[str, Tensor], *, theirs: str, ours: str
) -> str:
    """What keeps ``state`` from loading into a module whose state dict is ``own``: its missing,
    unexpected and mis-shaped keys (a few of each), as ``"missing [...]; unexpected [...];
    shape mismatch ['k: <theirs> (2, 3) vs <ours> (4, 3)']"``; "" when it fits."""
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    wrong = [
        f"{k}: {theirs} {tuple(state[k].shape)} vs {ours} {tuple(own[k].shape)}"
        for k in own
        if k in state and state[k].shape != own[k].shape
    ]
    parts = [
        f"missing {missing[:5]}" if missing else "",
        f"unexpected {unexpected[:5]}" if unexpected else "",
        f"shape mismatch {wrong[:3]}" if wrong else "",
    ]
    return "; ".join(p for p in parts if p)
