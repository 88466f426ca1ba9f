"""A job's work: a checked request and the pipeline call ``pixdiff sample`` / ``edit`` /
``inpaint`` / ``upscale`` would make for it.

Each request body becomes a :class:`pixdiff.pipelines.model.Request` (the request object the
Python API uses), whose Steering and Sampling go to the same pipeline the CLI calls. Everything a
model cannot take is found when the task is built (:mod:`pixdiff.serve.build`), before it is
queued. Generation tasks that share a model and every setting but the classes, prompts, seeds
and n run together in one sampler pass (:meth:`GenerateTask.run_together`). Every pipeline runs
on a copy of the model whose denoiser feeds the live view (:func:`pixdiff.serve.live.watched`).
"""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass, field, replace

import torch
from torch import Tensor

from pixdiff.pipelines.cascade import Stage, cascade
from pixdiff.pipelines.edit import img2img, inpaint
from pixdiff.pipelines.generate import generate
from pixdiff.pipelines.model import CascadeModel, Model, Request
from pixdiff.sampling import Sampling
from pixdiff.serve.live import OnCall, watched


@dataclass
class Task:
    """A checked request: the model, the Request, each stage's Sampling, seeds and what the
    response reports. ``calls`` is the number of denoiser calls (the live view's total)."""

    name: str
    model: Model | CascadeModel
    request: Request
    samplings: list[Sampling]
    seed: int
    n: int
    calls: int
    settings: dict = field(default_factory=dict)
    command: str = ""

    @property
    def key(self) -> Hashable | None:
        """Tasks with equal, non-None keys may run in one pass."""
        return None

    def run(self, on_call: OnCall) -> Tensor:
        """The task's n images (n, C, H, W), unclipped."""
        raise NotImplementedError

    @classmethod
    def run_together(cls, tasks: list[Task], on_call: OnCall) -> list[Tensor]:
        """Each task's images; tasks of this kind run one at a time."""
        (task,) = tasks
        return [task.run(on_call)]


@dataclass
class GenerateTask(Task):
    """Images from a class, a prompt or nothing (``pixdiff sample``)."""

    labels: Tensor | None = None  # the n class ids, resolved from names or "all"

    def run(self, on_call: OnCall) -> Tensor:
        return self.run_together([self], on_call)[0]

    @property
    def key(self) -> Hashable:
        r = self.request
        steer = (r.negative_class, r.negative_prompt, r.guidance, r.options)
        return (self.name, repr(self.samplings), steer, r.classes is None, r.prompts is None)

    @classmethod
    def run_together(cls, tasks: list[Task], on_call: OnCall) -> list[Tensor]:
        """One :func:`generate` call for all the tasks: their class ids or prompts side by side,
        each image with its own seed (as it would have alone), one network pass per step."""
        first, n = tasks[0], sum(t.n for t in tasks)
        steering, seed = first.request.steering(), first.seed
        if len(tasks) > 1:
            labels = None if first.labels is None else torch.cat([t.labels for t in tasks])
            prompts = None
            if first.request.prompts is not None:
                prompts = [t.request.prompts for t in tasks for _ in range(t.n)]
            steering = replace(steering, classes=labels, prompts=prompts)
            seed = [t.seed + i for t in tasks for i in range(t.n)]
        model = watched(first.model, rows=n, on_call=on_call)
        x = generate(
            model, steering, first.samplings[0], n=n, seed=seed, batch_size=n,
            device=model.device,
        )  # fmt: skip
        return list(x.split([t.n for t in tasks]))


@dataclass
class CascadeTask(Task):
    """A base model's images super-resolved stage by stage (``pixdiff sample --cascade``)."""

    def run(self, on_call: OnCall) -> Tensor:
        models = [watched(m, rows=self.n, on_call=on_call) for m in self.model.models]
        stages = [Stage(m, s) for m, s in zip(models, self.samplings, strict=True)]
        return cascade(
            stages, self.request.steering(), n=self.n, seed=self.seed, batch_size=self.n,
            device=models[0].device,
        )[-1]  # fmt: skip


@dataclass
class EditTask(Task):
    """SDEdit of an uploaded image (``pixdiff edit``)."""

    image: Tensor | None = None  # (1, C, H, W) in [-1, 1]
    strength: float = 0.6

    def run(self, on_call: OnCall) -> Tensor:
        model = watched(self.model, rows=self.n, on_call=on_call)
        den, cond, x0 = _guided(self, model, self.image)
        return img2img(
            den, x0, strength=self.strength, sampling=self.samplings[0], cond=cond,
            seed=self.seed,
        )  # fmt: skip


@dataclass
class InpaintTask(Task):
    """The masked region of an uploaded image filled in (``pixdiff inpaint``)."""

    image: Tensor | None = None
    known: Tensor | None = None  # (1, 1, H, W), 1 = keep the input
    resample: int = 1

    def run(self, on_call: OnCall) -> Tensor:
        model = watched(self.model, rows=self.n, on_call=on_call)
        den, cond, x0 = _guided(self, model, self.image)
        return inpaint(
            den, x0, self.known.to(x0.device), resample=self.resample,
            sampling=self.samplings[0], cond=cond, seed=self.seed,
        )  # fmt: skip


@dataclass
class UpscaleTask(Task):
    """An uploaded low-resolution image super-resolved (``pixdiff upscale``)."""

    image: Tensor | None = None  # the low-res input (1, C, h, w)
    aug_level: float | None = None

    def run(self, on_call: OnCall) -> Tensor:
        model = watched(self.model, rows=self.n, on_call=on_call)
        stage = Stage(model, self.samplings[0], aug_level=self.aug_level)
        low_res = self.image.to(model.device).expand(self.n, -1, -1, -1)
        return cascade(
            [stage], self.request.steering(), low_res=low_res, seed=self.seed,
            device=model.device,
        )[-1]  # fmt: skip


def _guided(task: Task, model: Model, image: Tensor):
    """(guided denoiser, cond on the device, the input as n rows) of an editing task."""
    resolved = task.request.steering().resolve(model, task.n)
    cond = None if resolved.cond is None else resolved.cond.to(model.device)
    return resolved.denoiser, cond, image.to(model.device).expand(task.n, -1, -1, -1)
