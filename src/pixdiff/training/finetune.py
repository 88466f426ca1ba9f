"""``pixdiff finetune`` and ``pixdiff align``: adapt a trained run, by LoRA or in full.

The base run is loaded with its EMA weights and frozen. With a :class:`LoRAConfig` only the
adapters train (Hu et al. 2021; :mod:`pixdiff.nets.lora`) and the run directory holds them alone
(:mod:`pixdiff.loras`: model, EMA and train state are the adapters', ``lora.safetensors`` the EMA
adapters with the base's identity); without, every weight trains (full fine-tuning, usually
with a lower learning rate) from a copy of the base and the run is an ordinary run. Either way
the trainer's pieces are reused: the run directory's claim and lock, :class:`TrainState`
checkpoints (exact resume), the EMA, the logs, the progress bar, and sample grids of the same
fixed prompts (or classes) and seeds before (``samples/step_0000000.png``, the base) and during
fine-tuning. What is learnt from a batch is the job's ``loss`` (the diffusion loss here;
Diffusion-DPO's in :mod:`pixdiff.training.align`).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, replace
from pathlib import Path

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from pixdiff.adapters import base_path, weights_sha256
from pixdiff.checkpoint import LoadedModel, encoder_in_run, load, pixdiff_version
from pixdiff.config import OptimConfig, RunConfig, TrainConfig, from_dict, to_dict
from pixdiff.data import Batch, ImageSet
from pixdiff.loras import LORA, LORA_FILE, lora_section, save_lora
from pixdiff.nets.lora import LoRAConfig, LoRASet
from pixdiff.rundir import RunDir, claim
from pixdiff.shipped import SHIPPED_RUNS
from pixdiff.training.batch_inputs import batch_inputs
from pixdiff.training.ema import EMA as EMAWeights
from pixdiff.training.loggers import open_loggers, require_logger
from pixdiff.training.loss_scaling import backward, clip_and_step, grad_scaler
from pixdiff.training.losses import diffusion_loss
from pixdiff.training.records import sample_grid
from pixdiff.training.runtime import StopRequest, resolve_device
from pixdiff.training.trainer import TrainingError, TrainState, lr_at, make_denoiser

FINETUNE = "finetune"  # the config.json section with the fine-tuning's own settings


def base_identity(name: str) -> str:
    """How a fine-tuned run names its base: a shipped model's name, else the absolute path."""
    if not Path(name).exists() and name in SHIPPED_RUNS:
        return name
    return str(Path(name).expanduser().resolve())


def check_out(base: str, out: Path) -> None:
    """Refuse an ``out`` that is the base run itself (it would be overwritten)."""
    base_dir = base_path(base)
    if base_dir.exists() and out.exists() and base_dir.resolve() == out.resolve():
        raise ValueError(f"--out {out} is the base run; give a new directory (the base is kept)")


