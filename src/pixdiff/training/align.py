"""``pixdiff align RUN --pairs PAIRS.jsonl --out RUN2``: Diffusion-DPO (Wallace et al. 2024) on
preference pairs, by LoRA or in full (:mod:`pixdiff.training.finetune`), the frozen base run as
the reference; the loss is :func:`pixdiff.training.preference.dpo_loss`.

A pairs file has one JSON object a line: the condition (``"prompt"`` for a text model,
``"class"``, a name or id, for a class model; neither for an unconditional one), and the
``"chosen"`` (preferred) and ``"rejected"`` image paths, relative to the pairs file. A
malformed line, a missing key or an image that cannot be read is refused naming the line.
Conditions are never dropped here: the pairs say which image is better *for that condition*.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import torch
from torch import Tensor, nn

from pixdiff.checkpoint import CONFIG, read_json
from pixdiff.config import OptimConfig, RunConfig
from pixdiff.data import Batch, ImageSet, batches, from_model_space
from pixdiff.images import read_image
from pixdiff.nets.lora import LoRAConfig
from pixdiff.pipelines.classes import class_ids
from pixdiff.training.batch_inputs import batch_inputs
from pixdiff.training.finetune import FINETUNE, Job, claimed, start
from pixdiff.training.preference import BETA, dpo_loss
from pixdiff.training.trainer import make_denoiser


def read_pairs(path: str | Path, job: Job) -> ImageSet:
    """The pairs as one set whose images are (chosen, rejected) stacked on the channel axis,
    uint8 (N, 2C, H, W), with their prompts or labels."""
    path = Path(path)
    c, size, _ = job.base.image_shape
    text, names = job.base.text_encoder is not None, job.base.class_names
    rows, prompts, labels = [], [], []
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise ValueError(f"cannot read the pairs file {path} ({e})") from None
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        where = f"{path}:{number}"
        try:
            row = json.loads(line)
            chosen, rejected = row["chosen"], row["rejected"]
            condition = row["prompt"] if text else row["class"] if job.base.num_classes else None
        except (json.JSONDecodeError, KeyError, TypeError) as e:
            need = "prompt, " if text else "class, " if job.base.num_classes else ""
            raise ValueError(
                f"{where}: malformed pair ({type(e).__name__}: {e}); each line is a JSON object "
                f"with {need}chosen, rejected"
            ) from None
        pair = []
        for image in (chosen, rejected):
            file = path.parent / str(image)
            try:
                pair.append(read_image(file, size=size, channels=c, who=f"{where}: the base"))
            except (OSError, ValueError) as e:
                raise ValueError(f"{where}: image {file} cannot be used ({e})") from None
        rows.append(from_model_space(torch.cat(pair, dim=1)))
        if text:
            prompts.append(str(condition))
        elif job.base.num_classes:
            try:
                labels.append(int(class_ids(condition, names or [], 1, flag="class")[0]))
            except ValueError as e:
                raise ValueError(f"{where}: {e}") from None
    if not rows:
        raise ValueError(f"{path} holds no pairs")
    return ImageSet(
        torch.cat(rows), labels=torch.tensor(labels) if labels else None, class_names=names,
        captions=prompts or None, name="pairs",
    )  # fmt: skip


def dpo_step_loss(job: Job, beta: float):
    """The loss function of the job's train step: Diffusion-DPO against the frozen base."""
    cfg = job.cfg

    def loss(net: nn.Module, batch: Batch) -> Tensor:
        c = batch.images.shape[1] // 2
        x_w, x_l = batch.images[:, :c], batch.images[:, c:]
        plain = Batch(x_w, batch.labels, batch.captions)
        ref_cond = None
        if job.lora is None and job.base.text_encoder is not None:  # the base's own encoder
            g = torch.Generator().set_state(job.state.generator.get_state())
            with torch.no_grad():
                ref_cond = batch_inputs(cfg, job.base.net, plain, g, job.device)[1]
        _, cond = batch_inputs(cfg, net, plain, job.state.generator, job.device)
        model = make_denoiser(net, cfg, job.learn_sigma)
        with job.reference() as ref_net:  # the same module, adapters off, for a LoRA
            reference = make_denoiser(ref_net, cfg, job.learn_sigma)
        value, _ = dpo_loss(
            model, reference, x_w, x_l, cond, cfg=cfg.diffusion, beta=beta,
            generator=job.state.generator, reference_scope=job.reference, ref_cond=ref_cond,
        )  # fmt: skip
        return value

    return loss


def align(
    base: str,
    out: str | Path,
    *,
    pairs: str,
    optim: OptimConfig,
    run: RunConfig,
    lora: LoRAConfig | None,
    beta: float = BETA,
    resume: bool = False,
    overwrite: bool = False,
    progress: bool = True,
) -> Path:
    """Align the run ``base`` with the preference pairs in ``pairs`` into ``out``."""
    out = Path(out)
    if beta <= 0:
        raise ValueError(f"--beta must be positive, got {beta}")
    settings = {
        "method": "dpo", "pairs": str(Path(pairs).expanduser().resolve()), "beta": beta,
    }  # fmt: skip
    job = start(base, out, optim, run, lora, settings)
    job.cfg = replace(
        job.cfg,
        diffusion=replace(job.cfg.diffusion, label_dropout=0.0),
        text=replace(job.cfg.text, prompt_dropout=0.0),
    )
    data = read_pairs(pairs, job)
    shown = ImageSet(
        data.images[:, : data.images.shape[1] // 2].contiguous(), labels=data.labels,
        class_names=data.class_names, captions=data.captions, name="chosen",
    )  # fmt: skip
    with claimed(out, resume=resume, overwrite=overwrite) as rundir:
        if resume:
            job.restore(out, read_json(out / CONFIG)[FINETUNE])
        job.begin(out, rundir)
        stream = batches(
            data, batch_size=min(optim.batch_size, len(data)), seed=run.seed,
            start_step=job.state.step, flip=job.cfg.data.flip, device=job.device,
        )  # fmt: skip
        prompts = list(dict.fromkeys(data.captions))[:8] if data.captions else None
        job.loop(
            out, stream, dpo_step_loss(job, beta), shown, prompts, progress=progress,
            label="align",
        )  # fmt: skip
    return out


__all__ = ["align", "read_pairs"]
