"""``pixdiff distill``: a trained run into a new run that samples in 1, 2 or 4 steps, by
progressive distillation (Salimans & Ho 2022) or consistency tuning (ECT, Geng et al. 2024).

The student starts as a copy of the teacher (with a zero-initialised guidance input when CFG is
distilled, Meng et al. 2023) and is trained with the trainer's pieces: its run-directory claim
and lock, :class:`~pixdiff.training.trainer.TrainState` checkpoints (bit-exact resume), the EMA,
the resumable batch order, log.csv and the progress bar. Progressive phases restart the
optimizer and the EMA warm-up from the last phase's EMA student, which becomes the teacher; the
teacher of a phase other than the first is kept in ``teacher.safetensors`` for resume.
"""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path

import torch
from torch import nn
from tqdm.auto import tqdm

from pixdiff.checkpoint import (
    CONFIG,
    LoadedModel,
    build_run_net,
    entry,
    find_weights,
    load,
    load_state_into,
    malformed,
    net_config_to_dict,
    read_json,
    read_tensors,
    save_tensors,
)
from pixdiff.config import OptimConfig, RunConfig, TrainConfig, from_dict, to_dict
from pixdiff.data import batches, load_dataset
from pixdiff.images import make_grid, save_png
from pixdiff.pipelines.generate import class_grid
from pixdiff.rundir import RunDir, claim
from pixdiff.sampling import Sampling
from pixdiff.shipped import SHIPPED_RUNS, shipped_run
from pixdiff.training.banner import distill_banner
from pixdiff.training.batch_inputs import grid_prompts
from pixdiff.training.consistency import consistency_loss, gap_stage
from pixdiff.training.distill_config import DistillConfig, settle, weights_sha256
from pixdiff.training.distill_teacher import Teacher
from pixdiff.training.ema import EMA as EMAWeights
from pixdiff.training.loggers import open_loggers, require_logger
from pixdiff.training.loss_scaling import autocast, backward, clip_and_step, grad_scaler
from pixdiff.training.progressive import phase_grids, progressive_loss
from pixdiff.training.runtime import StopRequest, resolve_device
from pixdiff.training.trainer import TrainingError, TrainState, lr_at, make_denoiser

TEACHER_FILE = "teacher.safetensors"  # the teacher of the current progressive phase (> 0)
LOG_FIELDS = ["step", "phase", "loss", "lr", "img_per_s", "grad_norm", "elapsed_s"]


def teacher_dir(name_or_path: str | Path) -> Path:
    """A teacher run's directory: a path, or a shipped model's name ("fashion", "emoji")."""
    path = Path(name_or_path)
    if not path.exists() and str(name_or_path) in SHIPPED_RUNS:
        return shipped_run(str(name_or_path))
    return path


def distill(
    teacher: str | Path,
    out: str | Path,
    cfg: DistillConfig,
    *,
    optim: OptimConfig,
    run: RunConfig,
    resume: bool = False,
    overwrite: bool = False,
    progress: bool = True,
) -> Path:
    """Distil the run ``teacher`` into the run directory ``out``; returns its path.

    ``run.steps`` is ignored: the run takes ``cfg.iters`` steps per phase. Everything that can
    fail (the teacher, the settings, the checkpoint to resume) is checked before ``out`` is
    touched; ``overwrite`` replaces a finished run only once the new one has its first
    checkpoint (:mod:`pixdiff.rundir`).
    """
    out = Path(out)
    require_logger(run.logger)
    if run.threads:
        torch.set_num_threads(run.threads)
    device = resolve_device(run.device)
    with claim(out, resume=resume, overwrite=overwrite) as rundir:
        job = Distillation.start(teacher_dir(teacher), out, cfg, optim, run, device)
        if resume:
            job.restore()
        rundir.open()
        print(distill_banner(job.cfg, job.train_cfg, job.data, job.state, device, out), flush=True)
        job.loop(rundir, progress=progress)
    return out


