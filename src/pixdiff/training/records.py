"""What a training run records besides checkpoints: log.csv and eval.csv (truncated to the
checkpoint on resume), the periodic sample grids, and the ``run.eval_every`` metrics."""

from __future__ import annotations

import csv
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor

from pixdiff.config import TrainConfig
from pixdiff.data import ImageSet, to_model_space
from pixdiff.denoiser import Denoiser
from pixdiff.eval.report import EVAL_FIELDS, PeriodicEval, SampleSpec
from pixdiff.images import make_grid, save_png
from pixdiff.low_res import downsample
from pixdiff.nets.text import TextConditionedNet
from pixdiff.pipelines.cascade import low_res_input
from pixdiff.pipelines.generate import class_grid, generate


class CSVLog:
    """A CSV log with one row per logged step (log.csv, eval.csv); on resume, rows past the
    checkpoint are dropped."""

    FIELDS = ["step", "loss", "lr", "img_per_s", "grad_norm", "elapsed_s"]

    def __init__(self, path: Path, resume_step: int | None, fields: list[str] | None = None):
        self.path = path
        self.FIELDS = fields or self.FIELDS
        rows = []
        if resume_step is not None and path.exists():
            with path.open() as f:
                rows = [r for r in csv.DictReader(f) if int(r["step"]) <= resume_step]
        with path.open("w", newline="") as f:
            w = csv.DictWriter(f, self.FIELDS)
            w.writeheader()
            w.writerows(rows)

    def write(self, **row) -> None:
        with self.path.open("a", newline="") as f:
            csv.DictWriter(f, self.FIELDS).writerow(row)


def sample_grid(
    denoiser: Denoiser,
    cfg: TrainConfig,
    path: Path,
    device,
    prompts: list[str] | None,
    data: ImageSet,
) -> None:
    """A grid from the EMA weights: one row per class (up to 10) or prompt, or an 8x8 grid; for
    a super-resolution run, :func:`sr_grid`."""
    if cfg.sr.low_res_size:
        rows = sr_grid(denoiser, cfg, data, device)
        save_png(make_grid(rows, nrow=len(rows) // 3), path, scale=2)
        return
    c = denoiser.net.config
    x = class_grid(
        denoiser,
        (c.in_channels, c.image_size, c.image_size),
        num_classes=c.num_classes,
        prompts=prompts,
        guidance=cfg.sample.guidance,
        steps=25,
        device=device,
    )
    save_png(make_grid(x.clamp(-1, 1), nrow=8), path, scale=2)


def sr_grid(denoiser: Denoiser, cfg: TrainConfig, data: ImageSet, device, n: int = 8) -> Tensor:
    """Rows for a super-resolution run: the first n training images' low-res inputs (nearest
    upsampled), their super-resolved samples (at sr.aug_level, guided by their own labels or
    captions), the originals. (3n, C, H, W) in [-1, 1]."""
    images = to_model_space(data.images[:n])
    low_res = downsample(images, cfg.sr.low_res_size)
    labels = data.labels[:n] if denoiser.net.config.num_classes else None
    prompts = data.captions[:n] if isinstance(denoiser.net, TextConditionedNet) else None
    steer = labels is not None or prompts is not None
    c = denoiser.net.config
    x = generate(
        denoiser, images.shape[1:], n=len(images), labels=labels, prompts=prompts,
        num_classes=c.num_classes, guidance=cfg.sample.guidance if steer else 1.0, steps=25,
        device=device, extra_cond=low_res_input(c, low_res, sr=cfg.sr, aug_level=None, seed=0),
    )  # fmt: skip
    nearest = F.interpolate(low_res, size=images.shape[-2:], mode="nearest")
    return torch.cat([nearest, x.clamp(-1, 1), images])


def periodic_eval(cfg: TrainConfig, data: ImageSet, net_cfg, out: Path, step: int, device):
    """The ``run.eval_every`` callback (None when disabled): scores EMA samples into eval.csv."""
    if not cfg.run.eval_every:
        return None
    shape = (net_cfg.in_channels, net_cfg.image_size, net_cfg.image_size)
    evaluator = PeriodicEval(
        cfg.data.name, cfg.run.eval_extractor, cfg.run.eval_metrics, shape, device
    )
    fields = ["step", *EVAL_FIELDS]
    log = CSVLog(out / "eval.csv", step, fields)
    spec = SampleSpec(
        n=cfg.run.eval_n,
        sampler=cfg.sample.sampler,
        steps=cfg.sample.steps,
        guidance=cfg.sample.guidance,
        seed=cfg.run.seed,
        device=str(device),
    )

    def run(denoiser, step: int) -> None:
        scores = evaluator(denoiser, net_cfg.num_classes, spec)
        log.write(step=step, **{k: f"{scores[k]:.6g}" for k in EVAL_FIELDS if k in scores})

    return run
