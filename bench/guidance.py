"""Classifier-free guidance sweep on the shipped Fashion-MNIST model: quality, class accuracy
and over-saturation, with and without dynamic thresholding.

For every guidance scale w it draws --n class-balanced samples (the same seeds for every w) and
reports the Frechet distance to the test set (features of the shipped classifier), the class
accuracy, and the fraction of saturated pixels (|x| >= 1 in the sampler's raw output, before
any clipping). Extra rows: w = 8 with dynamic thresholding (Saharia et al. 2022), with static
clipping and with CFG-rescale (Lin et al. 2023). Writes results.json, results.md and one grid
per setting (one row per class) into --out.

    .venv/bin/python bench/guidance.py --n 500 --out out/bench-guidance
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from pixdiff.checkpoint import load
from pixdiff.eval.features import load_extractor
from pixdiff.eval.reference import reference_stats
from pixdiff.eval.report import SampleSpec, draw_samples, score_images
from pixdiff.guidance import GuidanceOptions
from pixdiff.images import make_grid, save_png
from pixdiff.shipped import shipped_run

SCALES = (0.0, 1.0, 1.5, 2.0, 3.0, 5.0, 8.0)
# (label, w, options) beyond the plain sweep
VARIANTS = (
    ("w=8 dynamic p=0.995", 8.0, GuidanceOptions(threshold="dynamic", percentile=0.995)),
    ("w=8 dynamic p=0.9", 8.0, GuidanceOptions(threshold="dynamic", percentile=0.9)),
    ("w=8 static", 8.0, GuidanceOptions(threshold="static")),
    ("w=8 rescale 0.7", 8.0, GuidanceOptions(rescale=0.7)),
)


def saturation(x: torch.Tensor) -> float:
    """Fraction of pixels at or beyond +-1 (in [-1, 1] model units)."""
    return (x.abs() >= 1.0).double().mean().item()


def class_rows(x: torch.Tensor, labels: torch.Tensor, per_row: int = 8) -> torch.Tensor:
    """The first per_row samples of every class, one row per class."""
    k = int(labels.max()) + 1
    return torch.cat([x[labels == c][:per_row] for c in range(k)])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n", type=int, default=500, help="samples per setting")
    p.add_argument("--sampler", default="ddim", help="sampler")
    p.add_argument("--steps", type=int, default=50, help="sampler steps")
    p.add_argument("--seed", type=int, default=0, help="seed; sample i uses seed + i")
    p.add_argument("--batch-size", type=int, default=250, help="images per batch")
    p.add_argument("--out", default="out/bench-guidance", help="output folder")
    args = p.parse_args()
    model = load(shipped_run("fashion"))
    extractor = load_extractor("fashion-classifier")
    reference = reference_stats("fashion-mnist", "test", extractor)
    out = Path(args.out)
    settings = [(f"w={w:g}", w, None) for w in SCALES] + list(VARIANTS)
    rows = []
    print(f"{'setting':<22}{'FD':>9}{'acc':>7}{'sat':>8}{'s':>7}", flush=True)
    for name, w, options in settings:
        start = time.perf_counter()
        spec = SampleSpec(
            n=args.n,
            sampler=args.sampler,
            steps=args.steps,
            guidance=w,
            seed=args.seed,
            batch_size=args.batch_size,
            options=options,
        )
        raw, labels = draw_samples(model, spec, clip=False)
        x = raw.clamp(-1, 1)
        scores = score_images(x, labels, reference, extractor, ["fd", "acc"], seed=args.seed)
        row = {"setting": name, "w": w, **scores, "saturated": saturation(raw)}
        row["seconds"] = round(time.perf_counter() - start, 1)
        rows.append(row)
        slug = name.replace("=", "").replace(" ", "_").replace(".", "p")
        save_png(make_grid(class_rows(x, labels), nrow=8), out / f"grid_{slug}.png", scale=2)
        print(
            f"{name:<22}{row['fd']:>9.2f}{row['acc']:>7.3f}{row['saturated']:>8.3f}"
            f"{row['seconds']:>7.0f}",
            flush=True,
        )
    meta = {"n": args.n, "sampler": args.sampler, "steps": args.steps, "seed": args.seed}
    (out / "results.json").write_text(json.dumps({**meta, "rows": rows}, indent=2) + "\n")
    lines = ["| setting | FD | class accuracy | saturated pixels |", "|---|---|---|---|"]
    lines += [
        f"| {r['setting']} | {r['fd']:.2f} | {r['acc']:.3f} | {r['saturated']:.3f} |" for r in rows
    ]
    (out / "results.md").write_text("\n".join(lines) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
