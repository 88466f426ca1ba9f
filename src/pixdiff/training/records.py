"""What a training run records besides checkpoints: log.csv and eval.csv (truncated to the
checkpoint on resume), the periodic sample grids, and the ``run.eval_every`` metrics."""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor

from pixdiff.checkpoint import LoadedModel
from pixdiff.config import TrainConfig, to_dict
from pixdiff.data import ImageSet, to_model_space
from pixdiff.denoiser import Denoiser
from pixdiff.eval.report import EVAL_FIELDS, PeriodicEval, SampleSpec
from pixdiff.images import make_grid, save_png
from pixdiff.low_res import downsample
from pixdiff.pipelines.cascade import low_res_input
from pixdiff.pipelines.generate import class_grid, generate
from pixdiff.pipelines.steering import Steering
from pixdiff.rundir import append_row, start_log
from pixdiff.sampling import Sampling


class CSVLog:
    """A CSV log with one row per logged step (log.csv, eval.csv), each appended by one
    write(); on resume, rows past the checkpoint are dropped and a damaged log is set aside
    (:func:`pixdiff.rundir.start_log`)."""

    FIELDS = ["step", "loss", "lr", "img_per_s", "grad_norm", "elapsed_s"]

    def __init__(self, path: Path, resume_step: int | None, fields: list[str] | None = None):
        self.path = path
        self.FIELDS = fields or self.FIELDS
        start_log(path, self.FIELDS, resume_step)

    def write(self, **row) -> None:
        append_row(self.path, self.FIELDS, row)


def run_model(denoiser: Denoiser, cfg: TrainConfig, data: ImageSet, out: Path) -> LoadedModel:
    """The run being trained as a loaded model (its current EMA denoiser), for the pipelines."""
    names = data.class_names if denoiser.net.config.num_classes else None
    return LoadedModel(denoiser, denoiser.net, {"train": to_dict(cfg)}, names, out)


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
    model = run_model(denoiser, cfg, data, path.parent)
    if cfg.sr.low_res_size:
        rows = sr_grid(model, data, device)
        save_png(make_grid(rows, nrow=len(rows) // 3), path, scale=2)
        return
    x = class_grid(model, prompts=prompts, sampling=Sampling(steps=25), device=device)
    save_png(make_grid(x.clamp(-1, 1), nrow=8), path, scale=2)


def sr_grid(model: LoadedModel, data: ImageSet, device, n: int = 8) -> Tensor:
    """Rows for a super-resolution run: the first n training images' low-res inputs (nearest
    upsampled), their super-resolved samples (at sr.aug_level, guided by their own labels or
    captions), the originals. (3n, C, H, W) in [-1, 1]."""
    images = to_model_space(data.images[:n])
    low_res = downsample(images, model.sr.low_res_size)
    steering = Steering(
        classes=data.labels[:n] if model.num_classes else None,
        prompts=data.captions[:n] if model.text_encoder is not None else None,
    )
    extra = low_res_input(model.net.config, low_res, sr=model.sr, aug_level=None, seed=0)
    x = generate(
        model, steering, Sampling(steps=25), n=len(images), device=device, extra_cond=extra
    )
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
        guidance=None,  # the run's, where a class steers
        seed=cfg.run.seed,
        device=str(device),
    )

    def run(denoiser, step: int) -> None:
        scores = evaluator(run_model(denoiser, cfg, data, out), spec)
        log.write(step=step, **{k: f"{scores[k]:.6g}" for k in EVAL_FIELDS if k in scores})

    return run
