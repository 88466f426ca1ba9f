"""The central ablation of JiT (Li & He 2025, "Back to Basics: Let Denoising Generative Models
Denoise") at this project's scale: as the patch size of a pixel Transformer grows, does
x0-prediction hold its quality while eps- and v-prediction degrade?

For each patch size (jit-tiny-2/4/8 at 32x32: 256, 64 and 16 tokens) and each prediction type,
an unconditional model trains on Fashion-MNIST resized to 32x32 for the same image budget with
the same seed, on the straight (flow) path with JiT's recipe: a flow-velocity loss for every
prediction type (``diffusion.loss_space=flow``) and logit-normal times (JiT's P_mean = -0.8,
P_std = 0.8 in their reversed time). The types: x0; eps; v = alpha eps - sigma x0 (Salimans &
Ho 2022); flow = the velocity eps - x0, which is what JiT calls v-prediction. Each EMA model
then draws the same noise through the same Euler grid, from t = --t-start (eps-prediction
cannot give x0 at pure noise, where alpha = 0) to 0, and is scored by the Frechet distance of
the shipped Fashion-MNIST classifier's features against the test split (samples and real
images both resized 32 -> 28 the same way). FLOPs per image are counted with
:func:`pixdiff.nets.flops.dit_flops`. Every cell is a pure function of its arguments (fixed
seeds, one thread), so cells from separate invocations combine into one table.

    nice -n 10 .venv/bin/python bench/patch_ablation.py --images 4096 --n 500 --threads 1
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from pixdiff.checkpoint import load
from pixdiff.config import TrainConfig, apply_overrides
from pixdiff.data import load_dataset
from pixdiff.eval import FeatureStats, frechet_distance, load_extractor
from pixdiff.nets import preset
from pixdiff.nets.flops import dit_flops
from pixdiff.sampling import Sampling
from pixdiff.training.trainer import train

EVAL_SIZE = 28  # the Fashion-MNIST classifier's input


def run_config(patch: int, prediction: str, args: argparse.Namespace) -> TrainConfig:
    """The training config of one cell: JiT's recipe with the given patch and prediction."""
    steps = max(1, args.images // args.batch_size)
    return apply_overrides(TrainConfig(), [
        "data.name=fashion-mnist", "data.image_size=32", "data.conditional=false",
        f"model.preset=jit-tiny-{patch}",
        'diffusion.schedule={"kind": "flow"}', f"diffusion.prediction={prediction}",
        "diffusion.loss_space=flow", "diffusion.time_sampling=logit-normal",
        "diffusion.p_mean=0.8", "diffusion.p_std=0.8",
        f"optim.lr={args.lr}", f"optim.batch_size={args.batch_size}",
        f"optim.warmup_steps={min(50, steps // 4)}",
        f"run.steps={steps}", f"run.seed={args.seed}", f"run.threads={args.threads}",
        "run.sample_every=0", "run.checkpoint_every=0", "run.log_every=1000000",
    ])  # fmt: skip


def to_eval_size(images: torch.Tensor) -> torch.Tensor:
    """(N, 1, 32, 32) in [-1, 1] -> (N, 1, 28, 28), antialiased bicubic (as the data loader)."""
    small = F.interpolate(images, size=(EVAL_SIZE, EVAL_SIZE), mode="bicubic", antialias=True)
    return small.clamp(-1, 1)


def sample_run(
    run: Path, noise: torch.Tensor, times: tuple[float, ...], sampler: str
) -> torch.Tensor:
    """Samples of a run's EMA model from ``noise`` (unit variance, scaled to sigma(t_start))
    over the grid ``times``, in batches of 250."""
    model = load(run)
    d = model.denoiser
    sampling = Sampling(sampler, len(times) - 1, times=times)
    scale = float(d.schedule.sigma(torch.tensor(times[0], dtype=torch.float64)))
    with torch.no_grad():
        chunks = [sampling(d, z * scale, sampling.grid(d.schedule)) for z in noise.split(250)]
    return torch.cat(chunks).clamp(-1, 1)


def real_stats(extractor, split: str, n: int | None) -> FeatureStats:
    """Feature statistics of n (None: all) Fashion-MNIST images of ``split``, loaded at 32 and
    resized to 28 as the samples are."""
    real = load_dataset("fashion-mnist", image_size=32, split=split).images
    real = real[:n] if n else real
    feats, _ = extractor.embed(to_eval_size(real.float() / 127.5 - 1))
    return FeatureStats.from_features(feats)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--patches", type=int, nargs="+", default=[2, 4, 8])
    p.add_argument(
        "--predictions",
        nargs="+",
        default=["x0", "eps", "v", "flow"],
        choices=["x0", "eps", "v", "flow"],
        help="v: alpha eps - sigma x0 (Salimans & Ho); flow: the velocity eps - x0 (JiT's v)",
    )
    p.add_argument("--images", type=int, default=6144, help="training images per run")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--n", type=int, default=500, help="samples scored per run")
    p.add_argument("--steps", type=int, default=10, help="Euler steps (= NFE)")
    p.add_argument("--t-start", type=float, default=0.95, help="first time of the grid")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", default=None, help="folder for the runs (default: a temp folder)")
    p.add_argument("--json", default=None, help="also write the results to this file")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    root = Path(args.out or tempfile.mkdtemp(prefix="patch-ablation-"))
    extractor = load_extractor("fashion-classifier")
    ref = real_stats(extractor, "test", None)
    floor = frechet_distance(real_stats(extractor, "train", args.n), ref)  # same n: same bias
    print(json.dumps({"floor_fd_real_train_images": round(floor, 3), "n": args.n}), flush=True)
    noise = torch.randn(args.n, 1, 32, 32, generator=torch.Generator().manual_seed(1234))
    times = tuple(torch.linspace(args.t_start, 0, args.steps + 1).tolist())
    results = []
    for patch in args.patches:
        flops = dit_flops(preset(f"jit-tiny-{patch}", in_channels=1))["total"]
        for prediction in args.predictions:
            run = root / f"p{patch}-{prediction}"
            start = time.time()
            train(run_config(patch, prediction, args), run, overwrite=True, progress=False)
            train_s = time.time() - start
            start = time.time()
            images = sample_run(run, noise, times, "euler")
            feats, _ = extractor.embed(to_eval_size(images))
            fd = frechet_distance(FeatureStats.from_features(feats), ref)
            row = {"patch": patch, "prediction": prediction, "fd": round(fd, 3),
                   "mflops_per_image": round(flops / 1e6, 2), "train_s": round(train_s, 1),
                   "sample_s": round(time.time() - start, 1)}  # fmt: skip
            results.append(row)
            print(json.dumps(row), flush=True)
    kinds = args.predictions
    print(
        "\n| patch | tokens | MFLOPs / image (fwd) | " + " | ".join(f"{k} FD" for k in kinds) + " |"
    )
    print("|---|---|---|" + "---|" * len(kinds))
    for patch in args.patches:
        cells = {r["prediction"]: r for r in results if r["patch"] == patch}
        fds = " | ".join(f"{cells[k]['fd']:.2f}" for k in kinds)
        mflops = cells[kinds[0]]["mflops_per_image"]
        print(f"| {patch} | {(32 // patch) ** 2} | {mflops:.1f} | {fds} |")
    print(f"\nfloor: {args.n} real training images score FD {floor:.2f}")
    if args.json:
        summary = {"args": vars(args), "floor_fd": floor, "results": results}
        Path(args.json).write_text(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
