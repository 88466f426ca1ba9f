"""``pixdiff train-control``: a ControlNet adapter (Zhang et al. 2023) for a frozen base run.

The base run is loaded with its EMA weights and frozen. A :class:`ControlAdapter` copies its
embedding, encoder and middle block (initialised from them, zero-initialised where it meets the
base: :mod:`pixdiff.nets.control`) and is trained with the base's own formulation and loss on
the base's own data, the maps computed (or read) for ``--control``. As in ControlNet (Sec. 3.3)
half of the prompts (or labels) are replaced by the empty prompt (the null label), so that the
adapter also reads the map with no prompt (``prompt_dropout``); a map is never dropped, since
the null map is exactly the base model (the adapter adds nothing to its rows).

The run directory holds the adapter alone (:mod:`pixdiff.adapters` describes it), with the
trainer's pieces: its claim and lock, :class:`TrainState` checkpoints (bit-exact resume), the
EMA, the resumable batch order, the logs and the sample grids.
"""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path

import torch
from tqdm.auto import tqdm

from pixdiff.adapters import ADAPTER, base_path, weights_sha256
from pixdiff.checkpoint import (
    CONFIG,
    LoadedModel,
    entry,
    load,
    malformed,
    net_config_to_dict,
    pixdiff_version,
    read_json,
)
from pixdiff.config import OptimConfig, RunConfig, TrainConfig, from_dict, to_dict
from pixdiff.data import ControlConfig, batches, load_dataset
from pixdiff.images import save_png
from pixdiff.nets.control import ControlAdapter, ControlledNet, unet_of
from pixdiff.rundir import claim
from pixdiff.shipped import SHIPPED_RUNS
from pixdiff.training.batch_inputs import batch_inputs
from pixdiff.training.ema import EMA as EMAWeights
from pixdiff.training.loggers import open_loggers, require_logger
from pixdiff.training.loss_scaling import autocast, backward, clip_and_step, grad_scaler
from pixdiff.training.losses import diffusion_loss
from pixdiff.training.records import control_grid
from pixdiff.training.runtime import StopRequest, resolve_device
from pixdiff.training.trainer import TrainingError, TrainState, lr_at, make_denoiser

PROMPT_DROPOUT = 0.5  # ControlNet replaces 50% of the prompts by empty strings (Sec. 3.3)


def train_control(
    base: str | Path,
    out: str | Path,
    control: ControlConfig,
    *,
    optim: OptimConfig,
    run: RunConfig,
    prompt_dropout: float = PROMPT_DROPOUT,
    resume: bool = False,
    overwrite: bool = False,
    progress: bool = True,
) -> Path:
    """Train a ControlNet adapter for the run ``base`` (a path or a shipped name) into the run
    directory ``out``; returns its path. Everything that can fail (the base, the maps, a first
    batch) is checked before ``out`` is touched."""
    out = Path(out)
    require_logger(run.logger)
    if run.threads:
        torch.set_num_threads(run.threads)
    device = resolve_device(run.device)
    with claim(out, resume=resume, overwrite=overwrite) as rundir:
        job = AdapterTraining.start(str(base), control, optim, run, prompt_dropout, device)
        if resume:
            job.restore(out)
        rundir.open()
        job.loop(out, progress=progress, saved=rundir.commit)
    return out