class Job:
    """One fine-tuning: the frozen base, what trains (adapters or a full copy), its state."""

    def __init__(
        self, base_name: str, base: LoadedModel, cfg: TrainConfig, lora: LoRAConfig | None,
        settings: dict,
    ):  # fmt: skip
        self.base_name, self.base, self.cfg, self.settings = base_name, base, cfg, settings
        self.device = next(base.net.parameters()).device
        self.lora = lora
        base.net.eval().requires_grad_(False)
        torch.manual_seed(cfg.run.seed)  # the adapters' initialisation (A)
        if lora is not None:
            trainable: nn.Module = LoRASet(base.net, lora).to(self.device).train()
        else:
            trainable = copy.deepcopy(base.net).train().requires_grad_(True)
        o = cfg.optim
        params = [p for p in trainable.parameters() if p.requires_grad]
        adamw = torch.optim.AdamW(params, lr=o.lr, betas=o.betas, weight_decay=o.weight_decay)
        ema = EMAWeights(trainable, decay=o.ema_decay, warmup=o.ema_warmup)
        generator = torch.Generator().manual_seed(cfg.run.seed * 1000 + 1)
        scaler = grad_scaler(cfg, self.device)
        self.state = TrainState(trainable, ema, adamw, generator, scaler=scaler)
        self.base_sha256 = weights_sha256(base.net)
        self.learn_sigma = base.net.config.learn_sigma

    @contextmanager
    def network(self, module: nn.Module | None) -> Iterator[nn.Module]:
        """The network with ``module`` (adapters or full weights) in use; None: the base."""
        if module is None or self.lora is None:
            yield module if module is not None else self.base.net
            return
        with module.applied(self.base.net):
            yield self.base.net

    @contextmanager
    def reference(self) -> Iterator[nn.Module]:
        """The frozen base network, also inside :meth:`network` (adapters switched off)."""
        if self.lora is None:
            yield self.base.net
            return
        with self.state.net.disabled():
            yield self.base.net

    def config(self) -> dict:
        """config.json: a LoRA run's ``lora`` section, or the base's config for a full run."""
        section = {**self.settings, "base": base_identity(self.base_name),
                   "base_sha256": self.base_sha256}  # fmt: skip
        if self.lora is not None:
            lora = lora_section(self.state.net, section["base"], self.base_sha256)
            return {LORA: lora, FINETUNE: section, "train": to_dict(self.cfg),
                    "pixdiff": pixdiff_version()}  # fmt: skip
        return {**self.base.config, "train": to_dict(self.cfg), FINETUNE: section,
                "pixdiff": pixdiff_version()}  # fmt: skip

    def save(self, out: Path) -> None:
        """The checkpoint, and a LoRA run's shareable ``lora.safetensors`` (EMA adapters)."""
        config = self.config()
        self.state.save(out, config)
        if self.lora is not None:
            save_lora(out / LORA_FILE, self.state.ema.module, config[LORA])

    def restore(self, out: Path, saved: dict) -> None:
        """Continue from ``out``; refused when its base changed since."""
        if saved.get("base_sha256") != self.base_sha256:
            raise ValueError(
                f"the base {self.base_name} changed since {out} was fine-tuned from it (its "
                "weights differ); resume needs the same base"
            )
        self.state.restore(out)

    def diffusion_loss(self, net: nn.Module, batch: Batch) -> Tensor:
        """The base's own loss on a batch, through ``net``."""
        state, cfg = self.state, self.cfg
        x0, cond = batch_inputs(cfg, net, batch, state.generator, self.device)
        denoiser = make_denoiser(net, cfg, self.learn_sigma)
        return diffusion_loss(denoiser, x0, cond, cfg=cfg.diffusion, generator=state.generator)

    def train_step(self, loss_fn: Callable[[nn.Module, Batch], Tensor], batch: Batch) -> tuple:
        """One optimizer step on ``loss_fn(network, batch)``; (loss, grad norm)."""
        state, cfg = self.state, self.cfg
        for group in state.optimizer.param_groups:
            group["lr"] = lr_at(state.step, cfg)
        with self.network(state.net) as net:
            loss = loss_fn(net, batch)
        value = loss.item()
        if not math.isfinite(value):
            raise TrainingError(
                f"loss became {value} at step {state.step + 1}; the last good checkpoint is "
                "kept. Try a lower learning rate (--lr)"
            )
        backward(loss, state.scaler)
        clip = cfg.optim.grad_clip or float("inf")
        params = [p for p in state.net.parameters() if p.requires_grad]
        grad_norm = clip_and_step(state.optimizer, params, clip, state.scaler)
        state.optimizer.zero_grad(set_to_none=True)
        state.ema.update(state.net, state.step)
        state.step += 1
        return value, grad_norm

    def grid(self, out: Path, step: int, data: ImageSet, prompts: list[str] | None):
        """The fixed-prompt grid of the EMA weights (step 0: the base) as samples/step_N.png."""
        module = None if step == 0 else self.state.ema.module
        with self.network(module) as net, torch.random.fork_rng(devices=[]):
            denoiser = make_denoiser(net, self.cfg, self.learn_sigma)
            path = out / "samples" / f"step_{step:07d}.png"
            return sample_grid(denoiser, self.cfg, path, self.device, prompts, data)

    def begin(self, out: Path, rundir: RunDir) -> None:
        """The first checkpoint (a new run), after which the run directory is kept whatever
        happens (a stop, a crash: --resume continues)."""
        if self.state.step == 0:
            self.save(out)
        rundir.commit()

    def loop(self, out, stream, loss_fn, data, prompts, *, progress: bool, label: str) -> None:
        """Train to the last step: logs, grids, checkpoints; SIGINT/SIGTERM save and stop.
        :meth:`begin` comes first."""
        state, run = self.state, self.cfg.run
        if state.step == 0 and run.sample_every:
            self.grid(out, 0, data, prompts)  # "before": the base itself
        logger, meter = open_loggers(
            run, out, state.step, batch_size=self.cfg.optim.batch_size, progress=progress,
            label=label,
        )  # fmt: skip
        bar = tqdm(total=run.steps, initial=state.step, disable=not progress, desc=label)
        with StopRequest() as stop, logger:
            while state.step < run.steps:
                loss, grad_norm = self.train_step(loss_fn, next(stream))
                step = state.step
                bar.update(1)
                bar.set_postfix(loss=f"{loss:.4f}")
                meter.update(step, loss=loss, lr=lr_at(step - 1, self.cfg), grad_norm=grad_norm)
                last = step == run.steps
                if run.sample_every and (step % run.sample_every == 0 or last):
                    logger.log_images(step, "samples", self.grid(out, step, data, prompts))
                if (
                    (run.checkpoint_every and step % run.checkpoint_every == 0)
                    or last
                    or (stop.requested)
                ):
                    self.save(out)
                if stop.requested:
                    raise KeyboardInterrupt(
                        f"stopped at step {step}; checkpoint saved in {out} (--resume continues)"
                    )
        bar.close()


