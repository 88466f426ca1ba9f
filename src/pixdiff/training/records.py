"""What a training run records besides checkpoints and its logs (:mod:`pixdiff.training.loggers`):
the periodic sample grids and the ``run.eval_every`` metrics."""

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
from pixdiff.sampling import Sampling


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
) -> Tensor:
    """A grid from the EMA weights saved as ``path`` (2x scale) and returned, (C, H, W) in
    [-1, 1]: one row per class (up to 10) or prompt, or an 8x8 grid; for a super-resolution
    run, :func:`sr_grid`; for a control run, :func:`control_grid`; for clips,
    :func:`clip_grid`."""
    model = run_model(denoiser, cfg, data, path.parent)
    if len(model.image_shape) == 4:  # clips: a row of frames per clip
        grid = clip_grid(model, prompts, device)
    elif cfg.sr.low_res_size:
        rows = sr_grid(model, data, device)
        grid = make_grid(rows, nrow=len(rows) // 3)
    elif cfg.control.enabled:
        grid = control_grid(model, data, device)
    else:
        x = class_grid(model, prompts=prompts, sampling=Sampling(steps=25), device=device)
        grid = make_grid(x.clamp(-1, 1), nrow=8)
    save_png(grid, path, scale=2)
    return grid


def clip_grid(model: LoadedModel, prompts: list[str] | None, device, rows: int = 8) -> Tensor:
    """A video run's grid, (C, H', W') in [-1, 1]: the frames of one clip per row, a clip for
    each of the first ``rows`` prompts or classes (unconditional: ``rows`` clips)."""
    sampling = Sampling(steps=25)
    if prompts or model.num_classes:
        x = class_grid(
            model, prompts=prompts, per_row=1, max_rows=rows, sampling=sampling, device=device
        )
    else:
        x = generate(model, None, sampling, n=rows, device=device)
    return make_grid(x.clamp(-1, 1).flatten(0, 1), nrow=x.shape[1])


def control_grid(model: LoadedModel, data: ImageSet, device, n: int = 8) -> Tensor:
    """The grid of a control run or adapter, (C, H, W) in [-1, 1]: the first n training
    images' maps (grey maps shown in the image's channels, colour ones on a grey image as
    their mean), their samples (steered by the map and the image's own label or caption), the
    originals."""
    images, maps = to_model_space(data.images[:n]), to_model_space(data.control[:n])
    steering = Steering(
        classes=data.labels[:n] if model.num_classes else None,
        prompts=data.captions[:n] if model.text_encoder is not None else None,
        control=maps,
    )
    x = generate(model, steering, Sampling(steps=25), n=len(images), device=device)
    c = images.shape[1]
    shown = maps.mean(1, keepdim=True) if maps.shape[1] > c else maps.expand(-1, c, -1, -1)
    return make_grid(torch.cat([shown, x.clamp(-1, 1), images]), nrow=len(images))


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


def periodic_eval(cfg: TrainConfig, data: ImageSet, net_cfg, out: Path, device):
    """The ``run.eval_every`` callback (None when disabled): scores EMA samples, returned as
    ``eval/*`` scalars for the loggers (eval.csv, :mod:`pixdiff.training.loggers`)."""
    if not cfg.run.eval_every:
        return None
    shape = (net_cfg.in_channels, net_cfg.image_size, net_cfg.image_size)
    evaluator = PeriodicEval(
        cfg.data.name, cfg.run.eval_extractor, cfg.run.eval_metrics, shape, device
    )
    spec = SampleSpec(
        n=cfg.run.eval_n,
        sampler=cfg.sample.sampler,
        steps=cfg.sample.steps,
        guidance=None,  # the run's, where a class steers
        seed=cfg.run.seed,
        device=str(device),
    )

    def run(denoiser) -> dict[str, float]:
        scores = evaluator(run_model(denoiser, cfg, data, out), spec)
        return {f"eval/{k}": float(scores[k]) for k in EVAL_FIELDS if k in scores}

    return run
