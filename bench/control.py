"""Spatial control benchmark (issue #18): do samples follow their maps and their prompts, what
does control cost in image quality, the ControlNet adapter against concatenation, and the two
guidance scales of multi-modal guidance.

Part 1, following the map. Every held-out image i (``--split``, default the emoji's test split,
never trained on) gives a map (of each run's own kind) and a prompt (its caption, or its class);
each controlled run draws one sample from them, the unconditioned --base one from the prompt
alone. The sample's agreement with the map: edge F1 at 1 px for edges and sketch maps (the
sample's Canny edges against the source image's, :mod:`pixdiff.eval.control`), mask IoU for a
silhouette, layout L1 for a colour layout. The base scores chance on the same measure.

Part 2, image quality: the Frechet distance of each run's samples against every real image of
the dataset, in the features of --extractor (default the emoji network), and its ratio to the
base's FD. FD needs more samples than features (129 for the emoji network's 128).

Part 3, adapter against concatenation: part 1's agreement side by side, with the training
images each run used (steps x batch, from its config) as a share of the base's.

Part 4, two guidance scales (Brooks et al. 2023, Eq. 3): for each map scale s_I in --map-scales
and text scale s_T in --text-scales, a run that knows the null map draws --grid-n samples from
the map of image i with the prompt of image i + 1, so that the two conditions disagree: the
agreement with the map and the top-5 retrieval of the prompt's image (its own caption or class
among the 5 nearest real images in the extractor's features). Raising one scale should raise
its own measure. ``<run>_scales.png``: one map and one prompt swept (rows s_I, columns s_T),
after the map and the prompt's image.

Writes results.json, results.md and the grids into --out.

    .venv/bin/python bench/control.py --base src/pixdiff/assets/emoji_unet \\
        --concat runs/emoji-edges --adapter runs/emoji-edges-adapter runs/emoji-layout-adapter \\
        --out docs/bench/control
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import torch

from pixdiff.adapters import load_run
from pixdiff.checkpoint import CONFIG, LoadedModel, read_json
from pixdiff.data import ControlConfig, from_model_space, load_dataset, to_model_space
from pixdiff.eval.classifier import EMOJI_DIR
from pixdiff.eval.control import agreement, retrieval
from pixdiff.eval.features import FeatureExtractor, load_extractor
from pixdiff.eval.fid import FeatureStats, frechet_distance
from pixdiff.images import make_grid, save_png
from pixdiff.low_res import downsample, upsample_bicubic
from pixdiff.pipelines.control import control_spec
from pixdiff.pipelines.generate import generate
from pixdiff.pipelines.steering import Steering
from pixdiff.sampling import Sampling
from pixdiff.shipped import shipped_run


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    p.add_argument("--base", default=str(shipped_run("emoji")), help="the unconditioned base run")
    p.add_argument("--concat", nargs="*", default=[], help="runs trained with --control")
    p.add_argument("--adapter", nargs="*", default=[], help="adapter runs (train-control)")
    p.add_argument("--extractor", default=str(EMOJI_DIR), help="feature network folder")
    p.add_argument("--split", default="test", help="the images whose maps and prompts are used")
    p.add_argument("--n", type=int, default=0, help="images of parts 1-3 (0: all of the split)")
    p.add_argument("--grid-n", type=int, default=64, help="map/prompt pairs per scale cell")
    p.add_argument("--map-scales", type=float, nargs="+", default=[1.0, 2.0, 4.0], help="s_I")
    p.add_argument("--text-scales", type=float, nargs="+", default=[1.0, 3.0, 5.0], help="s_T")
    p.add_argument("--guidance", type=float, default=3.0, help="text/class scale of parts 1-3")
    p.add_argument("--sampler", default="dpmpp-2m", help="sampler")
    p.add_argument("--steps", type=int, default=25, help="sampler steps")
    p.add_argument("--seed", type=int, default=0, help="seed; sample i uses seed + i")
    p.add_argument("--batch-size", type=int, default=128, help="images per batch")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: default)")
    p.add_argument("--out", default="out/bench-control", help="output folder")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    return p.parse_args(argv)


class Bench:
    """The data, the extractor's real features and the sampling settings every part shares."""

    def __init__(self, base: LoadedModel, args: argparse.Namespace):
        self.args, self.base = args, base
        self.data_cfg = base.config["train"]["data"]
        self.size = base.image_shape[-1]
        self.extractor = load_extractor(args.extractor)
        every = self.load("all")
        self.bank = self.features(to_model_space(every.images))
        self.bank_keys = keys_of(base, every)

    def load(self, split: str, control: ControlConfig | None = None):
        d = self.data_cfg
        return load_dataset(
            d["name"], image_size=self.size, channels=d["channels"], split=split, control=control
        )

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Features of model-space images resized (bicubic or area) to the extractor's input."""
        return self.extractor.features(fit(x.clamp(-1, 1), self.extractor))

    def draw(self, model, n: int, **steering) -> torch.Tensor:
        a = self.args
        return generate(
            model, Steering(**steering), Sampling(a.sampler, a.steps), n=n, seed=a.seed,
            batch_size=a.batch_size, progress=not a.no_progress,
        ).clamp(-1, 1)  # fmt: skip

    def fd(self, samples: torch.Tensor) -> float | None:
        feats = self.features(samples)
        if len(feats) <= feats.shape[1]:
            return None  # too few samples for a full-rank covariance
        real = FeatureStats.from_features(self.bank)
        return frechet_distance(FeatureStats.from_features(feats), real)


