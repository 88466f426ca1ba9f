"""The precision a network runs in: fp32, or bf16 / fp16 mixed precision by autocast
(Micikevicius et al. 2018, "Mixed Precision Training"), for sampling and for training.

Only the network's matrix products and convolutions run in the lower precision; what is built
on its output (the sampler's state, the loss) stays float32.
"""

from __future__ import annotations

import warnings
from contextlib import AbstractContextManager, nullcontext
from typing import Literal, get_args

import torch

NetDtype = Literal["fp32", "bf16", "fp16"]
NET_DTYPES: tuple[str, ...] = get_args(NetDtype)
TORCH_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def check_net_dtype(name: str) -> NetDtype:
    """``name`` if it is one of NET_DTYPES, else a one-line ValueError listing them."""
    if name not in NET_DTYPES:
        raise ValueError(f"unknown precision {name!r}; valid: {', '.join(NET_DTYPES)}")
    return name  # type: ignore[return-value]


def autocast(name: NetDtype, device_type: str) -> AbstractContextManager:
    """A context in which the network runs in precision ``name`` on ``device_type`` (cpu,
    cuda, mps): torch's autocast for bf16 and fp16, nothing for fp32. A precision this torch
    cannot autocast to on that device is a one-line ValueError (torch itself would only warn
    and run in fp32)."""
    if check_net_dtype(name) == "fp32":
        return nullcontext()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # torch warns, then disables autocast, when unsupported
        try:
            return torch.autocast(device_type, dtype=TORCH_DTYPES[name])
        except (UserWarning, RuntimeError) as e:
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            hint = "use bf16 or fp32" if device_type == "cpu" else "use fp32"
            raise ValueError(
                f"{name} is not supported on {device_type} here ({first}); {hint}"
            ) from None


__all__ = ["NET_DTYPES", "TORCH_DTYPES", "NetDtype", "autocast", "check_net_dtype"]
