"""The convergence study of issue #16: which training recipe reaches quality with fewest images.

Every recipe trains an unconditional Fashion-MNIST model of about 4M parameters on the same
images (the same seed, batch and data order wherever the recipe allows), and is scored at each
milestone of training images (12k, 24k, 48k, 96k, 192k by default) by FD and KID in the shipped
Fashion classifier's features against the 10,000 test images, on ``--n`` samples at 10 NFE, with
the best of ``--samplers`` for that model at that milestone.

The pixdiff recipes are ``pixdiff train`` runs (resumed from milestone to milestone, so a killed
study continues where it stopped). The outside baseline is diffusers' ``train_unconditional``
example at its defaults: a ``UNet2DModel`` (scaled to about 4M parameters), ``DDPMScheduler``
(1000 linear betas, eps-prediction, MSE), AdamW lr 1e-4 with betas (0.95, 0.999), weight decay
1e-6, 500 warm-up steps then cosine decay over ``--horizon`` images (192k), gradient clipping at 1,
random horizontal flips, and its EMA (``EMAModel`` with warm-up: inv_gamma 1, power 3/4,
max decay 0.9999). It is sampled by the same pixdiff samplers through ``pixdiff.interop``.
The baseline trains in one process; a killed baseline starts again from scratch.

Results go to OUT/results.json (one row per recipe and milestone, written after each), a table
to stdout, and plots of FD against training images and wall time to ``--plot``.

    .venv/bin/python bench/recipes.py --out out/recipes                      # the full study
    .venv/bin/python bench/recipes.py --out out/recipes --recipes v-cosine,diffusers \\
        --milestones 12000,24000 --n 500                                      # a part of it
    .venv/bin/python bench/recipes.py --out out/recipes --recipes flow \\
        --with out/base/results.json     # the table and plot of this part and another one
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from pixdiff.eval.report import PeriodicEval, SampleSpec
from pixdiff.files import atomic_write
from pixdiff.pipelines.model import load

FASHION_SHAPE = (1, 28, 28)
# unet-small (28 -> 14 -> 7, attention at 7) widened to 48 channels: 3.9M parameters
UNET_4M = ["--preset", "unet-small", "--set", "model.overrides.model_channels=48"]


@dataclass(frozen=True)
class Recipe:
    """A pixdiff recipe: the flags of ``pixdiff train`` that make it (beside the common ones)."""

    name: str
    flags: list[str] = field(default_factory=list)
    note: str = ""


def _sets(*pairs: str) -> list[str]:
    return [arg for pair in pairs for arg in ("--set", pair)]


RECIPES = [
    Recipe("ddpm-eps", [*UNET_4M, "--formulation", "ddpm"], "linear betas, eps, uniform t"),
    Recipe("v-cosine", [*UNET_4M, "--formulation", "v-cosine"], "cosine, v, min-SNR-5"),
    Recipe(
        "x0-cosine",
        [*UNET_4M, "--formulation", "v-cosine", *_sets('diffusion.prediction="x0"')],
        "cosine, x0, min-SNR-5",
    ),
    Recipe("flow", [*UNET_4M, "--formulation", "flow"], "rectified flow, logit-normal t"),
    Recipe("edm", [*UNET_4M, "--formulation", "edm"], "EDM preconditioning, log-normal sigma"),
    Recipe(
        "v-sigmoid",
        [*UNET_4M, "--formulation", "v-cosine", *_sets('diffusion.weighting="sigmoid"')],
        "cosine, v, sigmoid weighting (VDM++ / SiD2)",
    ),
    Recipe(
        "v-soft-min-snr",
        [*UNET_4M, "--formulation", "v-cosine", *_sets('diffusion.weighting="soft-min-snr"')],
        "cosine, v, soft min-SNR (HDiT)",
    ),
    Recipe(
        "jit-p4-x0",
        [
            "--preset",
            "jit-tiny-4",
            "--formulation",
            "flow",
            *_sets(
                "model.overrides.hidden_size=192",
                "model.overrides.depth=6",
                "model.overrides.num_heads=6",
                'diffusion.prediction="x0"',
                'diffusion.loss_space="flow"',
            ),
        ],  # fmt: skip
        "pixel transformer, patch 4 (49 tokens), x0-prediction, flow loss (JiT); 4.2M",
    ),
]
BASELINE = "diffusers"
ALL_RECIPES = [r.name for r in RECIPES] + [BASELINE]


# ----------------------------------------------------------------------------- pixdiff recipes


def _last_elapsed(run: Path) -> float:
    """The training-loop wall time of the run's last invocation (log.csv's last elapsed_s,
    which restarts at 0 when a run is resumed)."""
    with open(run / "log.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    return float(rows[-1]["elapsed_s"]) if rows else 0.0


def train_pixdiff(recipe: Recipe, run: Path, steps: int, args) -> float:
    """Train (or resume) ``run`` to ``steps``; the wall time of this part in seconds."""
    common = [
        "--data", "fashion-mnist", "--set", "data.conditional=false", "--seed", str(args.seed),
        "--batch-size", str(args.batch_size), "--steps", str(steps), "--device", args.device,
        "--set", "run.sample_every=0", "--set", "run.checkpoint_every=500",
        "--set", f"run.log_every={args.log_every}", "--no-progress",
    ]  # fmt: skip
    argv = ["--out", str(run), *common] + (["--resume"] if run.exists() else recipe.flags)
    cmd = [sys.executable, "-m", "pixdiff.cli.main", "train", *argv]
    print("$", " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True)
    return _last_elapsed(run)


# ----------------------------------------------------------------------------- the baseline


def diffusers_unet(channels: int = 1, size: int = 28) -> nn.Module:
    """diffusers' UNet2DModel in the layout of train_unconditional (two levels of equal width,
    attention in the middle one), narrowed for 28 px (28 -> 14 -> 7): 4.4M parameters, a
    little more than the pixdiff recipes' 3.9M, so the baseline is not short of capacity."""
    from diffusers import UNet2DModel

    return UNet2DModel(
        sample_size=size, in_channels=channels, out_channels=channels, layers_per_block=2,
        block_out_channels=(64, 64, 128),
        down_block_types=("DownBlock2D", "AttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "AttnUpBlock2D", "UpBlock2D"),
    )  # fmt: skip


class _Baseline:
    """A trained diffusers UNet as what pixdiff's ``generate`` samples (a Steerable model)."""

    def __init__(self, unet: nn.Module, scheduler_config: dict):
        from pixdiff.denoiser import Denoiser
        from pixdiff.interop import DiffusersUNet, schedule_from_diffusers

        schedule, prediction = schedule_from_diffusers(scheduler_config)
        self.denoiser = Denoiser(DiffusersUNet(unet.eval()), schedule, prediction)
        self.config = {"train": {"sample": {"guidance": 1.0}}}
        self.class_names = None
        self.num_classes = 0
        self.text_encoder = None
        self.image_shape = FASHION_SHAPE


def train_diffusers(milestones: list[int], args, score) -> None:
    """diffusers' train_unconditional recipe, scored by ``score(model, images, seconds)`` at
    each milestone of training images."""
    from diffusers import DDPMScheduler
    from diffusers.optimization import get_scheduler
    from diffusers.training_utils import EMAModel

    from pixdiff.data.image_set import to_model_space
    from pixdiff.data.load import load_dataset

    torch.manual_seed(args.seed)
    images = to_model_space(load_dataset("fashion-mnist", image_size=28).images)
    unet = diffusers_unet().to(args.device)
    noise_scheduler = DDPMScheduler(num_train_timesteps=1000)
    total_steps = math.ceil(max(milestones[-1], args.horizon) / args.batch_size)
    opt = torch.optim.AdamW(
        unet.parameters(), lr=1e-4, betas=(0.95, 0.999), weight_decay=1e-6, eps=1e-8
    )
    lr_sched = get_scheduler("cosine", opt, num_warmup_steps=500, num_training_steps=total_steps)
    ema = EMAModel(unet.parameters(), decay=0.9999, use_ema_warmup=True, inv_gamma=1.0,
                   power=3 / 4)  # fmt: skip
    gen = torch.Generator().manual_seed(args.seed)
    order, at, seen, elapsed = torch.randperm(len(images), generator=gen), 0, 0, 0.0
    for milestone in milestones:
        start = time.perf_counter()
        while seen < milestone:
            if at + args.batch_size > len(order):
                order, at = torch.randperm(len(images), generator=gen), 0
            x0 = images[order[at : at + args.batch_size]].to(args.device)
            at += args.batch_size
            flip = torch.rand(len(x0), generator=gen) < 0.5
            x0 = torch.where(flip.view(-1, 1, 1, 1).to(x0.device), x0.flip(-1), x0)
            noise = torch.randn(x0.shape, generator=gen).to(x0.device)
            t = torch.randint(0, 1000, (len(x0),), generator=gen).to(x0.device)
            loss = nn.functional.mse_loss(
                unet(noise_scheduler.add_noise(x0, noise, t), t).sample, noise
            )
            loss.backward()
            nn.utils.clip_grad_norm_(unet.parameters(), 1.0)
            opt.step()
            lr_sched.step()
            ema.step(unet.parameters())
            opt.zero_grad(set_to_none=True)
            seen += len(x0)
        elapsed += time.perf_counter() - start
        averaged = diffusers_unet().to(args.device)
        ema.copy_to(averaged.parameters())
        score(_Baseline(averaged, dict(noise_scheduler.config)), milestone, elapsed)


# ----------------------------------------------------------------------------- the study


def load_results(path: Path) -> list[dict]:
    return json.loads(path.read_text()) if path.exists() else []


def best_score(evaluate: PeriodicEval, model, args) -> dict:
    """FD and KID of the best of ``args.samplers`` at ``args.nfe`` NFE (by FD)."""
    from pixdiff.sampling import steps_for_nfe

    rows = []
    for sampler in args.samplers:
        spec = SampleSpec(
            n=args.n, sampler=sampler, steps=steps_for_nfe(sampler, args.nfe), seed=args.seed,
            batch_size=250, device=args.device,
        )  # fmt: skip
        rows.append({"sampler": sampler, **evaluate(model, spec)})
    return min(rows, key=lambda r: r["fd"])


def run_study(args) -> list[dict]:
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    results_path = out / "results.json"
    results = load_results(results_path)
    done = {(r["recipe"], r["images"]) for r in results}
    evaluate = PeriodicEval("fashion-mnist", "fashion-classifier", "fd,kid", FASHION_SHAPE,
                            args.device)  # fmt: skip

    def record(recipe: str, model, images: int, seconds: float) -> None:
        row = {"recipe": recipe, "images": images, "train_s": round(seconds, 1),
               **best_score(evaluate, model, args)}  # fmt: skip
        results.append(row)
        atomic_write(results_path, (json.dumps(results, indent=1) + "\n").encode())
        print(f"{recipe:<16}{images:>8}  FD {row['fd']:8.3f}  KID {row['kid']:.5f}  "
              f"({row['sampler']}, {seconds:.0f} s of training)", flush=True)  # fmt: skip

    if BASELINE in args.recipes and any((BASELINE, m) not in done for m in args.milestones):
        results[:] = [r for r in results if r["recipe"] != BASELINE]  # it starts over
        train_diffusers(args.milestones, args, lambda m, i, s: record(BASELINE, m, i, s))
    # milestone by milestone, so a study cut short leaves every recipe at the same budget
    for milestone in args.milestones:
        for name in args.recipes:
            if name == BASELINE or (name, milestone) in done:
                continue
            recipe = next(r for r in RECIPES if r.name == name)
            seconds = max((r["train_s"] for r in results if r["recipe"] == name), default=0.0)
            steps = math.ceil(milestone / args.batch_size)
            seconds += train_pixdiff(recipe, out / name, steps, args)
            record(name, load(out / name, device=args.device), milestone, seconds)
    return results


def table(results: list[dict]) -> str:
    """Markdown: FD (KID) per recipe and milestone, and the training seconds at the end."""
    milestones = sorted({r["images"] for r in results})
    lines = [
        "| recipe | " + " | ".join(f"{m // 1000}k" for m in milestones) + " | train s |",
        "|---|" + "---|" * (len(milestones) + 1),
    ]
    for name in dict.fromkeys(r["recipe"] for r in results):
        rows = {r["images"]: r for r in results if r["recipe"] == name}
        cells = [
            f"{rows[m]['fd']:.2f} ({rows[m]['kid']:.1f})" if m in rows else "-" for m in milestones
        ]
        last = rows[max(rows)]
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {last['train_s']:.0f} |")
    return "\n".join(lines)


def plot(results: list[dict], path: Path) -> None:
    """FD against training images and against training wall time, one line per recipe."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    names = list(dict.fromkeys(r["recipe"] for r in results))
    colours = plt.get_cmap("tab10")
    for i, name in enumerate(names):
        rows = sorted((r for r in results if r["recipe"] == name), key=lambda r: r["images"])
        style = {"color": colours(i % 10), "marker": "o", "label": name,
                 "linestyle": "--" if name == BASELINE else "-"}  # fmt: skip
        axes[0].plot([r["images"] for r in rows], [r["fd"] for r in rows], **style)
        axes[1].plot([r["train_s"] for r in rows], [r["fd"] for r in rows], **style)
    for ax, xlabel in zip(axes, ["training images", "training wall time (s)"], strict=True):
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel(xlabel)
        ax.set_ylabel("FD (Fashion classifier features), 10 NFE")
        ax.grid(True, which="both", alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default="out/recipes", help="study folder (runs, results.json)")
    p.add_argument(
        "--recipes",
        default=",".join(ALL_RECIPES),
        help=f"comma-separated, from {', '.join(ALL_RECIPES)} (default: all)",
    )
    p.add_argument(
        "--milestones",
        default="12000,24000,48000,96000,192000",
        help="training images at which each recipe is scored",
    )
    p.add_argument("--batch-size", type=int, default=32, help="the same for every recipe")
    p.add_argument("--n", type=int, default=1000, help="samples per score")
    p.add_argument("--nfe", type=int, default=10, help="network evaluations per sample")
    p.add_argument(
        "--samplers", default="dpmpp-2m,unipc-bh2", help="the best of these (by FD) is reported"
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--horizon", type=int, default=192000,
        help="training images over which the baseline's cosine learning rate decays (the full "
        "study's length, so a shorter study trains it exactly as the full one does)",
    )  # fmt: skip
    p.add_argument(
        "--log-every", type=int, default=25,
        help="training log interval in steps; must divide every milestone's step count, so "
        "the logged wall time ends at the milestone",
    )  # fmt: skip
    p.add_argument("--device", default="cpu")
    p.add_argument("--plot", default="docs/bench/recipes-fd.png", help="PNG of the curves")
    p.add_argument(
        "--with", dest="others", nargs="*", default=[], metavar="RESULTS",
        help="results.json files of other parts of the study (e.g. the baseline trained in "
        "a second process), read only, added to the table and the plot",
    )  # fmt: skip
    args = p.parse_args(argv)
    args.recipes = [r.strip() for r in args.recipes.split(",") if r.strip()]
    unknown = [r for r in args.recipes if r not in ALL_RECIPES]
    if unknown:
        p.error(f"unknown recipe(s) {unknown}; valid: {', '.join(ALL_RECIPES)}")
    args.milestones = sorted(int(m) for m in args.milestones.split(","))
    args.samplers = [s.strip() for s in args.samplers.split(",") if s.strip()]
    steps = [math.ceil(m / args.batch_size) for m in args.milestones]
    if any(k % args.log_every for k in steps):
        p.error(f"--log-every {args.log_every} does not divide the milestones' steps {steps}")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    results = run_study(args)
    for other in args.others:
        results = results + load_results(Path(other))
    print(table(results))
    plot(results, Path(args.plot))
    print(f"plot: {args.plot}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