def fit(x: torch.Tensor, extractor: FeatureExtractor) -> torch.Tensor:
    c, h, _ = extractor.input_shape
    if x.shape[1] != c:
        x = x.expand(-1, c, -1, -1) if x.shape[1] == 1 else x.mean(1, keepdim=True)
    if x.shape[-1] < h:
        return upsample_bicubic(x, h)
    return downsample(x, h) if x.shape[-1] > h else x


def keys_of(model: LoadedModel, data) -> list:
    """What a sample's prompt is: the captions of a text model, the labels of a class one."""
    if model.text_encoder is not None:
        return list(data.captions)
    return data.labels.tolist() if data.labels is not None else [0] * len(data)


def steer(model: LoadedModel, data, rows: list[int], guidance: float) -> dict:
    """The prompts or classes of ``rows`` of ``data``, and the scale."""
    if model.text_encoder is not None:
        return {"prompts": [data.captions[i] for i in rows], "guidance": guidance}
    if model.num_classes:
        return {"classes": data.labels[rows], "guidance": guidance}
    return {}


def training_images(model: LoadedModel) -> int:
    """Images a run trained on: its steps times its batch (an adapter's own, not its base's)."""
    own = read_json(Path(model.path) / CONFIG)["train"] if "adapter" in model.config else None
    train = own or model.config["train"]
    return int(train["run"]["steps"]) * int(train["optim"]["batch_size"])


def follow_maps(bench: Bench, runs: dict[str, LoadedModel], n: int) -> dict:
    """Parts 1-3: each run's agreement with its maps, FD and training images; the base's
    agreement with every kind of map."""
    base, args = bench.base, bench.args
    results: dict[str, dict] = {}
    held = bench.load(args.split)
    n = n or len(held)
    rows = list(range(n))
    base_x = bench.draw(base, n, **steer(base, held, rows, args.guidance))
    results["base (no map)"] = {"fd": bench.fd(base_x), "images": training_images(base)}
    for name, model in runs.items():
        spec = control_spec(model).config
        data = bench.load(args.split, spec)
        maps = to_model_space(data.control[:n])
        x = bench.draw(model, n, control=maps, **steer(model, data, rows, args.guidance))
        score = agreement(
            spec.kind, from_model_space(x), data.control[:n], data.images[:n],
            cells=spec.layout_cells,
        )  # fmt: skip
        chance = agreement(
            spec.kind, from_model_space(base_x), data.control[:n], data.images[:n],
            cells=spec.layout_cells,
        )  # fmt: skip
        for metric, values in chance.items():
            results["base (no map)"][f"{metric} ({spec.kind})"] = values.mean().item()
        results[name] = {
            "kind": spec.kind, "fd": bench.fd(x), "images": training_images(model),
            **{f"{m} ({spec.kind})": v.mean().item() for m, v in score.items()},
        }  # fmt: skip
    base_fd, base_images = results["base (no map)"]["fd"], results["base (no map)"]["images"]
    for r in results.values():
        r["fd_ratio"] = None if r["fd"] is None or not base_fd else r["fd"] / base_fd
        r["images_share"] = r["images"] / base_images
    return results


