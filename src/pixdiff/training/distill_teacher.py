"""The teacher of a distillation and each batch's conditions: guided distillation (Meng et al.
2023) makes the teacher's classifier-free guidance at scale w a target, and w an input of the
student, so class and text conditioning survive with one network pass per step.

A teacher is either a trained run, guided by CFG with each sample's own scale, or a student
of an earlier phase (or run) that takes the scale as an input itself.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass, replace

import torch
from torch import Tensor, nn

from pixdiff.conditioning import Cond
from pixdiff.data import Batch
from pixdiff.denoiser import Denoised, Denoiser
from pixdiff.guidance import DenoiserWrapper, cfg_mix, label_cond
from pixdiff.pipelines.steering import prompt_cond
from pixdiff.training.losses import drop_labels, drop_prompts


class PerSampleCFG(DenoiserWrapper):
    """Classifier-free guidance (Ho & Salimans 2022, Eq. 6) at each sample's own scale
    ``cond.guidance``, (N,): x0 = x0_u + w (x0_c - x0_u), eps mixed alike, one batched pass.
    The scale is taken out of the Cond the guided network sees.

    Args:
        uncond: the second branch's Cond from the conditional one (null label, empty prompt).
    """

    def __init__(self, denoiser: nn.Module, uncond: Callable[[Cond], Cond]):
        super().__init__(denoiser)
        self.uncond = uncond

    def forward(self, x_t: Tensor, t: Tensor, cond: Cond) -> Denoised:
        w = cond.guidance.reshape(-1, *(1,) * (x_t.dim() - 1)).to(x_t.dtype)
        plain = replace(cond, guidance=None)
        n = x_t.shape[0]
        t_n = torch.as_tensor(t, dtype=torch.float64, device=x_t.device).expand(n)
        both = self.denoiser(
            torch.cat([x_t, x_t]), torch.cat([t_n, t_n]), Cond.cat([plain, self.uncond(plain)])
        )
        x0 = cfg_mix(both.x0[n:], both.x0[:n], w)
        eps = cfg_mix(both.eps[n:], both.eps[:n], w)
        return Denoised(x0, eps, None, both.raw[:n])


@dataclass
class Teacher:
    """A frozen teacher denoiser; ``takes_scale``: its network has the guidance input (a
    distilled student), else CFG guides it."""

    denoiser: Denoiser
    takes_scale: bool

    @classmethod
    def frozen_copy(cls, denoiser: Denoiser) -> Teacher:
        """A frozen copy of a student denoiser, the teacher of the next phase."""
        net = copy.deepcopy(denoiser.net).eval().requires_grad_(False)
        copied = Denoiser(
            net, denoiser.schedule, denoiser.prediction, sigma_data=denoiser.sigma_data,
            learn_sigma=denoiser.learn_sigma,
        )  # fmt: skip
        return cls(copied, net.config.guidance_embed)

    def for_batch(
        self,
        student_net: nn.Module,
        batch: Batch,
        *,
        label_dropout: float,
        prompt_dropout: float,
        scales: tuple[float, float] | None,
        generator: torch.Generator,
        device,
    ) -> tuple[Cond | None, Cond | None, nn.Module]:
        """(the student's Cond, the teacher's Cond, the teacher as a denoiser of this batch).

        Labels are dropped to the null label and prompts to the empty prompt as in training,
        so the student also learns the unconditional branch; a scale w ~ U[lo, hi] is drawn
        per sample when ``scales`` is given."""
        n = batch.images.shape[0]
        text = getattr(student_net, "text_encoder", None) is not None
        uncond = None
        if text:
            prompts = drop_prompts(batch.captions, prompt_dropout, generator)
            student = student_net.encode(prompts, warn=False)
            teacher, uncond = prompt_cond(self.denoiser.net.text_encoder, prompts, n)
        elif student_net.config.num_classes:
            k = student_net.config.num_classes
            label = drop_labels(batch.labels, label_dropout, k, generator).to(device)
            student = teacher = Cond(label=label)
            uncond = label_cond(k)
        else:
            return None, None, self.denoiser
        if scales is None:
            return student, teacher, self.denoiser
        lo, hi = scales
        w = (lo + (hi - lo) * torch.rand(n, generator=generator)).to(device)
        student, teacher = replace(student, guidance=w), replace(teacher, guidance=w)
        guided = self.denoiser if self.takes_scale else PerSampleCFG(self.denoiser, uncond)
        return student, teacher, guided
