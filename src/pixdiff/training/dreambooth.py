"""``pixdiff finetune RUN --data FOLDER --out RUN2``: fine-tuning on a folder of images, and
DreamBooth's subject teaching with prior preservation (Ruiz et al. 2023).

The folder's captions (``metadata.jsonl`` ``text``) are the prompts, or ``--instance-prompt``
replaces them all ("a sks emoji": a rare identifier and the class noun). With a class prompt,
the base draws ``prior_images`` samples of it once at the start, cached in the run
(``prior.safetensors``; a resumed run reads them back), and every batch mixes instance and
class images in a fixed share: ``round(batch_size * prior_share)`` class images, the rest
instance images. With the per-sample mean of the diffusion loss this is DreamBooth's
class-specific prior-preservation loss (Ruiz et al. 2023, Eq. 2)

    E[ w_t ||x_hat(a x + s eps, c) - x||^2
       + lambda w_t' ||x_hat(a x_pr + s' eps', c_pr) - x_pr||^2 ]

with lambda = prior_share / (1 - prior_share) (1 at the default share 0.5, the paper's value).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import torch

from pixdiff.checkpoint import CONFIG, read_json, read_tensors, save_tensors
from pixdiff.config import OptimConfig, RunConfig
from pixdiff.data import Batch, ImageSet, batches, from_model_space, load_dataset
from pixdiff.nets.lora import LoRAConfig
from pixdiff.pipelines.generate import generate
from pixdiff.pipelines.steering import Steering
from pixdiff.sampling import Sampling
from pixdiff.training.batch_inputs import grid_prompts
from pixdiff.training.finetune import FINETUNE, Job, claimed, start

PRIOR = "prior.safetensors"
PRIOR_SEED = 1_000_000  # the prior samples' seeds: not those of the sample grids


def instance_set(job: Job, folder: str, instance_prompt: str | None) -> ImageSet:
    """The folder's images at the base's size and channels, prompts from metadata.jsonl or
    ``instance_prompt``; an unreadable image fails naming it (load_dataset)."""
    c, size, _ = job.base.image_shape
    data = load_dataset(folder, image_size=size, channels=c)
    text = job.base.text_encoder is not None
    if text and instance_prompt is not None:
        data = replace(data, captions=[instance_prompt] * len(data))
    if text and data.captions is None:
        raise ValueError(
            f"{folder} has no captions (metadata.jsonl 'text'); give --instance-prompt"
        )
    if not text and job.base.num_classes and data.labels is None:
        raise ValueError(f"{folder} has no labels (metadata.jsonl 'label') for a class model")
    return data


def prior_set(job: Job, out: Path, class_prompt: str, count: int) -> ImageSet:
    """``count`` samples of ``class_prompt`` from the base, drawn once and cached in ``out``."""
    path = out / PRIOR
    if path.is_file():
        images = read_tensors(path)[0]["images"]
    else:
        steering = Steering(prompts=class_prompt)
        with torch.random.fork_rng(devices=[]):
            x = generate(
                job.base, steering, Sampling(steps=job.cfg.sample.steps), n=count,
                seed=PRIOR_SEED, device=job.device,
            )  # fmt: skip
        images = from_model_space(x.cpu())
        save_tensors(path, {"images": images}, {"prompt": class_prompt})
    return ImageSet(images, captions=[class_prompt] * len(images), name="prior")


def repeated(data: ImageSet, at_least: int) -> ImageSet:
    """``data`` repeated whole until it has at least ``at_least`` items (a subject of 3 images
    fills a batch of 4)."""
    k = -(-at_least // len(data))
    if k <= 1:
        return data
    return ImageSet(
        data.images.repeat(k, 1, 1, 1),
        labels=None if data.labels is None else data.labels.repeat(k),
        class_names=data.class_names,
        captions=None if data.captions is None else data.captions * k,
        name=data.name,
    )


def mixed_batches(
    instance: ImageSet, prior: ImageSet | None, *, batch_size: int, prior_share: float,
    seed: int, start_step: int = 0, flip: bool = False, device=None,
) -> Iterator[Batch]:  # fmt: skip
    """Endless, resumable batches of ``batch_size``: ``round(batch_size * prior_share)`` class
    (prior) images first, then instance images; only instance images without a prior."""
    n_prior = round(batch_size * prior_share) if prior is not None else 0
    n_inst = batch_size - n_prior
    if n_inst < 1 or (prior is not None and n_prior < 1):
        raise ValueError(
            f"--prior-share {prior_share} of a batch of {batch_size} leaves no "
            f"{'instance' if n_inst < 1 else 'class'} image in it"
        )
    own = batches(
        repeated(instance, n_inst), batch_size=n_inst, seed=seed, start_step=start_step,
        flip=flip, device=device,
    )  # fmt: skip
    if prior is None:
        yield from own
        return
    other = batches(
        repeated(prior, n_prior), batch_size=n_prior, seed=seed + 1, start_step=start_step,
        flip=flip, device=device,
    )  # fmt: skip
    for a, b in zip(other, own, strict=False):
        labels = None if a.labels is None or b.labels is None else torch.cat([a.labels, b.labels])
        yield Batch(torch.cat([a.images, b.images]), labels, [*a.captions, *b.captions])


def finetune(
    base: str,
    out: str | Path,
    *,
    data: str,
    optim: OptimConfig,
    run: RunConfig,
    lora: LoRAConfig | None,
    instance_prompt: str | None = None,
    class_prompt: str | None = None,
    prior_share: float = 0.5,
    prior_images: int = 16,
    resume: bool = False,
    overwrite: bool = False,
    progress: bool = True,
) -> Path:
    """Fine-tune the run ``base`` on the images in ``data`` into ``out`` (LoRA when ``lora``,
    else every weight); with ``class_prompt``, DreamBooth's prior preservation. Returns ``out``."""
    out = Path(out)
    settings = {
        "method": "finetune", "data": str(Path(data).expanduser().resolve()),
        "instance_prompt": instance_prompt, "class_prompt": class_prompt,
        "prior_share": prior_share, "prior_images": prior_images,
    }  # fmt: skip
    job = start(base, out, optim, run, lora, settings)
    if class_prompt is not None and job.base.text_encoder is None:
        raise ValueError("--class-prompt needs a text-conditioned base run")
    instance = instance_set(job, data, instance_prompt)
    with claimed(out, resume=resume, overwrite=overwrite) as rundir:
        if resume:
            job.restore(out, read_json(out / CONFIG)[FINETUNE])
        job.begin(out, rundir)
        prior = None if class_prompt is None else prior_set(job, out, class_prompt, prior_images)
        stream = mixed_batches(
            instance, prior, batch_size=optim.batch_size, prior_share=prior_share,
            seed=run.seed, start_step=job.state.step, flip=job.cfg.data.flip, device=job.device,
        )  # fmt: skip
        prompts = None
        if job.base.text_encoder is not None:
            prompts = grid_prompts(instance)[:4] + ([class_prompt] if class_prompt else [])
        job.loop(
            out, stream, job.diffusion_loss, instance, prompts, progress=progress,
            label="finetune",
        )  # fmt: skip
    return out


__all__ = ["finetune", "mixed_batches", "prior_set", "repeated"]