class AdapterTraining:
    """One adapter's training: the frozen base, the adapter's state, the data and config."""

    def __init__(self, base: LoadedModel, cfg: TrainConfig, state: TrainState, data, config):
        self.base, self.cfg, self.state, self.data, self.config = base, cfg, state, data, config
        self.device = next(base.net.parameters()).device
        learn_sigma = base.net.config.learn_sigma
        self.denoiser = make_denoiser(ControlledNet(base.net, state.net), cfg, learn_sigma)
        self.ema = make_denoiser(ControlledNet(base.net, state.ema.module), cfg, learn_sigma)

    @classmethod
    def start(cls, name, control, optim, run, prompt_dropout, device) -> AdapterTraining:
        """Load and check the base, build the adapter from it, load the data with its maps."""
        if not control.enabled:
            raise ValueError("train-control needs --control KIND (edges, sketch, mask, ...)")
        if not 0 <= prompt_dropout < 1:
            raise ValueError(f"--prompt-dropout must be in [0, 1), got {prompt_dropout}")
        if optim.grad_accum != 1:
            raise ValueError("train-control takes optim.grad_accum=1")
        base = load(base_path(name), device=device)
        cfg = adapter_train_config(base, name, control, optim, run, prompt_dropout)
        d = cfg.data
        data = load_dataset(
            d.name, image_size=d.image_size, channels=d.channels, split=d.split,
            skip_bad_images=d.skip_bad_images, control=cfg.control,
        )  # fmt: skip
        torch.manual_seed(run.seed)  # the hint encoder's initialisation
        adapter = ControlAdapter.from_base(base.net, control_channels=data.control.shape[1])
        if run.channels_last:
            base.net.to(memory_format=torch.channels_last)
            adapter.to(memory_format=torch.channels_last)
        o = optim
        adamw = torch.optim.AdamW(
            adapter.parameters(), lr=o.lr, betas=o.betas, weight_decay=o.weight_decay
        )
        ema = EMAWeights(adapter, decay=o.ema_decay, warmup=o.ema_warmup)
        generator = torch.Generator().manual_seed(run.seed * 1000 + 1)
        state = TrainState(adapter.train(), ema, adamw, generator, scaler=grad_scaler(cfg, device))
        section = {
            "method": "controlnet", "base": _identity(name),
            "base_sha256": weights_sha256(base.net), "control": to_dict(cfg.control),
            "channels": adapter.control_channels,
            "net": net_config_to_dict(unet_of(base.net).config),
        }  # fmt: skip
        config = {ADAPTER: section, "train": to_dict(cfg), "pixdiff": pixdiff_version()}
        job = cls(base, cfg, state, data, config)
        job.dry_batch()
        return job

    def restore(self, out: Path) -> None:
        """Continue from ``out``'s checkpoint; refused when its base has changed since."""
        saved = read_json(out / CONFIG).get(ADAPTER, {})
        if saved.get("base_sha256") != self.config[ADAPTER]["base_sha256"]:
            raise ValueError(
                f"the base {self.config[ADAPTER]['base']} changed since {out} was trained on it "
                "(its weights differ); resume needs the same base"
            )
        self.state.restore(out)

    def dry_batch(self) -> None:
        """One batch through the controlled network, no state changed, before ``out`` is
        touched: data the network cannot take fails here."""
        batch = next(batches(self.data, batch_size=self.cfg.optim.batch_size, device=self.device))
        generator = torch.Generator().set_state(self.state.generator.get_state())
        with torch.no_grad(), torch.random.fork_rng(devices=[]):
            x0, cond = batch_inputs(self.cfg, self.base.net, batch, generator, self.device)
            self.denoiser(x0, 0.5, cond)

    def train_step(self, batch) -> tuple[float, float]:
        """One optimizer step of the adapter; (loss, grad norm)."""
        state, cfg = self.state, self.cfg
        for group in state.optimizer.param_groups:
            group["lr"] = lr_at(state.step, cfg)
        with autocast(cfg, self.device):
            x0, cond = batch_inputs(cfg, self.base.net, batch, state.generator, self.device)
            if cfg.run.channels_last:
                x0 = x0.contiguous(memory_format=torch.channels_last)
            loss = diffusion_loss(
                self.denoiser, x0, cond, cfg=cfg.diffusion, generator=state.generator
            )
        value = loss.item()
        if not math.isfinite(value):
            raise TrainingError(
                f"loss became {value} at step {state.step + 1}; the last good checkpoint is "
                "kept. Try a lower learning rate (--lr)"
            )
        backward(loss, state.scaler)
        clip = cfg.optim.grad_clip or float("inf")
        grad_norm = clip_and_step(state.optimizer, state.net.parameters(), clip, state.scaler)
        state.optimizer.zero_grad(set_to_none=True)
        state.ema.update(state.net, state.step)
        state.step += 1
        return value, grad_norm

    def loop(self, out: Path, *, progress: bool, saved=lambda: None) -> None:
        """Train to the last step: logs, grids of the EMA adapter, checkpoints; SIGINT/SIGTERM
        save a checkpoint and stop. ``saved()`` runs after each checkpoint (the run directory's
        commit: from its first checkpoint on, a stopped or failed run is kept for --resume)."""
        state, run, batch = self.state, self.cfg.run, self.cfg.optim.batch_size
        stream = batches(
            self.data, batch_size=batch, seed=run.seed, start_step=state.step,
            flip=self.cfg.data.flip, device=self.device,
        )  # fmt: skip
        if state.step == 0:
            state.save(out, self.config)
            saved()
        logger, meter = open_loggers(
            run, out, state.step, batch_size=batch, progress=progress, label="train-control"
        )
        bar = tqdm(total=run.steps, initial=state.step, disable=not progress, desc="adapter")
        with StopRequest() as stop, logger:
            while state.step < run.steps:
                loss, grad_norm = self.train_step(next(stream))
                step = state.step
                bar.update(1)
                bar.set_postfix(loss=f"{loss:.4f}")
                meter.update(step, loss=loss, lr=lr_at(step - 1, self.cfg), grad_norm=grad_norm)
                if run.sample_every and step % run.sample_every == 0:
                    grid = control_grid(self.sampler(out), self.data, self.device)
                    save_png(grid, out / "samples" / f"step_{step:07d}.png", scale=2)
                    logger.log_images(step, "samples", grid)
                every = run.checkpoint_every and step % run.checkpoint_every == 0
                if every or step == run.steps or stop.requested:
                    state.save(out, self.config)
                    saved()
                if stop.requested:
                    raise KeyboardInterrupt(
                        f"stopped at step {step}; checkpoint saved in {out} (--resume continues)"
                    )
        bar.close()

    def sampler(self, out: Path) -> LoadedModel:
        """The base with the EMA adapter, as a loaded model the pipelines sample."""
        config = {**self.base.config, ADAPTER: self.config[ADAPTER]}
        net = self.ema.net
        return LoadedModel(self.ema, net, config, self.base.class_names, out)