def two_scales(bench: Bench, name: str, model: LoadedModel, out: Path) -> dict:
    """Part 4 for one run: {"s_I,s_T": {metric: mean, "top5": rate}}, and its sweep grid."""
    args = bench.args
    spec = control_spec(model).config
    data = bench.load(args.split, spec)
    n = min(args.grid_n, len(data))
    prompt_rows = [(i + 1) % len(data) for i in range(n)]
    maps = to_model_space(data.control[:n])
    keys = [keys_of(model, data)[j] for j in prompt_rows]
    table, sweep = {}, []
    for s_i in args.map_scales:
        for s_t in args.text_scales:
            x = bench.draw(
                model, n, control=maps, control_guidance=s_i, **steer(model, data, prompt_rows, s_t)
            )
            score = agreement(
                spec.kind, from_model_space(x), data.control[:n], data.images[:n],
                cells=spec.layout_cells,
            )  # fmt: skip
            top5 = retrieval(bench.features(x), bench.bank, keys, bench.bank_keys, k=5)
            cell = {m: v.mean().item() for m, v in score.items()}
            table[f"{s_i:g},{s_t:g}"] = {**cell, "top5": top5.mean().item()}
            sweep.append(x[:1])
    shown = maps[:1].expand(-1, data.images.shape[1], -1, -1) if maps.shape[1] == 1 else maps[:1]
    head = torch.cat([shown[:, : data.images.shape[1]], to_model_space(data.images[1:2])])
    save_png(make_grid(head, nrow=2), out / f"{name}_scales_inputs.png", scale=3)
    grid = make_grid(torch.cat(sweep), nrow=len(args.text_scales))
    save_png(grid, out / f"{name}_scales.png", scale=3)
    return table


def markdown(results: dict, scales: dict, args) -> str:
    lines = ["| run | training images (share of base) | map agreement | FD | FD / base |"]
    lines.append("|---|---|---|---|---|")
    for name, r in results.items():
        agree = ", ".join(
            f"{k} {v:.3f}" for k, v in r.items() if k.split(" ")[0] in METRICS and v is not None
        )
        fd = "-" if r["fd"] is None else f"{r['fd']:.1f}"
        ratio = "-" if r["fd_ratio"] is None else f"{r['fd_ratio']:.2f}"
        lines.append(
            f"| {name} | {r['images']:,} ({r['images_share']:.2f}) | {agree or '-'} | {fd} | "
            f"{ratio} |"
        )
    for name, table in scales.items():
        lines += ["", f"{name}: map agreement / top-5 retrieval of the prompt (rows s_I, "
                  "columns s_T)", ""]  # fmt: skip
        lines.append("| s_I \\ s_T | " + " | ".join(f"{s:g}" for s in args.text_scales) + " |")
        lines.append("|---" * (len(args.text_scales) + 1) + "|")
        for s_i in args.map_scales:
            cells = []
            for s_t in args.text_scales:
                c = table[f"{s_i:g},{s_t:g}"]
                metric = next(v for k, v in c.items() if k != "top5")
                cells.append(f"{metric:.3f} / {c['top5']:.3f}")
            lines.append(f"| {s_i:g} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


METRICS = ("edge_f1", "mask_iou", "layout_l1")


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    base = load_run(args.base)
    runs = {Path(p).name: load_run(p) for p in [*args.concat, *args.adapter]}
    for name, model in runs.items():
        if control_spec(model) is None:
            sys.exit(f"error: {model.path} takes no control map")
        if model.image_shape != base.image_shape:
            sys.exit(f"error: {name} makes {model.image_shape} images, the base {base.image_shape}")
    bench = Bench(base, args)
    results = follow_maps(bench, runs, args.n)
    scales = {
        name: two_scales(bench, name, model, out)
        for name, model in runs.items()
        if control_spec(model).null_map_known
    }
    wall = time.perf_counter() - start
    flags = sys.argv[1:] if argv is None else argv
    report = {
        "command": " ".join([".venv/bin/python bench/control.py", *flags]),
        "results": results, "two_scales": scales, "bank": len(bench.bank),
        "sampler": args.sampler, "steps": args.steps, "guidance": args.guidance,
        "wall_s": round(wall, 1), "torch": torch.__version__,
        "cpu": platform.processor() or platform.machine(),
    }  # fmt: skip
    (out / "results.json").write_text(json.dumps(report, indent=2) + "\n")
    md = markdown(results, scales, args)
    (out / "results.md").write_text(md)
    print(md)
    print(f"wrote {out} ({wall:.0f} s)")


if __name__ == "__main__":
    main()
