"""Which anti-burn guidance options help the shipped models at a high guidance scale.

For the shipped Fashion-MNIST model (classes cycling 0-9) or the shipped emoji model (train
captions, one sample each) it draws --n samples at guidance --guidance, the same seeds for every
setting: plain, static clipping, CFG-rescale (Lin et al. 2023), and dynamic thresholding
(Saharia et al. 2022) at each of --percentiles, alone and after CFG-rescale. It reports:

- background: how far, on average, the 30% of each image's pixels nearest the data's background
  colour (black for Fashion-MNIST, white for emoji, whose transparency is composited on white)
  are from that colour, in 0-255 grey levels (mean over the colour channels); the same measure
  on real images is the target. A greyed background raises it.
- FD: Frechet distance in the shipped classifier's features (Fashion-MNIST: against the 10,000
  test images; emoji: the samples upsampled bicubically to 64x64, against the 1,225 train-split
  emoji; only from n = 129, the features' width + 1). At small n it is biased upward: compare
  rows, not with other tables.
- acc: class accuracy of the Fashion-MNIST classifier; for emoji, top-1 / top-5: how often the
  caption's own emoji is the nearest / among the 5 nearest of all 1,361 emoji in features.
- saturated: the fraction of pixels at or beyond +-1 in the sampler's raw output.

Results are appended to --out/results.json setting by setting (a rerun skips those done);
results.md and one grid per setting are written beside it.

    nice -n 10 .venv/bin/python bench/guidance_defaults.py --model fashion --n 200 --steps 25
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from text_prompts import retrieval  # bench/text_prompts.py

from guidance import class_rows, saturation  # bench/guidance.py
from pixdiff.checkpoint import load
from pixdiff.data import load_dataset, to_model_space
from pixdiff.eval.classifier import EMOJI_DIR
from pixdiff.eval.features import load_extractor
from pixdiff.eval.fid import FeatureStats, frechet_distance
from pixdiff.eval.reference import reference_stats
from pixdiff.eval.report import balanced_labels, score_images
from pixdiff.files import atomic_write
from pixdiff.guidance import GuidanceOptions
from pixdiff.images import make_grid, save_png
from pixdiff.low_res import upsample_bicubic
from pixdiff.pipelines.generate import generate
from pixdiff.pipelines.steering import Steering
from pixdiff.sampling import Sampling
from pixdiff.shipped import shipped_run

BACKGROUND_SHARE = 0.3  # of each image's pixels, those nearest the background colour


def background_level(x: torch.Tensor, colour: float) -> float:
    """Mean distance (0-255 grey levels) of the BACKGROUND_SHARE of each image's pixels nearest
    ``colour`` (-1 black, 1 white) from it, averaged over images; x: (N, C, H, W) in [-1, 1]."""
    grey = x.double().mean(1).flatten(1)  # (N, H * W), the channels' mean
    distance = (grey - colour).abs() * 127.5
    k = max(1, int(BACKGROUND_SHARE * distance.shape[1]))
    return distance.sort(dim=1).values[:, :k].mean().item()


def settings(w: float, rescale: float, percentiles: list[float]) -> list[tuple[str, float, dict]]:
    """(name, guidance, GuidanceOptions fields) of every setting measured."""
    rows = [("w=1", 1.0, {}), (f"w={w:g}", w, {}), (f"w={w:g} static", w, {"threshold": "static"})]
    rows.append((f"w={w:g} rescale {rescale:g}", w, {"rescale": rescale}))
    for p in percentiles:
        dynamic = {"threshold": "dynamic", "percentile": p}
        rows.append((f"w={w:g} dynamic p={p:g}", w, dynamic))
        rows.append(
            (f"w={w:g} rescale {rescale:g} + dynamic p={p:g}", w, {"rescale": rescale, **dynamic})
        )
    return rows


@dataclass
class Task:
    """One shipped model with what it is steered by and how its samples are scored."""

    name: str
    model: object
    classes: torch.Tensor | None
    prompts: list[str] | None
    colour: float  # the background colour in model space
    real: torch.Tensor  # real images in [-1, 1] at the model's size, for the target background

    def score(self, x: torch.Tensor) -> dict:
        raise NotImplementedError

    def grid(self, x: torch.Tensor) -> torch.Tensor:
        if self.classes is not None:
            return make_grid(class_rows(x, self.classes), nrow=8)
        return make_grid(x[:32], nrow=8)


class FashionTask(Task):
    def __init__(self, n: int):
        model = load(shipped_run("fashion"))
        self.extractor = load_extractor("fashion-classifier")
        self.reference = reference_stats("fashion-mnist", "test", self.extractor)
        real = to_model_space(load_dataset("fashion-mnist", image_size=28, split="test").images[:n])
        super().__init__("fashion", model, balanced_labels(n, 10), None, -1.0, real)

    def score(self, x: torch.Tensor) -> dict:
        return score_images(x, self.classes, self.reference, self.extractor, ["fd", "acc"])


class EmojiTask(Task):
    def __init__(self, n: int):
        model = load(shipped_run("emoji"))
        self.extractor = load_extractor(str(EMOJI_DIR))
        size = self.extractor.input_shape[-1]
        self.reference = reference_stats("emoji", "train", self.extractor)
        every = load_dataset("emoji", image_size=size, split="all")
        self.bank = self.extractor.features(every.images)
        train = load_dataset("emoji", image_size=32, split="train")
        pick = torch.linspace(0, len(train) - 1, n).round().long()  # n captions spread evenly
        prompts = [train.captions[i] for i in pick]
        index = {c: i for i, c in enumerate(every.captions)}
        self.targets = torch.tensor([index[p] for p in prompts])
        real = to_model_space(train.images[pick])
        super().__init__("emoji", model, None, prompts, 1.0, real)

    def score(self, x: torch.Tensor) -> dict:
        feats = self.extractor.features(upsample_bicubic(x, self.extractor.input_shape[-1]))
        found = retrieval(feats, self.targets, self.bank)
        out = {"n": float(len(x)), "top1": found["top1"], "top5": found["top5"]}
        if len(x) > feats.shape[1]:  # FD needs a full-rank covariance: more samples than dims
            out["fd"] = frechet_distance(FeatureStats.from_features(feats), self.reference.stats)
        return out


def measure(task: Task, name: str, w: float, options: dict, args) -> dict:
    """Sample one setting, score it, save its grid."""
    start = time.perf_counter()
    steering = Steering(
        classes=task.classes, prompts=task.prompts, guidance=w, options=GuidanceOptions(**options)
    )
    raw = generate(
        task.model, steering, Sampling(args.sampler, args.steps), n=args.n, seed=args.seed,
        batch_size=args.batch_size, progress=False,
    )  # fmt: skip
    x = raw.clamp(-1, 1)
    row = {"setting": name, "w": w, **options, **task.score(x)}
    row["background"] = background_level(x, task.colour)
    row["saturated"] = saturation(raw)
    row["seconds"] = round(time.perf_counter() - start, 1)
    slug = name.replace("=", "").replace(" + ", "_").replace(" ", "_").replace(".", "p")
    save_png(task.grid(x), Path(args.out) / task.name / f"grid_{slug}.png", scale=2)
    return row


def table(task: Task, rows: list[dict], real_background: float) -> str:
    """Markdown: one line per setting, the real images' background first."""
    quality = ["acc"] if task.classes is not None else ["top1", "top5"]
    head = ["setting", "background (0-255)", "FD", *quality, "saturated"]
    lines = ["| " + " | ".join(head) + " |", "|---" * len(head) + "|"]
    lines.append(f"| real images | {real_background:.1f} | | " + "| " * len(quality) + "|")
    for r in rows:
        cells = [r["setting"], f"{r['background']:.1f}", f"{r['fd']:.2f}" if "fd" in r else "-"]
        cells += [f"{r[q]:.3f}" for q in quality] + [f"{r['saturated']:.3f}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    p.add_argument("--model", choices=("fashion", "emoji"), default="fashion", help="shipped model")
    p.add_argument("--n", type=int, default=200, help="samples per setting")
    p.add_argument("--guidance", type=float, default=4.0, help="classifier-free guidance w")
    p.add_argument("--rescale", type=float, default=0.7, help="CFG-rescale phi")
    p.add_argument("--percentiles", default="0.9,0.95,0.99,0.995", help="dynamic threshold p")
    p.add_argument("--only", default=None, help="comma-separated setting names to run, in order")
    p.add_argument("--sampler", default="ddim", help="sampler")
    p.add_argument("--steps", type=int, default=50, help="sampler steps")
    p.add_argument("--seed", type=int, default=0, help="seed; sample i uses seed + i")
    p.add_argument("--batch-size", type=int, default=100, help="images per batch")
    p.add_argument("--out", default="out/guidance-defaults", help="output folder")
    args = p.parse_args()
    task = FashionTask(args.n) if args.model == "fashion" else EmojiTask(args.n)
    folder = Path(args.out) / task.name
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "results.json"
    done = json.loads(path.read_text()) if path.exists() else {"rows": []}
    real = background_level(task.real, task.colour)
    percentiles = [float(s) for s in args.percentiles.split(",")]
    todo = settings(args.guidance, args.rescale, percentiles)
    if args.only is not None:  # those, in the order given
        by_name = {name: (name, w, options) for name, w, options in todo}
        todo = [by_name[name] for name in args.only.split(",")]
    for name, w, options in todo:
        if any(r["setting"] == name for r in done["rows"]):
            continue
        row = measure(task, name, w, options, args)
        done["rows"].append(row)
        meta = {"model": task.name, "n": args.n, "sampler": args.sampler, "steps": args.steps,
                "seed": args.seed, "real_background": real}  # fmt: skip
        atomic_write(path, (json.dumps({**meta, "rows": done["rows"]}, indent=1) + "\n").encode())
        print(" ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                       for k, v in row.items()), flush=True)  # fmt: skip
    md = table(task, done["rows"], real)
    (folder / "results.md").write_text(md + "\n")
    print(md)


if __name__ == "__main__":
    main()
