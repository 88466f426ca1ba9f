"""The training loop: one process or many (torchrun / DDP), CPU or CUDA, resumable bit-exactly.

Exact resume rests on three facts: the data order is a pure function of (seed, step, rank)
(``pixdiff.data.batches``); every random draw of the loss comes from one generator whose state
is checkpointed with the global RNG (dropout); and the learning rate is a function of the step.
"""

from __future__ import annotations

import math
import os
from contextlib import nullcontext
from dataclasses import dataclass, replace
from pathlib import Path

import torch
import torch.distributed as dist
from torch import nn
from tqdm.auto import tqdm

from pixdiff.checkpoint import encoder_in_run, net_config_to_dict, pixdiff_version
from pixdiff.config import TrainConfig, to_dict
from pixdiff.data import ClipSet, ImageSet, batches
from pixdiff.denoiser import Denoiser
from pixdiff.nets import UNetConfig, build_net, preset
from pixdiff.nets.text import TextConditionedNet
from pixdiff.rundir import RunDir, claim
from pixdiff.schedule_registry import schedule_from_dict
from pixdiff.train_state import restore_checkpoint, save_checkpoint
from pixdiff.training.banner import train_banner
from pixdiff.training.batch_inputs import batch_inputs, cond_fields, grid_prompts, uses_text
from pixdiff.training.ema import EMA as EMAWeights
from pixdiff.training.loggers import open_loggers, require_logger
from pixdiff.training.loss_scaling import autocast, backward, clip_and_step, grad_scaler
from pixdiff.training.losses import diffusion_loss
from pixdiff.training.records import periodic_eval, sample_grid
from pixdiff.training.runtime import Dist, StopRequest, init_distributed, resolve_device
from pixdiff.training.video_run import (
    clip_config_entry,
    image_run_fields,
    init_spatial,
    load_training_data,
    video_fields,
)

# more classes than this is almost always a stray label id in metadata.jsonl (--force-classes)
MAX_CLASSES = 10_000


class TrainingError(RuntimeError):
    """Training cannot go on (NaN loss, bad setup); the message says what was kept."""


@dataclass
class TrainState:
    net: nn.Module
    ema: EMAWeights
    optimizer: torch.optim.Optimizer
    generator: torch.Generator
    step: int = 0
    scaler: torch.amp.GradScaler | None = None  # fp16's loss scaling (loss_scaling.py)

    def save(self, out: Path, config: dict) -> None:
        """Write the run's checkpoint files (:func:`pixdiff.train_state.save_checkpoint`)."""
        save_checkpoint(
            out, net=self.net, ema=self.ema.module, optimizer=self.optimizer,
            generator=self.generator, step=self.step, config=config, scaler=self.scaler,
        )  # fmt: skip

    def restore(self, out: Path) -> None:
        """Continue from the run's train_state.safetensors (weights, optimizer, RNGs, loss
        scaler, step)."""
        self.step = restore_checkpoint(
            out, net=self.net, ema=self.ema.module, optimizer=self.optimizer,
            generator=self.generator, scaler=self.scaler,
        )  # fmt: skip


# ----------------------------------------------------------------------------- setup


def net_config_for(cfg: TrainConfig, data: ImageSet | ClipSet, *, force_classes: bool = False):
    """The network config: the preset, fitted to the data (a clip run's frames too), its
    conditioning and diffusion.learn_sigma (which doubles the output channels), then the image
    run's network (``model.init_from``), then the user's overrides. More than MAX_CLASSES
    classes is refused unless ``force_classes``."""
    fitted = {"in_channels": data.images.shape[-3], "image_size": data.images.shape[-1]}
    if isinstance(preset(cfg.model.preset), UNetConfig):
        fitted["out_channels"] = data.images.shape[-3]
    fitted.update(cond_fields(cfg, data))
    fitted.update(video_fields(cfg, data))
    if fitted["num_classes"] > MAX_CLASSES and not force_classes:
        raise TrainingError(
            f"{cfg.data.name} has {fitted['num_classes']} classes (largest label id "
            f"{fitted['num_classes'] - 1}), over the limit of {MAX_CLASSES}: is a label id in "
            "metadata.jsonl a typo? Pass --force-classes to train with that many"
        )
    fitted["learn_sigma"] = cfg.diffusion.learn_sigma
    if cfg.diffusion.self_condition:  # only then: a network without the field is fine
        fitted["self_condition"] = True
    _check_sr(cfg, data)
    asked = cfg.model.overrides.get("learn_sigma", cfg.diffusion.learn_sigma)
    if asked != cfg.diffusion.learn_sigma:
        raise TrainingError(
            f"model.overrides.learn_sigma={asked} contradicts diffusion.learn_sigma="
            f"{cfg.diffusion.learn_sigma}; set diffusion.learn_sigma (it also adds the VLB loss)"
        )
    if "self_condition" in cfg.model.overrides:
        raise TrainingError(
            "model.overrides.self_condition is set by diffusion.self_condition (it also changes "
            "the training); use --set diffusion.self_condition=true"
        )
    image = image_run_fields(cfg, fitted) if cfg.model.init_from else {}
    return preset(cfg.model.preset, **{**fitted, **image, **cfg.model.overrides})


