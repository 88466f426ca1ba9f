"""The lines a training command prints once before its first step: what is trained on what,
with which batch, for how long, where, and where the logs go."""

from __future__ import annotations

from pathlib import Path

from torch import nn

from pixdiff.config import TrainConfig
from pixdiff.data import ImageSet
from pixdiff.training.loggers import TENSORBOARD_DIR


def banner(title: str, rows: dict[str, str]) -> str:
    """``title`` and one indented ``name  value`` line per row, names aligned."""
    width = max(map(len, rows))
    return "\n".join([title, *(f"  {name:<{width}}  {value}" for name, value in rows.items())])


def parameters(net: nn.Module) -> str:
    """'1,234,567 parameters', with the trainable ones when some are frozen (a text encoder)."""
    total = sum(p.numel() for p in net.parameters())
    trainable = sum(p.numel() for p in net.parameters() if p.requires_grad)
    frozen = f" ({trainable:,} trainable)" if trainable != total else ""
    return f"{total:,} parameters{frozen}"


def data_row(data: ImageSet) -> str:
    """'fashion-mnist-train: 60,000 images of 1x28x28' ('... clips of 16x1x32x32')."""
    kind = "clips" if data.images.dim() == 5 else "images"
    return f"{data.name}: {len(data):,} {kind} of {'x'.join(map(str, data.images.shape[1:]))}"


def batch_row(batch_size: int, grad_accum: int = 1, processes: int = 1) -> str:
    """The global batch and how it is made: '256 (64 per micro-batch x 2 accumulation steps x
    2 processes)'; the batch alone when it is one micro-batch."""
    parts = [f"{batch_size // (grad_accum * processes)} per micro-batch"]
    if grad_accum > 1:
        parts.append(f"{grad_accum} accumulation steps")
    if processes > 1:
        parts.append(f"{processes} processes")
    return f"{batch_size}" + (f" ({' x '.join(parts)})" if len(parts) > 1 else "")


def logs_row(logger: str, log_every: int, out: Path) -> str:
    """'every 50 steps to log.csv, TensorBoard in RUN/tensorboard'."""
    where = "log.csv"
    if logger == "tensorboard":
        where += f", TensorBoard in {out / TENSORBOARD_DIR}"
    return f"every {f'{log_every} steps' if log_every > 1 else 'step'} to {where}"


def steps_row(steps: int, resume_step: int) -> str:
    resumed = f", resuming at step {resume_step:,}" if resume_step else ""
    return f"{steps:,}{resumed}"


def train_banner(cfg: TrainConfig, data: ImageSet, state, world, device, out: Path) -> str:
    """The banner of ``pixdiff train``; ``state`` is the (restored) TrainState."""
    rows = {
        "model": f"{cfg.model.preset}, {parameters(state.net)}",
        "data": data_row(data),
        "batch": batch_row(cfg.optim.batch_size, cfg.optim.grad_accum, world.world_size),
        "steps": steps_row(cfg.run.steps, state.step),
        "device": f"{device}, precision {cfg.run.precision}",
        "logs": logs_row(cfg.run.logger, cfg.run.log_every, out),
    }
    return banner(f"pixdiff train: {out}", rows)


def distill_banner(cfg, train_cfg: TrainConfig, data: ImageSet, state, device, out: Path) -> str:
    """The banner of ``pixdiff distill``: ``cfg`` is its DistillConfig, ``state`` the
    student's (restored) TrainState."""
    phases = f"{cfg.phases} phases of {cfg.iters:,} steps" if cfg.phases > 1 else "one phase"
    rows = {
        "teacher": f"{cfg.teacher}, {cfg.method} distillation in {phases}",
        "student": parameters(state.net),
        "data": data_row(data),
        "batch": batch_row(train_cfg.optim.batch_size),
        "steps": steps_row(train_cfg.run.steps, state.step),
        "device": f"{device}, precision {train_cfg.run.precision}",
        "logs": logs_row(train_cfg.run.logger, train_cfg.run.log_every, out),
    }
    return banner(f"pixdiff distill: {out}", rows)