def tuned_config(base: LoadedModel, name: str, optim: OptimConfig, run: RunConfig) -> TrainConfig:
    """The base's training config with the fine-tuning's optimizer and run options."""
    train = from_dict(TrainConfig, base.config["train"], f"{name}: train")
    if "distilled" in base.config:
        raise ValueError(f"{name} is a distilled run; fine-tune its teacher")
    if train.sr.low_res_size or train.control.enabled:
        raise ValueError(f"{name}: finetune takes base models without low-res or control input")
    if optim.grad_accum != 1:
        raise ValueError("finetune takes optim.grad_accum=1")
    text = encoder_in_run(train.text, base.path)  # absolute: the new run lies elsewhere
    return replace(train, optim=optim, run=replace(run, eval_every=0), text=text)


def start(
    base_name: str, out: Path, optim: OptimConfig, run: RunConfig, lora: LoRAConfig | None,
    settings: dict,
) -> Job:  # fmt: skip
    """Load the base (refusing ``out`` as its directory) and build the job."""
    require_logger(run.logger)
    check_out(base_name, out)
    if run.threads:
        torch.set_num_threads(run.threads)
    base = load(base_path(base_name), device=resolve_device(run.device))
    cfg = tuned_config(base, base_name, optim, run)
    settings = {**settings, "lora": None if lora is None else asdict(lora)}
    return Job(base_name, base, cfg, lora, settings)


@contextmanager
def claimed(out: Path, *, resume: bool, overwrite: bool):
    """The run directory, claimed and opened (:func:`pixdiff.rundir.claim`)."""
    with claim(out, resume=resume, overwrite=overwrite) as rundir:
        rundir.open()
        yield rundir


def lora_config(d: dict | None) -> LoRAConfig | None:
    """A LoRAConfig from its saved dict (None: full fine-tuning)."""
    if d is None:
        return None
    return LoRAConfig(**{**d, "targets": tuple(d["targets"])})


__all__ = ["FINETUNE", "Job", "base_identity", "check_out", "claimed", "lora_config", "start"]