class Distillation:
    """One distillation: teacher, student state, data and the method's step."""

    def __init__(self, cfg, train_cfg, teacher, state, data, config_json, out, device):
        self.cfg, self.train_cfg, self.teacher, self.state = cfg, train_cfg, teacher, state
        self.data, self.config_json, self.out, self.device = data, config_json, out, device
        self.student = make_denoiser(state.net, train_cfg, learn_sigma=False)
        self.ema_student = make_denoiser(state.ema.module, train_cfg, learn_sigma=False)
        self.grids = None

    @classmethod
    def start(cls, source: Path, out: Path, cfg, optim, run, device) -> Distillation:
        """Load the teacher, check ``cfg`` against it and build the student."""
        model = load(source, device=device)
        cfg = settle(cfg, model.config, source)
        weights, _ = find_weights(source, ema=True)
        cfg = replace(cfg, teacher_sha256=weights_sha256(weights))
        teacher_train = from_dict(TrainConfig, model.config["train"], f"{source}: train")
        if teacher_train.diffusion.learn_sigma or optim.grad_accum != 1:
            raise ValueError(
                "distillation needs a teacher without a learned variance and optim.grad_accum=1"
            )
        if model.denoiser.self_condition:  # its targets come one call at a time, estimate-less
            raise ValueError("distillation of a self-conditioned teacher is not supported")
        if optim.lr > 1:
            raise ValueError(f"optim.lr must be in (0, 1] to fine-tune a teacher, got {optim.lr}")
        sample = cfg.sample_defaults(teacher_train.sample.guidance)
        run = replace(run, steps=cfg.iters * cfg.phases)
        train_cfg = replace(teacher_train, optim=optim, run=run, sample=sample)
        config_json = student_config(model, cfg, train_cfg)
        torch.manual_seed(run.seed)  # the new guidance input's init; dropout's generator
        net = student_net(model, config_json, source).to(device)
        d = teacher_train.data
        data = load_dataset(
            d.name, image_size=d.image_size, channels=d.channels, split=d.split,
            skip_bad_images=d.skip_bad_images,
        )  # fmt: skip
        teacher = Teacher(model.denoiser, takes_scale=model.net.config.guidance_embed)
        state = student_state(net, optim, run.seed)
        state.scaler = grad_scaler(train_cfg, device)
        return cls(cfg, train_cfg, teacher, state, data, config_json, out, device)

    # ------------------------------------------------------------------------- resume

    def restore(self) -> None:
        """Continue from ``out``: its checkpoint, its phase's teacher, the same teacher run."""
        _, saved, _, _ = saved_settings(self.out)
        if saved.teacher_sha256 != self.cfg.teacher_sha256:
            raise ValueError(
                f"the teacher {self.cfg.teacher} changed since {self.out} was distilled from it "
                "(its weights differ); resume needs the same teacher"
            )
        self.state.restore(self.out)
        phase, start = self.phase_of(self.state.step)
        if phase and self.state.step > start:
            self.teacher = self.load_phase_teacher(phase)

    def load_phase_teacher(self, phase: int) -> Teacher:
        """The teacher of a progressive phase > 0, from ``teacher.safetensors``."""
        path = self.out / TEACHER_FILE
        tensors, meta = read_tensors(path)
        if meta.get("phase") != str(phase):
            raise ValueError(
                f"{path} holds the teacher of phase {meta.get('phase')}, the checkpoint is in "
                f"phase {phase}; the run directory was changed by hand"
            )
        teacher = Teacher.frozen_copy(self.ema_student)
        load_state_into(teacher.denoiser.net, tensors, str(path))
        return teacher

    # ------------------------------------------------------------------------- phases

    def phase_of(self, step: int) -> tuple[int, int]:
        """(phase, its first step) of optimizer step ``step``."""
        phase = min(step // self.cfg.iters, self.cfg.phases - 1)
        return phase, phase * self.cfg.iters

    def begin_phase(self) -> None:
        """At a progressive phase's first step: the last phase's EMA student becomes the
        teacher (kept in teacher.safetensors) and the student's starting point, with a fresh
        optimizer; then the phase's grids."""
        step = self.state.step
        phase, start = self.phase_of(step)
        if self.cfg.method != "progressive":
            return
        if phase and step == start:
            self.teacher = Teacher.frozen_copy(self.ema_student)
            weights = self.teacher.denoiser.net.state_dict()
            save_tensors(self.out / TEACHER_FILE, weights, {"phase": str(phase)})
            self.state.net.load_state_dict(self.state.ema.module.state_dict())
            self.state.optimizer.state.clear()
        if self.grids is None or step == start:
            teacher_steps = self.cfg.teacher_steps // 2**phase
            self.grids = phase_grids(self.student.schedule, teacher_steps)

    # ------------------------------------------------------------------------- steps

    def loss(self, batch) -> torch.Tensor:
        """The method's loss on one batch."""
        t = self.train_cfg
        student_cond, teacher_cond, teacher = self.teacher.for_batch(
            self.state.net, batch, label_dropout=t.diffusion.label_dropout,
            prompt_dropout=t.text.prompt_dropout, scales=self.cfg.guidance,
            generator=self.state.generator, device=self.device,
        )  # fmt: skip
        conds = (student_cond, teacher_cond)
        gen = self.state.generator
        if self.cfg.method == "progressive":
            return progressive_loss(
                self.student, teacher, batch.images, self.grids, conds,
                weighting=self.cfg.weighting, generator=gen,
            )  # fmt: skip
        c = self.cfg
        return consistency_loss(
            self.student, batch.images, conds,
            teacher=teacher if c.consistency_distillation else None,
            stage=gap_stage(self.state.step, c.iters, c.gap_stages), p_mean=c.p_mean,
            p_std=c.p_std, k=c.gap_k, b=c.gap_b, huber_c=c.huber_c, generator=gen,
        )  # fmt: skip

    def train_step(self, batch) -> tuple[float, float]:
        """One optimizer step; (loss, grad norm). A non-finite loss stops the run, keeping the
        last good checkpoint."""
        state, in_phase = self.state, self.state.step - self.phase_of(self.state.step)[1]
        for group in state.optimizer.param_groups:
            group["lr"] = lr_at(in_phase, self.train_cfg)
        with autocast(self.train_cfg, self.device):
            loss = self.loss(batch)
        value = loss.item()
        if not math.isfinite(value):
            raise TrainingError(
                f"distillation loss became {value} at step {state.step + 1}; the last good "
                "checkpoint is kept. Try a lower learning rate (--lr)"
            )
        backward(loss, state.scaler)
        clip = self.train_cfg.optim.grad_clip or float("inf")
        grad_norm = clip_and_step(state.optimizer, state.net.parameters(), clip, state.scaler)
        state.optimizer.zero_grad(set_to_none=True)
        state.ema.update(state.net, in_phase)
        state.step += 1
        return value, grad_norm

    # ------------------------------------------------------------------------- the loop

    def loop(self, rundir: RunDir, *, progress: bool) -> None:
        """Train to the last step, logging, drawing grids and saving checkpoints (always at a
        phase's end); SIGINT/SIGTERM save a checkpoint and stop."""
        state, run = self.state, self.train_cfg.run
        stream = batches(
            self.data, batch_size=self.train_cfg.optim.batch_size, seed=run.seed,
            start_step=state.step, flip=self.train_cfg.data.flip, device=self.device,
        )  # fmt: skip
        if state.step == 0:
            state.save(self.out, self.config_json)
        rundir.commit()
        logger, meter = open_loggers(
            run, self.out, state.step, batch_size=self.train_cfg.optim.batch_size,
            progress=progress, label="distill", fields=LOG_FIELDS,
        )  # fmt: skip
        bar = tqdm(total=run.steps, initial=state.step, disable=not progress, desc="distill")
        with StopRequest() as stop, logger:
            while state.step < run.steps:
                self.begin_phase()
                loss, grad_norm = self.train_step(next(stream))
                phase, lr = self.phase_of(state.step - 1)[0], state.optimizer.param_groups[0]["lr"]
                bar.update(1)
                bar.set_postfix(phase=phase, loss=f"{loss:.4f}")
                meter.update(state.step, phase=phase, loss=loss, lr=lr, grad_norm=grad_norm)
                if run.sample_every and state.step % run.sample_every == 0:
                    path = self.out / "samples" / f"step_{state.step:07d}.png"
                    logger.log_images(state.step, "samples", self.sample_grid(path))
                self.after_step(stop.requested)
        bar.close()

    def after_step(self, stop: bool) -> None:
        """Checkpoints (every run.checkpoint_every, at each phase's end, at the end and
        on a stop request)."""
        step, run = self.state.step, self.train_cfg.run
        phase_end = step % self.cfg.iters == 0
        every = run.checkpoint_every and step % run.checkpoint_every == 0
        if stop or every or phase_end or step == run.steps:
            self.state.save(self.out, self.config_json)
        if stop:
            raise KeyboardInterrupt(
                f"stopped at step {step}; checkpoint saved in {self.out} (continue with --resume)"
            )

    def sample_grid(self, path: Path) -> torch.Tensor:
        """The EMA student's grid as the run samples, one row per class or prompt: saved as
        ``path`` and returned, (C, H, W) in [-1, 1]."""
        config = self.config_json
        model = LoadedModel(
            self.ema_student, self.state.ema.module, config, config.get("class_names"), self.out
        )
        prompts = grid_prompts(self.data) if config.get("text_conditioned") else None
        s = self.train_cfg.sample
        x = class_grid(
            model, prompts=prompts, sampling=Sampling(s.sampler, s.steps), device=self.device
        )
        grid = make_grid(x.clamp(-1, 1), nrow=8)
        save_png(grid, path, scale=2)
        return grid


def student_config(teacher: LoadedModel, cfg: DistillConfig, train_cfg: TrainConfig) -> dict:
    """The student run's config.json: the teacher's, with the guidance input in the network
    when CFG is distilled, the distillation's settings and a ``distilled`` section."""
    net_cfg = teacher.net.config
    if cfg.guidance is not None:
        net_cfg = replace(net_cfg, guidance_embed=True)
    return {
        **teacher.config,
        "train": to_dict(train_cfg),
        "net": net_config_to_dict(net_cfg),
        "distilled": to_dict(cfg),
    }


def student_state(net: nn.Module, optim: OptimConfig, seed: int) -> TrainState:
    """The student's EMA copy, AdamW and the generator of the losses' draws."""
    o = optim
    adamw = torch.optim.AdamW(net.parameters(), lr=o.lr, betas=o.betas, weight_decay=o.weight_decay)
    ema = EMAWeights(net, decay=o.ema_decay, warmup=o.ema_warmup)
    return TrainState(net, ema, adamw, torch.Generator().manual_seed(seed * 1000 + 1))


def student_net(teacher: LoadedModel, config_json: dict, source: Path) -> nn.Module:
    """The student network with the teacher's weights; a new guidance input starts at zero
    output, so the student computes the teacher's (conditional) function."""
    net = build_run_net(config_json, source)
    own = net.state_dict()
    state = {**own, **teacher.net.state_dict()}
    new = sorted(set(state) - set(teacher.net.state_dict()))
    if any(".guidance." not in k for k in new):
        raise TrainingError(f"the student of {source} does not fit its weights: {new[:3]}")
    load_state_into(net, state, str(source))
    return net.train()


def saved_settings(out: Path) -> tuple[Path, DistillConfig, OptimConfig, RunConfig]:
    """(teacher, settings, optimizer, run options) of the distilled run in ``out``, for
    --resume; one line when ``out`` is no distilled run."""
    path = out / CONFIG
    if not path.is_file():
        raise ValueError(f"cannot resume: {path} does not exist")
    saved = read_json(path)
    if "distilled" not in saved:
        raise ValueError(f"{out} is not a distilled run (resume it with `pixdiff train --resume`)")
    with malformed(path, "distilled"):
        cfg = from_dict(DistillConfig, saved["distilled"], f"{path}: distilled")
    with malformed(path, "train"):
        optim = from_dict(OptimConfig, entry(saved, "train.optim", path), f"{path}: train.optim")
        run = from_dict(RunConfig, entry(saved, "train.run", path), f"{path}: train.run")
    return Path(cfg.teacher), cfg, optim, run
