"""Distilled models against their teacher: FD and class accuracy of guided, class-balanced
samples through the shipped Fashion-MNIST classifier (its 128-d features for FD, against the
10,000 test images; its predictions for accuracy), the same seeds and guidance for every row.

Rows: the teacher at --teacher-steps DDIM steps (the target's reference), at the steps the
distillation started from and at the student's own steps without distillation; then each
distilled run at its default sampler and steps (and --also-steps). FD at small n is biased
upward; compare rows of one table, which share n.

    .venv/bin/python bench/distilled.py fashion-distilled RUN_1STEP --n 500 --guidance 2 \\
        --json out/bench-distilled.json
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from pixdiff.eval.report import PeriodicEval, SampleSpec
from pixdiff.pipelines.model import load
from pixdiff.training.distill import teacher_dir


def score(evaluator: PeriodicEval, model, name: str, spec: SampleSpec) -> dict:
    start = time.time()
    scores = evaluator(model, spec)
    row = {"model": name, "sampler": spec.sampler, "steps": spec.steps, "n": spec.n}
    row.update(fd=scores["fd"], acc=scores["acc"], seconds=round(time.time() - start, 1))
    print(
        f"{name:<28} {spec.sampler:<12} {spec.steps:>3} steps  FD {row['fd']:7.2f}  "
        f"acc {row['acc']:.3f}  ({row['seconds']} s)",
        flush=True,
    )
    return row


def rows_for(students: list, teacher_steps: int, also: list[int]) -> list[tuple]:
    """(model, name, sampler, steps) of every row: the teacher first."""
    first = students[0].config["distilled"]
    teacher = load(teacher_dir(first["teacher"]))
    own = sorted({teacher_steps, first["teacher_steps"], *(s.info()["steps"] for s in students)})
    rows = [(teacher, "teacher", "ddim", n) for n in reversed(own)]
    for s in students:
        info, limit = s.info(), s.config["distilled"]["max_steps"]
        steps = {info["steps"], *(a for a in also if limit is None or a <= limit)}
        method = s.config["distilled"]["method"]
        rows += [(s, f"{method} student", info["sampler"], n) for n in sorted(steps)]
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("runs", nargs="+", help="distilled runs (or 'fashion-distilled'), one teacher")
    p.add_argument("--n", type=int, default=500, help="samples per row (default 500)")
    p.add_argument("--guidance", type=float, default=2.0, help="CFG scale (default 2)")
    p.add_argument("--teacher-steps", type=int, default=50, help="the teacher's reference steps")
    p.add_argument("--also-steps", type=int, nargs="*", default=[], help="more student steps")
    p.add_argument("--seed", type=int, default=1000, help="first seed (default 1000)")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    p.add_argument("--json", default=None, help="also write the rows to this file")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    students = [load(run) for run in args.runs]
    evaluator = PeriodicEval("fashion-mnist", "fashion-classifier", "fd,acc", (1, 28, 28), "cpu")
    results = []
    for model, name, sampler, steps in rows_for(students, args.teacher_steps, args.also_steps):
        spec = SampleSpec(n=args.n, sampler=sampler, steps=steps, guidance=args.guidance,
                          seed=args.seed, batch_size=100)  # fmt: skip
        results.append(score(evaluator, model, name, spec))
    reference = next(r["fd"] for r in results if r["steps"] == args.teacher_steps)
    for r in results:
        r["fd_ratio"] = r["fd"] / reference
        print(f"{r['model']:<28} {r['steps']:>3} steps: FD / teacher's {args.teacher_steps}-step "
              f"FD = {r['fd_ratio']:.2f}, accuracy {r['acc']:.3f}")  # fmt: skip
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)


if __name__ == "__main__":
    main()
