"""What the shipped emoji text-to-image model does with seen, held-out and made-up prompts.

Seen: captions of the train split. Held-out: captions of the test split (every 10th emoji), never
trained on; most recombine words the model knows ("green apple" after "red apple" and "green
heart"). Made-up: combinations no emoji has (--invented).

Quantitative part: every sample, upsampled to 64x64 (bicubic), is matched to its nearest
emoji among all of them (train and held-out, 64x64) in the features of the emoji network
(``src/pixdiff/assets/emoji_classifier``). Top-1 / top-5 is the fraction of samples whose own
caption's emoji is the nearest / among the 5 nearest (chance: 1 / 1361 and 5 / 1361). A
held-out sample can only hit its emoji by composing it from what the words mean elsewhere.

Probe: one seen caption (--probe, default issue #5's "red apple") drawn --probe-n times and
scored the same way.

Writes results.json, results.md and grids into --out: ``seen.png``, ``held_out.png`` (each
prompt's ground truth, then its samples), ``invented.png`` (one row per prompt) and
``probe.png`` (the probe's ground truth, then its samples, in one row).

    .venv/bin/python bench/text_prompts.py --out docs/bench/text
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import torch

from pixdiff.checkpoint import load
from pixdiff.data import load_dataset, to_model_space
from pixdiff.eval.classifier import EMOJI_DIR
from pixdiff.eval.features import load_extractor
from pixdiff.images import make_grid, save_png
from pixdiff.low_res import downsample, upsample_bicubic
from pixdiff.pipelines.generate import generate
from pixdiff.pipelines.steering import Steering
from pixdiff.sampling import Sampling
from pixdiff.shipped import shipped_run

INVENTED = (
    "blue apple", "red cat face", "green heart with face", "purple rocket", "yellow ghost",
    "snowman with sunglasses", "black apple", "red snowman",
)  # fmt: skip
GRID_PROMPTS = 12  # prompts shown per grid


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    p.add_argument("--run", default=str(shipped_run("emoji")), help="text-to-image run")
    p.add_argument("--extractor", default=str(EMOJI_DIR), help="feature network folder")
    p.add_argument("--n-seen", type=int, default=136, help="seen captions (every k-th of train)")
    p.add_argument("--per-prompt", type=int, default=2, help="samples per prompt")
    p.add_argument("--invented", nargs="*", default=list(INVENTED), help="made-up prompts")
    p.add_argument("--probe", default="red apple", help="one seen caption drawn --probe-n times")
    p.add_argument("--probe-n", type=int, default=16, help="samples of the --probe caption")
    p.add_argument("--sampler", default="dpmpp-2m", help="sampler")
    p.add_argument("--steps", type=int, default=25, help="sampler steps")
    p.add_argument("--guidance", type=float, default=3.0, help="classifier-free guidance scale")
    p.add_argument("--seed", type=int, default=0, help="seed; sample i uses seed + i")
    p.add_argument("--batch-size", type=int, default=128, help="images per batch")
    p.add_argument("--out", default="out/bench-text", help="output folder")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    return p.parse_args(argv)


def retrieval(samples: torch.Tensor, targets: torch.Tensor, bank: torch.Tensor) -> dict:
    """Top-1 / top-5 rate at which each sample's nearest bank rows (Euclidean, in features)
    include its target row, and the median rank of the target (1 = nearest; chance is about
    half the bank), which still moves when the top-k rates sit near zero."""
    order = torch.cdist(samples, bank).argsort(dim=1)
    rank = (order == targets[:, None]).double().argmax(dim=1) + 1
    return {
        "top1": (rank == 1).double().mean().item(),
        "top5": (rank <= 5).double().mean().item(),
        "median_rank": rank.median().item(),
    }


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    model = load(args.run)
    if model.text_encoder is None:
        sys.exit(f"error: {args.run} is not a text-conditioned run")
    extractor = load_extractor(args.extractor)
    size = extractor.input_shape[-1]
    every = load_dataset("emoji", image_size=size, split="all")
    index = {c: i for i, c in enumerate(every.captions)}
    if args.probe not in index:
        sys.exit(f"error: --probe {args.probe!r} is not an emoji caption")
    train = load_dataset("emoji", image_size=size, split="train").captions
    step = max(1, len(train) // args.n_seen)
    k = args.per_prompt
    sets = {  # name -> (prompts, samples per prompt)
        "seen": (train[::step][: args.n_seen], k),
        "held_out": (load_dataset("emoji", image_size=size, split="test").captions, k),
        "probe": ([args.probe], args.probe_n),
    }
    bank = extractor.features(every.images)

    def draw(prompts: list[str], k: int) -> torch.Tensor:
        repeated = [p for p in prompts for _ in range(k)]
        steering = Steering(prompts=repeated, guidance=args.guidance)
        return generate(
            model, steering, Sampling(args.sampler, args.steps), n=len(repeated), seed=args.seed,
            batch_size=args.batch_size, progress=not args.no_progress,
        ).clamp(-1, 1)  # fmt: skip

    results = {}
    for name, (prompts, per) in sets.items():
        x = draw(prompts, per)
        up = upsample_bicubic(x, size)
        targets = torch.tensor([index[p] for p in prompts for _ in range(per)])
        results[name] = {
            "prompts": len(prompts),
            "per_prompt": per,
            **retrieval(extractor.features(up), targets, bank),
        }
        truth = downsample(to_model_space(every.images[targets[::per][:GRID_PROMPTS]]), x.shape[-1])
        rows = [torch.cat([t[None], x[i * per : (i + 1) * per]]) for i, t in enumerate(truth)]
        save_png(make_grid(torch.cat(rows), nrow=per + 1), out / f"{name}.png", scale=3)
        (out / f"{name}_prompts.txt").write_text("\n".join(prompts[:GRID_PROMPTS]) + "\n")
    invented = draw(args.invented, k)
    save_png(make_grid(invented, nrow=k), out / "invented.png", scale=3)

    wall = time.perf_counter() - start
    flags = sys.argv[1:] if argv is None else argv
    report = {
        "command": " ".join([".venv/bin/python bench/text_prompts.py", *flags]),
        "run": args.run, "sampler": args.sampler, "steps": args.steps,
        "guidance": args.guidance, "per_prompt": k, "bank": len(every),
        "retrieval": results, "invented": args.invented, "probe": args.probe,
        "probe_n": args.probe_n, "wall_s": round(wall, 1),
        "torch": torch.__version__, "cpu": platform.processor() or platform.machine(),
    }  # fmt: skip
    (out / "results.json").write_text(json.dumps(report, indent=2) + "\n")
    chance1, chance5 = 1 / len(every), 5 / len(every)
    md = ["| prompts | n | top-1 | top-5 | median rank |", "|---|---|---|---|---|"]
    for name, r in results.items():
        n = f"{r['prompts']} x {r['per_prompt']}"
        md.append(f"| {name} | {n} | {r['top1']:.3f} | {r['top5']:.3f} | {r['median_rank']:.0f} |")
    md.append(f"| chance | | {chance1:.4f} | {chance5:.4f} | {(len(every) + 1) / 2:.0f} |")
    (out / "results.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))
    print(f"wrote {out} ({wall:.0f} s)")


if __name__ == "__main__":
    main()
