"""Cascade benchmark on held-out emoji: super-resolution against bicubic upsampling, and noise
conditioning augmentation off against on when upscaling the base model's own samples.

Part 1, ground-truth low-res input. The held-out emoji (``split="test"``: every 10th emoji,
never trained on by either stage) are area-downsampled to the SR model's input size, as in
training, and upsampled back by bicubic interpolation and by each SR model. Scores against the
ground truth: PSNR and SSIM (paired, :mod:`pixdiff.eval.fidelity`), the mean paired feature
distance ||f(x) - f(gt)|| and the set-level Frechet distance, in the features of the emoji
network (``src/pixdiff/assets/emoji_classifier``, ``bench/train_classifier.py``).

Part 2, the ablation that matters (CDM, Ho et al. 2022, Sec. 4.3; Imagen, Saharia et al. 2022,
Sec. 2.4). The base model draws one 32x32 sample per caption (the held-out captions, then
every k-th train caption, --n-base in all); each SR model upscales those samples. A model
trained without augmentation sees base-model artefacts it never saw in training; one trained
with it reads its input as a noisy view of a clean image. A sample of an unseen caption has
no ground truth to pair with, so the scores are of the set against all 1,361 real emoji at
64x64: the Frechet distance, KID (unbiased, but with a wide spread at this sample size) and
improved precision / recall (Kynkaanniemi et al. 2019; precision is the fraction of samples
that land among real emoji).

Writes results.json, results.md and grids into --out: ``holdout.png`` (rows: low-res, bicubic,
each SR model, ground truth) and ``base_samples.png`` (rows: base sample, bicubic, SR with
augmentation off, on, ground truth).

    .venv/bin/python bench/cascade.py --base src/pixdiff/assets/emoji_unet \\
        --sr src/pixdiff/assets/emoji_sr runs/emoji-sr-noaug --out docs/bench/cascade
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from pixdiff.checkpoint import LoadedModel, load
from pixdiff.data import load_dataset, to_model_space
from pixdiff.eval.classifier import EMOJI_DIR
from pixdiff.eval.features import FeatureExtractor, load_extractor
from pixdiff.eval.fid import FeatureStats, frechet_distance, kid, precision_recall
from pixdiff.eval.fidelity import mean_finite, psnr, ssim
from pixdiff.images import make_grid, save_png
from pixdiff.low_res import downsample, upsample_bicubic
from pixdiff.pipelines.cascade import Stage, cascade
from pixdiff.pipelines.steering import Steering
from pixdiff.sampling import Sampling
from pixdiff.shipped import shipped_cascade

GRID_COLUMNS = 12


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    p.add_argument("--base", default=str(shipped_cascade()[0]), help="text-to-image base run")
    p.add_argument(
        "--sr",
        nargs="+",
        default=[str(shipped_cascade()[1])],
        help="super-resolution runs to compare (e.g. trained with and without augmentation)",
    )
    p.add_argument("--extractor", default=str(EMOJI_DIR), help="feature network folder")
    p.add_argument(
        "--aug-levels",
        type=float,
        nargs="+",
        default=None,
        help="augmentation times to sample each SR model at (default: each run's sr.aug_level; "
        "a model trained without augmentation always runs at 0)",
    )
    p.add_argument("--sampler", default="dpmpp-2m", help="sampler of both stages")
    p.add_argument("--steps", type=int, default=25, help="sampler steps of both stages")
    p.add_argument("--guidance", type=float, default=3.0, help="CFG scale of the base stage")
    p.add_argument("--n", type=int, default=0, help="held-out images of part 1 (0: all)")
    p.add_argument("--n-base", type=int, default=400, help="base samples of part 2")
    p.add_argument("--seed", type=int, default=0, help="seed; image i uses seed + i")
    p.add_argument("--batch-size", type=int, default=128, help="images per sampler batch")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: default)")
    p.add_argument("--out", default="out/bench-cascade", help="output folder")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    return p.parse_args(argv)


def fd(a: torch.Tensor, b: torch.Tensor) -> float:
    """Frechet distance between two feature sets (each needs more rows than columns)."""
    return frechet_distance(FeatureStats.from_features(a), FeatureStats.from_features(b))


def paired_scores(images: torch.Tensor, truth: torch.Tensor, extractor: FeatureExtractor) -> dict:
    """PSNR, SSIM, mean paired feature distance and FD of images (clipped) against truth."""
    images = images.clamp(-1, 1)
    f_img, f_gt = extractor.features(images), extractor.features(truth)
    out = {
        "psnr": mean_finite(psnr(images, truth)),
        "ssim": ssim(images, truth).mean().item(),
        "feature_l2": (f_img - f_gt).norm(dim=1).mean().item(),
    }
    if len(images) > f_img.shape[1]:
        out["fd"] = fd(f_img, f_gt)
    return out


def set_scores(images: torch.Tensor, real: torch.Tensor, extractor: FeatureExtractor) -> dict:
    """FD, KID (x 1e3, with its spread over real subsets) and precision / recall of images
    (clipped) against the real features. KID is unbiased, so unlike FD its estimate does not
    drift with the number of samples (Binkowski et al. 2018). Its cubic kernel is not scale
    invariant, and this network's features are far larger than Inception's, so both sets are
    divided by one constant that gives the real features unit mean square per dimension."""
    feats = extractor.features(images.clamp(-1, 1))
    precision, recall = precision_recall(real, feats)
    scale = real.double().pow(2).mean().sqrt()
    kid_mean, kid_std = kid(feats.double() / scale, real.double() / scale)
    return {"fd": fd(feats, real), "kid": 1e3 * kid_mean, "kid_std": 1e3 * kid_std,
            "precision": precision, "recall": recall}  # fmt: skip


def upscale(model: LoadedModel, low_res, prompts, level, args) -> torch.Tensor:
    """One SR stage from ``low_res`` at augmentation time ``level``."""
    stage = Stage(model, Sampling(args.sampler, args.steps), guidance=1.0, aug_level=level)
    return cascade(
        [stage], Steering(prompts=prompts if model.text_encoder else None), low_res=low_res,
        seed=args.seed, batch_size=args.batch_size, progress=not args.no_progress,
    )[-1]  # fmt: skip


def sr_variants(models: list[LoadedModel], args) -> list[tuple[str, LoadedModel, float]]:
    """(label, model, aug level) for every SR model and level to run."""
    out = []
    for m in models:
        aug_max = m.sr.aug_max
        # a model trained without augmentation never saw a noisy input: level 0 only
        levels = [0.0] if aug_max == 0 else args.aug_levels or [m.sr.aug_level]
        for level in levels:
            out.append((f"SR {Path(m.path).name} (train aug_max {aug_max:g}, level {level:g})",
                        m, level))  # fmt: skip
    return out


def compare(low_res, truth, prompts, variants, grid_path: Path, args, score) -> dict:
    """``score`` of bicubic and of every SR variant upsampling ``low_res``, and their grid
    (rows: nearest-neighbour low-res, bicubic, each variant, ground truth)."""
    size = truth.shape[-1]
    bicubic = upsample_bicubic(low_res, size)
    results, rows = {"bicubic": score(bicubic)}, []
    for label, m, level in variants:
        rows.append(upscale(m, low_res, prompts, level, args))
        results[label] = score(rows[-1])
    nearest = F.interpolate(low_res, size=(size, size), mode="nearest")
    grid = rows_grid([nearest, bicubic, *rows, truth], GRID_COLUMNS)
    save_png(grid, grid_path, scale=2)
    return results


def rows_grid(rows: list[torch.Tensor], columns: int) -> torch.Tensor:
    """One grid row per tensor (its first ``columns`` images)."""
    return make_grid(torch.cat([r[:columns].clamp(-1, 1) for r in rows]), nrow=columns)


def table(results: dict[str, dict], columns: dict[str, str]) -> str:
    """Markdown table: one row per method, ``columns`` maps result keys to headers."""
    lines = ["| method | " + " | ".join(columns.values()) + " |"]
    lines.append("|---" * (len(columns) + 1) + "|")
    for label, r in results.items():
        cells = [f"{r[k]:.4g}" if k in r else "-" for k in columns]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    base = load(args.base)
    srs = [load(p) for p in args.sr]
    for m in srs:
        if m.sr is None:
            sys.exit(f"error: {m.path} is not a super-resolution run (trained with --sr-from)")
        if m.sr.low_res_size != base.image_shape[-1]:
            sys.exit(
                f"error: {m.path} upsamples {m.sr.low_res_size}px images, but the base model "
                f"{base.path} makes {base.image_shape[-1]}px ones"
            )
    size, low = srs[0].image_shape[-1], srs[0].sr.low_res_size
    extractor = load_extractor(args.extractor)
    held_out = load_dataset("emoji", image_size=size, split="test")
    n = args.n or len(held_out)
    truth, prompts = to_model_space(held_out.images[:n]), held_out.captions[:n]
    variants = sr_variants(srs, args)
    every = load_dataset("emoji", image_size=size, split="all")

    # Part 1: ground-truth low-res input, scored against each image's ground truth
    gt_results = compare(
        downsample(truth, low), truth, prompts, variants, out / "holdout.png", args,
        lambda x: paired_scores(x, truth, extractor),
    )  # fmt: skip

    # Part 2: the base model's own samples, scored against all real emoji
    train = load_dataset("emoji", image_size=size, split="train").captions
    extra = max(0, args.n_base - len(held_out))
    base_prompts = held_out.captions + train[:: max(1, len(train) // max(extra, 1))][:extra]
    base_truth = to_model_space(every.images[[every.captions.index(c) for c in base_prompts]])
    real = extractor.features(every.images)
    base_stage = Stage(base, Sampling(args.sampler, args.steps), guidance=args.guidance)
    samples = cascade(
        [base_stage], Steering(prompts=base_prompts), n=len(base_prompts), seed=args.seed,
        batch_size=args.batch_size, progress=not args.no_progress,
    )[-1].clamp(-1, 1)  # fmt: skip
    base_results = compare(
        samples, base_truth, base_prompts, variants, out / "base_samples.png", args,
        lambda x: set_scores(x, real, extractor),
    )  # fmt: skip

    wall = time.perf_counter() - start
    flags = sys.argv[1:] if argv is None else argv
    report = {
        "command": " ".join([".venv/bin/python bench/cascade.py", *flags]),
        "n": n, "n_base": len(base_prompts), "size": f"{low} -> {size}", "sampler": args.sampler,
        "steps": args.steps,
        "base_guidance": args.guidance, "extractor": extractor.name,
        "ground_truth_low_res": gt_results, "base_model_samples": base_results,
        "grid_rows": {"holdout.png": ["nearest low-res", "bicubic", *(v[0] for v in variants),
                                      "ground truth"],
                      "base_samples.png": ["base sample (nearest)", "bicubic",
                                           *(v[0] for v in variants), "ground truth"]},
        "wall_s": round(wall, 1), "torch": torch.__version__,
        "cpu": platform.processor() or platform.machine(), "threads": torch.get_num_threads(),
    }  # fmt: skip
    (out / "results.json").write_text(json.dumps(report, indent=2) + "\n")
    paired = {"psnr": "PSNR (dB)", "ssim": "SSIM", "feature_l2": "feature L2", "fd": "FD"}
    sets = {"fd": "FD", "kid": "KID x 1e3", "kid_std": "KID spread", "precision": "precision",
            "recall": "recall"}  # fmt: skip
    md = (
        f"Held-out emoji ({n}), ground-truth {low}px input:\n\n{table(gt_results, paired)}\n\n"
        f"The base model's samples ({len(base_prompts)} captions, {len(held_out)} of them "
        f"held out; w = {args.guidance}) against all real emoji:\n\n"
        f"{table(base_results, sets)}\n"
    )
    (out / "results.md").write_text(md)
    print(md)
    print(f"wrote {out}/results.json, results.md, holdout.png, base_samples.png ({wall:.0f} s)")


if __name__ == "__main__":
    main()
