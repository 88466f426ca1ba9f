"""What a distillation does: the ``distilled`` section of a distilled run's config.json, and the
checks of a teacher against it (one clear line for a run that cannot be distilled so).

A distilled run is an ordinary run directory: its ``train`` section is the teacher's, with the
distillation's optimizer and run settings and its own sampling defaults (sampler, steps,
guidance), and ``distilled`` says where it came from and how to sample it:
``guidance`` is the range of scales the network takes as an input (read by
:meth:`pixdiff.pipelines.steering.Steering.resolve`), ``max_steps`` the most sampling steps it
supports (read by :func:`pixdiff.pipelines.generate.generate`).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Literal

from pixdiff.config import SampleDefaults, check_intervals, valid_in
from pixdiff.training.progressive import Weighting, phase_count

Method = Literal["consistency", "progressive"]
Variant = Literal["auto", "training", "distillation"]
# Multistep consistency sampling is trained for the one-step map; iCT and ECT report 1 and 2
# steps, and beyond a few steps the fresh noise of each step outweighs what it refines.
MAX_CONSISTENCY_STEPS = 4
DEFAULT_TEACHER_STEPS = 64
MAX_ITERS = 1_000_000  # optimizer steps per phase: a larger count is a typo, not a plan


@dataclass(frozen=True)
class DistillConfig:
    """How a run is distilled (Salimans & Ho 2022; Song et al. 2023; Geng et al. 2024).

    Attributes:
        method: progressive (halve DDIM steps per phase) or consistency (ECT tuning).
        teacher, teacher_sha256: the teacher run's directory and the SHA-256 of its weights,
            checked on resume.
        steps: the student's sampling steps (progressive: after the last phase; consistency:
            the default of multistep consistency sampling).
        max_steps: the most sampling steps the student supports (None: any).
        teacher_steps: DDIM steps of the first phase's teacher (progressive).
        iters: optimizer steps per phase (progressive) or in all (consistency).
        guidance: the range (lo, hi) of CFG scales distilled, each sample's w ~ U[lo, hi] fed
            to the student (Meng et al. 2023); None for an unconditional teacher.
        weighting: progressive's x0-error weight (:func:`progressive.loss_weight`).
        variant: consistency training (x_r from the same noise) or distillation (x_r by the
            teacher's guided DDIM step); auto: distillation when a guidance scale is distilled.
        p_mean, p_std: log-normal noise levels sigma~ of consistency tuning (iCT).
        gap_k, gap_b, gap_stages: ECT's gap n(t) = 1 + k sigmoid(-b t), halved ``gap_stages``
            times over the run.
        huber_c: pseudo-Huber c; 0 for iCT's 0.00054 sqrt(d).
    """

    method: Method = "progressive"
    teacher: str = ""
    teacher_sha256: str = ""
    steps: int = valid_in("[1, inf)", 2)
    max_steps: int | None = None
    teacher_steps: int = valid_in("[2, 4096]", DEFAULT_TEACHER_STEPS)
    iters: int = valid_in(f"[1, {MAX_ITERS}]", 1000)
    guidance: tuple[float, float] | None = None
    weighting: Weighting = "auto"
    variant: Variant = "auto"
    p_mean: float = -1.1
    p_std: float = valid_in("(0, inf)", 2.0)
    gap_k: float = valid_in("[0, inf)", 8.0)
    gap_b: float = valid_in("[0, inf)", 1.0)
    gap_stages: int = valid_in("[0, inf)", 8)
    huber_c: float = valid_in("[0, inf)", 0.0)

    def __post_init__(self) -> None:
        check_intervals(self, "distilled")
        if self.guidance is not None and not 0 <= self.guidance[0] <= self.guidance[1]:
            raise ValueError(f"guidance range needs 0 <= LO <= HI, got {list(self.guidance)}")
        if self.method == "consistency" and self.steps > MAX_CONSISTENCY_STEPS:
            raise ValueError(
                f"a consistency model samples in 1 to {MAX_CONSISTENCY_STEPS} steps, got "
                f"--steps {self.steps}"
            )
        if self.method == "progressive":
            phase_count(self.teacher_steps, self.steps)
        guided = self.guidance is not None and self.guidance != (1.0, 1.0)
        if self.method == "consistency" and self.variant == "training" and guided:
            raise ValueError(
                "consistency training takes its targets from data, which carry no guidance: "
                "distil guidance with distilled.variant=distillation, or use --guidance 1"
            )

    @property
    def phases(self) -> int:
        """Progressive phases (each ``iters`` steps); consistency tuning is one phase."""
        return phase_count(self.teacher_steps, self.steps) if self.method == "progressive" else 1

    @property
    def consistency_distillation(self) -> bool:
        """Whether x_r comes from the teacher's step rather than the same noise."""
        if self.variant == "auto":
            return self.guidance is not None
        return self.variant == "distillation"

    def sample_defaults(self, teacher_guidance: float) -> SampleDefaults:
        """The distilled run's sampling defaults: its sampler and steps, and the teacher's
        scale moved into the distilled range."""
        sampler = "consistency" if self.method == "consistency" else "ddim"
        lo, hi = self.guidance or (teacher_guidance, teacher_guidance)
        return SampleDefaults(sampler, self.steps, min(max(teacher_guidance, lo), hi))


def weights_sha256(path: Path) -> str:
    """The SHA-256 of a weights file (hex), identifying a teacher."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def settle(cfg: DistillConfig, teacher_config: dict, teacher_dir: Path) -> DistillConfig:
    """``cfg`` checked against the teacher run's config.json and completed: the guidance range
    (default: the teacher's own scale for a conditional teacher), the max steps, the teacher's
    path. One-line ValueError for a teacher that cannot be distilled as asked."""
    earlier = teacher_config.get("distilled")
    conditional = bool(teacher_config["net"].get("num_classes")) or bool(
        teacher_config.get("text_conditioned")
    )
    if earlier is not None:
        cfg = _from_distilled(cfg, earlier, teacher_dir)
    elif cfg.guidance is not None and not conditional:
        raise ValueError(
            f"{teacher_dir} is unconditional: there is no guidance to distil (drop --guidance)"
        )
    elif cfg.guidance is None and conditional:
        w = float(teacher_config["train"]["sample"]["guidance"])
        cfg = replace(cfg, guidance=(w, w))
    limit = MAX_CONSISTENCY_STEPS if cfg.method == "consistency" else None
    return replace(cfg, teacher=str(teacher_dir.resolve()), max_steps=limit)


def _from_distilled(cfg: DistillConfig, earlier: dict, teacher_dir: Path) -> DistillConfig:
    """Distilling a distilled run: only progressive from progressive makes sense, continuing
    to halve from its steps at its guidance range."""
    method, steps = earlier.get("method"), int(earlier.get("steps", 0))
    if cfg.method == "consistency" or method != "progressive":
        raise ValueError(
            f"{teacher_dir} is itself distilled ({method}); {cfg.method} distillation needs a "
            f"trained run's probability-flow ODE, which a few-step student no longer "
            f"follows: distil its teacher {earlier.get('teacher')} instead"
        )
    if steps <= 1:
        raise ValueError(f"{teacher_dir} already samples in one step; nothing is left to halve")
    given = cfg.teacher_steps
    if given not in (DEFAULT_TEACHER_STEPS, steps):
        raise ValueError(
            f"{teacher_dir} was distilled to {steps} steps: its DDIM steps are the teacher's "
            f"steps (--teacher-steps {steps}), not {given}"
        )
    scales = earlier.get("guidance")
    scales = tuple(scales) if scales is not None else None
    if cfg.guidance is not None and cfg.guidance != scales:
        raise ValueError(
            f"{teacher_dir} takes guidance scales {scales} as an input; its student distils "
            f"the same ones, not {list(cfg.guidance)}"
        )
    return replace(cfg, teacher_steps=steps, guidance=scales)