def _check_sr(cfg: TrainConfig, data: ImageSet) -> None:
    """One line for a super-resolution preset without sr.low_res_size, a low-res size not below
    the image size, or a low_res_channels override (sr.low_res_size sets it)."""
    size, image = cfg.sr.low_res_size, data.images.shape[-1]
    if size >= image:
        raise TrainingError(
            f"sr.low_res_size (--sr-from) {size} must be smaller than the image size {image}"
        )
    if not size and preset(cfg.model.preset).low_res_channels:
        raise TrainingError(
            f"preset {cfg.model.preset!r} is a super-resolution network: give the low-res size "
            "with --sr-from SIZE (sr.low_res_size)"
        )
    if "low_res_channels" in cfg.model.overrides:
        raise TrainingError(
            "model.overrides.low_res_channels is set by sr.low_res_size (--sr-from); drop it"
        )
    crop = cfg.sr.crop_size
    if crop and not size:
        raise TrainingError("sr.crop_size is for super-resolution runs: give --sr-from SIZE")
    if crop and (crop >= image or crop % (image // size) or image % size):
        raise TrainingError(
            f"sr.crop_size {crop} must be below the image size {image} and a multiple of the "
            f"upsampling factor {image} / {size} (an integer)"
        )
    if size and cfg.run.eval_every:
        raise TrainingError(
            "run.eval_every scores generated samples; a super-resolution run needs low-res "
            "inputs for that, so set run.eval_every=0"
        )


def lr_at(step: int, cfg: TrainConfig) -> float:
    """Linear warm-up to lr, then constant or cosine decay to 0 at the last step."""
    o = cfg.optim
    if step < o.warmup_steps:
        return o.lr * (step + 1) / o.warmup_steps
    if o.lr_schedule == "constant":
        return o.lr
    progress = (step - o.warmup_steps) / max(1, cfg.run.steps - o.warmup_steps)
    return o.lr * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


# ----------------------------------------------------------------------------- the loop


def make_denoiser(net: nn.Module, cfg: TrainConfig, learn_sigma: bool) -> Denoiser:
    d = cfg.diffusion
    return Denoiser(
        net,
        schedule_from_dict(d.schedule),
        d.prediction,
        sigma_data=d.sigma_data,
        learn_sigma=learn_sigma,
        self_condition=d.self_condition,  # a DDP or compiled net hides its config
    )


def build_state(
    cfg: TrainConfig, net_cfg, device: torch.device, rank: int, *, text: bool
) -> TrainState:
    """Network (with its text encoder when ``text``), EMA copy, optimizer and noise generator."""
    torch.manual_seed(cfg.run.seed + rank)  # dropout draws from the global generator
    net = build_net(net_cfg)
    if text:
        net = TextConditionedNet(net, cfg.text.build_encoder())
    net = net.to(device)
    if cfg.run.channels_last:
        net = net.to(memory_format=torch.channels_last)
    o = cfg.optim
    opt = torch.optim.AdamW(net.parameters(), lr=o.lr, betas=o.betas, weight_decay=o.weight_decay)
    gen = torch.Generator().manual_seed(cfg.run.seed * 1000 + rank + 1)
    ema = EMAWeights(net, decay=o.ema_decay, warmup=o.ema_warmup)
    return TrainState(net, ema, opt, gen, scaler=grad_scaler(cfg, device))


def micro_batch_size(cfg: TrainConfig, world_size: int) -> int:
    b, k = cfg.optim.batch_size, cfg.optim.grad_accum * world_size
    if b % k:
        raise TrainingError(f"batch_size {b} must be divisible by grad_accum x processes = {k}")
    return b // k


def train(
    cfg: TrainConfig,
    out: str | Path,
    *,
    resume: bool = False,
    overwrite: bool = False,
    progress: bool = True,
    force_classes: bool = False,
) -> Path:
    """Train a diffusion model into run directory ``out``; returns its path.

    Everything that can fail (data, network, a dry batch, the checkpoint to resume) is checked
    before the run directory is touched; ``overwrite`` replaces a finished run only once the new
    one has its first checkpoint (:mod:`pixdiff.rundir`). Launch under ``torchrun
    --nproc_per_node=K`` for data-parallel training: each rank trains on its shard; rank 0
    locks the run and writes checkpoints, samples and the log.
    """
    out = Path(out)
    require_logger(cfg.run.logger)
    if cfg.run.threads:
        torch.set_num_threads(cfg.run.threads)
    probe = resolve_device(cfg.run.device, int(os.environ.get("LOCAL_RANK", 0)))
    world = init_distributed(probe)
    device = resolve_device(cfg.run.device, world.local_rank)
    run = claim(out, resume=resume, overwrite=overwrite) if world.is_main else None
    with run or nullcontext():
        data, state, config_json = _setup(
            cfg, out, world, device, resume=resume, force_classes=force_classes or resume
        )
        if run is not None:
            run.open()
            print(train_banner(cfg, data, state, world, device, out), flush=True)
        world.barrier()
        _loop(cfg, out, state, data, world, device, config_json, run, progress=progress)
    return out


def _setup(cfg, out, world, device, *, resume, force_classes):
    """Data, network, EMA and optimizer (restored on resume) and the run's config.json, checked
    by a dry batch: everything that can fail before the run directory is touched."""
    data = load_training_data(cfg)
    net_cfg = net_config_for(cfg, data, force_classes=force_classes)
    text = uses_text(cfg, data)
    here = replace(cfg, text=encoder_in_run(cfg.text, out))  # the run stores it relative
    state = build_state(here, net_cfg, device, world.rank, text=text)
    if text and world.is_main:
        state.net.text_encoder.tokenize(data.captions)  # warns once if captions get truncated
    if cfg.model.init_from and not resume:
        init_spatial(state.net, cfg)
        state.ema = EMAWeights(state.net, decay=cfg.optim.ema_decay, warmup=cfg.optim.ema_warmup)
    dry_batch(cfg, state, data, world, device)
    if resume:
        state.restore(out)
    config_json = {
        "train": to_dict(cfg),
        "net": net_config_to_dict(net_cfg),
        "class_names": data.class_names if net_cfg.num_classes else None,
        "text_conditioned": text,
        "data": clip_config_entry(data),
        "pixdiff": pixdiff_version(),
    }
    return data, state, config_json


def dry_batch(cfg: TrainConfig, state: TrainState, data: ImageSet, world: Dist, device) -> None:
    """Run the network once on the first micro-batch without changing any state (weights,
    RNGs), so that data the network cannot take fails before the run directory is touched."""
    micro = micro_batch_size(cfg, world.world_size)
    batch = next(
        batches(
            data, batch_size=micro, seed=cfg.run.seed, rank=world.rank,
            world_size=world.world_size, flip=cfg.data.flip, device=device,
        )
    )  # fmt: skip
    generator = torch.Generator().set_state(state.generator.get_state())
    denoiser = make_denoiser(state.net, cfg, state.net.config.learn_sigma)
    devices = [device] if device.type == "cuda" else []
    try:
        with torch.no_grad(), torch.random.fork_rng(devices=devices), autocast(cfg, device):
            x0, cond = batch_inputs(cfg, state.net, batch, generator, device)
            denoiser(x0, 0.5, cond)
    except RuntimeError as e:  # torch's shape and memory errors
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise TrainingError(f"a first batch through the network failed: {first}") from e


def _loop(cfg, out, state, data, world, device, config_json, run: RunDir | None, *, progress):
    net_cfg = state.net.config
    train_net: nn.Module = state.net
    if world.world_size > 1:
        train_net = nn.parallel.DistributedDataParallel(
            train_net, device_ids=[device.index] if device.type == "cuda" else None
        )
    if cfg.run.compile:
        train_net = torch.compile(train_net)
    denoiser = make_denoiser(train_net, cfg, net_cfg.learn_sigma)
    ema_denoiser = make_denoiser(state.ema.module, cfg, net_cfg.learn_sigma)
    stream = batches(
        data,
        batch_size=micro_batch_size(cfg, world.world_size),
        seed=cfg.run.seed,
        start_step=state.step * cfg.optim.grad_accum,
        rank=world.rank,
        world_size=world.world_size,
        flip=cfg.data.flip,
        device=device,
    )
    prompts = grid_prompts(data) if isinstance(state.net, TextConditionedNet) else None
    periodic = periodic_eval(cfg, data, net_cfg, out, device) if world.is_main else None
    if world.is_main and state.step == 0:
        state.save(out, config_json)
    if run is not None:
        run.commit()  # the new run has its first checkpoint: an old one it replaces can go
    logger, meter = open_loggers(
        cfg.run, out, state.step, batch_size=cfg.optim.batch_size, progress=progress,
        eval_log=periodic is not None, main=world.is_main,
    )  # fmt: skip
    bar = tqdm(
        total=cfg.run.steps,
        initial=state.step,
        disable=not (progress and world.is_main),
        desc="train",
        dynamic_ncols=True,
    )
    with StopRequest() as stop, logger:
        while state.step < cfg.run.steps:
            loss, grad_norm = train_step(cfg, state, train_net, denoiser, stream, world, device)
            bar.update(1)
            bar.set_postfix(loss=f"{loss:.4f}")
            step = state.step
            meter.update(step, loss=loss, lr=lr_at(step - 1, cfg), grad_norm=grad_norm)
            if world.is_main and cfg.run.sample_every and step % cfg.run.sample_every == 0:
                path = out / "samples" / f"step_{step:07d}.png"
                grid = sample_grid(ema_denoiser, cfg, path, device, prompts, data)
                logger.log_images(step, "samples", grid)
            if periodic is not None and step % cfg.run.eval_every == 0:
                logger.log_scalars(step, periodic(ema_denoiser))
            done = step == cfg.run.steps or stop.requested
            if world.is_main and (
                done or (cfg.run.checkpoint_every and step % cfg.run.checkpoint_every == 0)
            ):
                state.save(out, config_json)
            world.barrier()
            if stop.requested:
                bar.close()
                raise KeyboardInterrupt(
                    f"stopped at step {step}; checkpoint saved in {out} (continue with --resume)"
                )
    bar.close()


def train_step(cfg, state: TrainState, train_net, denoiser, stream, world, device):
    """One optimizer step over grad_accum micro-batches; returns (mean loss, grad norm)."""
    lr = lr_at(state.step, cfg)
    for group in state.optimizer.param_groups:
        group["lr"] = lr
    amp = autocast(cfg, device)
    total = torch.zeros((), device=device)
    k = cfg.optim.grad_accum
    for micro in range(k):
        batch = next(stream)
        sync = nullcontext() if micro == k - 1 or world.world_size == 1 else train_net.no_sync()
        with sync, amp:
            x0, cond = batch_inputs(cfg, state.net, batch, state.generator, device)
            if cfg.run.channels_last:
                x0 = x0.contiguous(memory_format=torch.channels_last)
            loss = (
                diffusion_loss(denoiser, x0, cond, cfg=cfg.diffusion, generator=state.generator) / k
            )
        backward(loss, state.scaler)
        total += loss.detach()
    if world.world_size > 1:
        dist.all_reduce(total)
        total /= world.world_size
    value = total.item()
    if not math.isfinite(value):
        raise TrainingError(
            f"loss became {value} at step {state.step + 1}; the last good "
            "checkpoint is kept. Try a lower learning rate (--set optim.lr=...) "
            "or fp32 (--precision fp32)."
        )
    clip = cfg.optim.grad_clip or float("inf")
    grad_norm = clip_and_step(state.optimizer, state.net.parameters(), clip, state.scaler)
    state.optimizer.zero_grad(set_to_none=True)
    state.ema.update(state.net, state.step)
    state.step += 1
    return value, grad_norm


__all__ = ["TrainingError", "lr_at", "train"]