def adapter_train_config(
    base: LoadedModel, name: str, control: ControlConfig, optim, run, prompt_dropout: float
) -> TrainConfig:
    """The base's training config with the adapter's optimizer, run options and map; prompts
    (labels) dropped with ``prompt_dropout``, maps never. One line for a base no adapter fits."""
    source = f"{name}: train"
    train = from_dict(TrainConfig, base.config["train"], source)
    unet_of(base.net)  # a one-line error for a DiT
    if train.control.enabled:
        raise ValueError(f"{name} already takes a control map ({train.control.kind})")
    if "distilled" in base.config:
        raise ValueError(f"{name} is a distilled run; train the adapter on its teacher")
    return replace(
        train,
        optim=optim,
        run=replace(run, eval_every=0),
        control=replace(control, dropout=0.0),
        text=replace(train.text, prompt_dropout=prompt_dropout),
        diffusion=replace(train.diffusion, label_dropout=prompt_dropout),
    )


def _identity(name: str) -> str:
    """How an adapter names its base: a shipped model's name, else the absolute path."""
    if not Path(name).exists() and name in SHIPPED_RUNS:
        return name
    return str(Path(name).expanduser().resolve())


def saved_settings(out: Path) -> tuple[str, ControlConfig, OptimConfig, RunConfig, float]:
    """(base, control, optimizer, run options, prompt dropout) of the adapter run in ``out``,
    for --resume; one line when ``out`` is no adapter run."""
    path = out / CONFIG
    if not path.is_file():
        raise ValueError(f"cannot resume: {path} does not exist")
    saved = read_json(path)
    if ADAPTER not in saved:
        raise ValueError(f"{out} is not an adapter run (resume it with `pixdiff train --resume`)")
    with malformed(path, ADAPTER):
        base = str(saved[ADAPTER]["base"])
        control = from_dict(ControlConfig, saved[ADAPTER]["control"], f"{path}: adapter.control")
    with malformed(path, "train"):
        optim = from_dict(OptimConfig, entry(saved, "train.optim", path), f"{path}: train.optim")
        run = from_dict(RunConfig, entry(saved, "train.run", path), f"{path}: train.run")
        dropout = float(entry(saved, "train.text.prompt_dropout", path))
    return base, control, optim, run, dropout


__all__ = ["AdapterTraining", "saved_settings", "train_control"]
