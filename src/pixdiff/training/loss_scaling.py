"""Mixed-precision training steps: autocast to ``run.precision`` and, for fp16, dynamic loss
scaling (Micikevicius et al. 2018, "Mixed Precision Training", Sec. 3.2) by
``torch.amp.GradScaler``: the loss is multiplied by a scale S before backward so that small
gradients survive fp16, the gradients are divided by S before clipping, and a step whose
gradients overflowed is skipped with S halved (S doubles after ``growth_interval`` good
steps). The scaler's state goes into the checkpoint (:mod:`pixdiff.train_state`), so a resumed
run scales as the uninterrupted one would.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable
from contextlib import AbstractContextManager

import torch
from torch import Tensor, nn

from pixdiff.config import TrainConfig
from pixdiff.precision import autocast as net_autocast


def autocast(cfg: TrainConfig, device: torch.device) -> AbstractContextManager:
    """The network's precision for ``run.precision``: bf16 or fp16 autocast, or nothing for
    fp32 (a precision this torch cannot autocast to on the device is a one-line ValueError)."""
    return net_autocast(cfg.run.precision, device.type)


def grad_scaler(cfg: TrainConfig, device: torch.device) -> torch.amp.GradScaler | None:
    """A loss scaler for fp16 training, else None (bf16 has fp32's exponent range)."""
    if cfg.run.precision != "fp16":
        return None
    net_autocast("fp16", device.type)  # one line here if the device cannot do fp16
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch warns, then disables the scaler, where it lacks one
        try:
            scaler = torch.amp.GradScaler(device.type)
        except RuntimeError:
            scaler = None
    if scaler is None or not scaler.is_enabled():
        raise ValueError(
            f"fp16 training needs loss scaling, which this torch lacks on {device.type}; use "
            "--precision bf16 or fp32"
        )
    return scaler


def backward(loss: Tensor, scaler: torch.amp.GradScaler | None) -> None:
    """Backpropagate ``loss``, scaled by the scaler's S when there is one."""
    (loss if scaler is None else scaler.scale(loss)).backward()


def clip_and_step(
    optimizer: torch.optim.Optimizer,
    params: Iterable[nn.Parameter],
    clip: float,
    scaler: torch.amp.GradScaler | None,
) -> float:
    """Clip the (unscaled) gradients' norm to ``clip`` and step the optimizer; with a scaler a
    step whose gradients are not finite is skipped and S updated. Returns the gradients' norm
    before clipping (inf on a skipped step)."""
    if scaler is not None:
        scaler.unscale_(optimizer)
    grad_norm = nn.utils.clip_grad_norm_(params, clip).item()
    if scaler is None:
        optimizer.step()
    else:
        scaler.step(optimizer)
        scaler.update()
    return grad_norm
