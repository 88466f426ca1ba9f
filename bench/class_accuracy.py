"""Class accuracy of guided samples: the fraction of generated images that the shipped
Fashion-MNIST classifier assigns to the class they were asked for.

    .venv/bin/python bench/class_accuracy.py [RUN] --per-class 100 --guidance 2 3 --steps 50
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from pixdiff.checkpoint import load
from pixdiff.eval import classify, load_classifier
from pixdiff.pipelines.generate import generate
from pixdiff.pipelines.steering import Steering
from pixdiff.sampling import Sampling
from pixdiff.shipped import shipped_run


def class_accuracy(
    model,
    classifier,
    *,
    per_class: int,
    guidance: float,
    sampler: str,
    steps: int,
    seed: int,
    device: str,
    batch_size: int,
) -> dict:
    """Generate per_class images of every class and score them with the classifier."""
    k = model.num_classes
    labels = torch.arange(k).repeat_interleave(per_class)
    start = time.time()
    x = generate(
        model, Steering(classes=labels, guidance=guidance), Sampling(sampler, steps), n=len(labels),
        seed=seed, device=device, batch_size=batch_size,
    )  # fmt: skip
    preds, _ = classify(classifier, x.clamp(-1, 1))
    per = [(preds[labels == c] == c).float().mean().item() for c in range(k)]
    return {
        "guidance": guidance,
        "sampler": sampler,
        "steps": steps,
        "n": len(labels),
        "accuracy": (preds == labels).float().mean().item(),
        "per_class": per,
        "seconds": round(time.time() - start, 1),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument(
        "run",
        nargs="?",
        default=str(shipped_run("fashion")),
        help="run directory (default: the shipped model)",
    )
    p.add_argument("--per-class", type=int, default=100, help="samples per class (default 100)")
    p.add_argument(
        "--guidance",
        type=float,
        nargs="+",
        default=[2.0, 3.0],
        help="guidance scales to evaluate (default 2 3)",
    )
    p.add_argument("--sampler", default="ddim", help="sampler (default ddim)")
    p.add_argument("--steps", type=int, default=50, help="sampler steps (default 50)")
    p.add_argument("--seed", type=int, default=1000, help="first seed (default 1000)")
    p.add_argument("--device", default="cpu", help="cpu | cuda (default cpu)")
    p.add_argument("--batch-size", type=int, default=250, help="sampler batch (default 250)")
    p.add_argument("--json", default=None, help="also write the results to this file")
    args = p.parse_args()
    model = load(args.run, device=args.device)
    classifier = load_classifier(device=args.device)
    results = []
    for w in args.guidance:
        r = class_accuracy(
            model,
            classifier,
            per_class=args.per_class,
            guidance=w,
            sampler=args.sampler,
            steps=args.steps,
            seed=args.seed,
            device=args.device,
            batch_size=args.batch_size,
        )
        results.append(r)
        print(
            f"guidance {w}: accuracy {r['accuracy']:.3f} over {r['n']} samples "
            f"({args.sampler}, {args.steps} steps, {r['seconds']} s); per class "
            + " ".join(f"{a:.2f}" for a in r["per_class"])
        )
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)


if __name__ == "__main__":
    main()
