"""The distilled emoji model beside its teacher on the demo's prompts, as a user sees them.

One row per prompt of ``pixdiff demo`` (``DEMO_PROMPTS``), --per-prompt samples in each of
three blocks separated by a white column: the teacher's 50 DDIM steps with classifier-free
guidance (100 network passes per image), the teacher's own 2 DDIM steps (4 passes, not
distilled) and the distilled student's 2 DDIM steps with the scale as an input (2 passes).
Every block uses the same seeds (sample i of a prompt: --seed + its index) and the same
guidance scale, so a column compares one starting noise across the three.

    .venv/bin/python bench/emoji_distilled.py emoji-distilled \\
        --out docs/bench/emoji-distilled-vs-50-steps.png
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from pixdiff.cli.demo import DEMO_PROMPTS
from pixdiff.images import make_grid, save_png
from pixdiff.pipelines.generate import generate
from pixdiff.pipelines.model import load
from pixdiff.pipelines.steering import Steering
from pixdiff.sampling import Sampling
from pixdiff.training.distill import teacher_dir


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("student", help="the distilled emoji run (or 'emoji-distilled')")
    p.add_argument("--per-prompt", type=int, default=4, help="samples per prompt and block")
    p.add_argument("--teacher-steps", type=int, default=50, help="the teacher's DDIM steps")
    p.add_argument("--guidance", type=float, default=3.0, help="CFG scale (default 3)")
    p.add_argument("--seed", type=int, default=0, help="first seed (default 0)")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    p.add_argument("--out", default="out/emoji-distilled-vs-50-steps.png", help="the PNG")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    student = load(args.student)
    teacher = load(teacher_dir(student.config["distilled"]["teacher"]))
    steps = int(student.config["train"]["sample"]["steps"])
    k = args.per_prompt
    prompts = [p for p in DEMO_PROMPTS for _ in range(k)]
    steering = Steering(prompts=prompts, guidance=args.guidance)
    seeds = [args.seed + i for _ in DEMO_PROMPTS for i in range(k)]  # the same for each prompt
    blocks = []
    for name, model, n_steps in (
        ("teacher", teacher, args.teacher_steps),
        ("teacher", teacher, steps),
        ("distilled", student, steps),
    ):
        start = time.perf_counter()
        x = generate(model, steering, Sampling("ddim", n_steps), n=len(prompts), seed=seeds)
        print(f"{name:<10} DDIM {n_steps:>3} steps: {time.perf_counter() - start:6.1f} s")
        blocks.append(x.clamp(-1, 1).reshape(len(DEMO_PROMPTS), k, *x.shape[1:]))
    gap = torch.ones_like(blocks[0][:, :1])  # a white column between blocks
    rows = torch.cat([blocks[0], gap, blocks[1], gap, blocks[2]], dim=1)
    grid = make_grid(rows.reshape(-1, *rows.shape[2:]), nrow=rows.shape[1])
    path = save_png(grid, Path(args.out), scale=2)
    print(f"rows: {', '.join(DEMO_PROMPTS)}")
    seeds_text = f"seeds {args.seed}-{args.seed + k - 1}"
    print(f"blocks: teacher {args.teacher_steps} steps | teacher {steps} steps | distilled "
          f"{steps} steps, guidance {args.guidance:g}, {seeds_text}")  # fmt: skip
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
