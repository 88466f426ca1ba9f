"""``pixdiff sample`` and ``pixdiff demo``: draw images from a run or the shipped model."""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from pixdiff.checkpoint import LoadedModel, load
from pixdiff.images import make_grid, save_gif, save_png
from pixdiff.pipelines.generate import TrajectoryRecorder, class_grid, generate
from pixdiff.samplers import SAMPLERS
from pixdiff.sampling import steps_for_nfe
from pixdiff.timesteps import SPACINGS

SHIPPED_MODEL = Path(__file__).resolve().parents[1] / "assets" / "fashion_unet"


def add_parser(sub) -> None:
    p = sub.add_parser(
        "sample",
        help="generate images from a trained model",
        description="Generate images; writes grid.png and one PNG per image into --out.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument(
        "run",
        nargs="?",
        default=None,
        help="run directory or .safetensors checkpoint (default: the shipped Fashion-MNIST model)",
    )
    p.add_argument("-n", "--num", type=int, default=64, help="number of images")
    p.add_argument("--sampler", default="ddim", choices=sorted(SAMPLERS), help="sampler")
    p.add_argument("--steps", type=int, default=50, help="sampler steps")
    p.add_argument(
        "--nfe",
        type=int,
        default=None,
        metavar="BUDGET",
        help="network-evaluation budget: use the most steps of --sampler that fit "
        "(overrides --steps)",
    )
    p.add_argument(
        "--float64",
        action="store_true",
        help="keep the sampler state in float64 (reference solutions)",
    )
    p.add_argument(
        "--grid",
        default=None,
        choices=SPACINGS,
        help="time grid (default: trailing for discrete schedules, karras for EDM)",
    )
    p.add_argument("--eta", type=float, default=None, help="DDIM eta (0 deterministic .. 1)")
    p.add_argument(
        "--class",
        dest="class_",
        default=None,
        metavar="NAME_OR_ID",
        help="class name or id for every image; 'all' cycles through the classes",
    )
    p.add_argument(
        "--guidance",
        type=float,
        default=None,
        help="classifier-free guidance scale w (1 = conditional; default from the run)",
    )
    p.add_argument("--seed", type=int, default=0, help="seed; image i uses seed + i")
    p.add_argument("--out", default="out/samples", help="output directory")
    p.add_argument("--batch-size", type=int, default=64, help="images per sampler batch")
    p.add_argument(
        "--trajectory",
        action="store_true",
        help="also save trajectory.gif: x_t beside the predicted x0 at every step",
    )
    p.add_argument("--raw", action="store_true", help="use the raw (non-EMA) weights")
    p.add_argument("--device", default="cpu", help="cpu | cuda | cuda:N")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def parse_class(text: str | None, model: LoadedModel, n: int) -> torch.Tensor | None:
    """'all' cycles the classes; a name (case-insensitive) or an id selects one."""
    if text is None:
        return None
    k = model.num_classes
    if k == 0:
        raise ValueError("--class given, but this model is unconditional")
    names = model.class_names or [str(i) for i in range(k)]
    if text == "all":
        return torch.arange(n) % k
    lookup = {name.lower(): i for i, name in enumerate(names)}
    if text.lower() in lookup:
        return torch.full((n,), lookup[text.lower()])
    if text.isdigit() and int(text) < k:
        return torch.full((n,), int(text))
    raise ValueError(f"unknown class {text!r}; valid: {names} or ids 0..{k - 1}, or 'all'")


def load_model(path: str | None, *, ema: bool, device: str) -> LoadedModel:
    if path is None:
        if not (SHIPPED_MODEL / "config.json").exists():
            raise FileNotFoundError(
                f"the shipped model is missing from {SHIPPED_MODEL}; pass a run directory"
            )
        path = SHIPPED_MODEL
    return load(path, ema=ema, device=device)


def run(args) -> int:
    model = load_model(args.run, ema=not args.raw, device=args.device)
    labels = parse_class(args.class_, model, args.num)
    guidance = args.guidance
    if guidance is not None and guidance != 1.0 and labels is None:
        raise ValueError("--guidance steers towards a class: pass --class NAME_OR_ID (or 'all')")
    if guidance is None:
        guidance = model.config["train"]["sample"]["guidance"] if labels is not None else 1.0
    recorder = TrajectoryRecorder(model.denoiser) if args.trajectory else None
    steps = steps_for_nfe(args.sampler, args.nfe) if args.nfe is not None else args.steps
    x = generate(
        model.denoiser,
        model.image_shape,
        n=args.num,
        labels=labels,
        num_classes=model.num_classes,
        guidance=guidance,
        sampler=args.sampler,
        steps=steps,
        seed=args.seed,
        batch_size=args.batch_size,
        options={"eta": args.eta} if args.eta is not None else None,
        device=args.device,
        progress=not args.no_progress,
        recorder=recorder,
        dtype=torch.float64 if args.float64 else torch.float32,
        spacing=args.grid,
    )
    paths = write_samples(x, Path(args.out), nrow=_row_length(labels, model, args.num))
    if recorder is not None:
        frames = [
            make_grid(torch.cat([xt[:8], x0[:8]]).clamp(-1, 1), nrow=min(8, len(xt)))
            for xt, x0 in recorder.frames
        ]
        paths.append(save_gif(frames, Path(args.out) / "trajectory.gif", scale=3))
    print(f"wrote {args.num} images ({args.sampler}, {steps} steps); grid: {paths[0]}")
    for extra in paths[1:]:
        print(f"also wrote {extra}")
    return 0


def _row_length(labels, model: LoadedModel, n: int) -> int | None:
    if labels is not None and model.num_classes and n % model.num_classes == 0:
        return n // model.num_classes if bool((labels[1:] != labels[:-1]).any()) else None
    return None


def write_samples(x: torch.Tensor, out: Path, *, nrow: int | None = None) -> list[Path]:
    """grid.png plus 000000.png, 000001.png, ... (clipped to [-1, 1])."""
    x = x.clamp(-1, 1)
    out.mkdir(parents=True, exist_ok=True)
    for i, img in enumerate(x):
        save_png(img, out / f"{i:06d}.png")
    return [save_png(make_grid(x, nrow=nrow), out / "grid.png", scale=2)]


def run_demo(args) -> int:
    """One row per class from the shipped model (guided, 50 DDIM steps)."""
    model = load_model(None, ema=True, device="cpu")
    k, per_class = model.num_classes, 8
    x = class_grid(
        model.denoiser,
        model.image_shape,
        num_classes=k,
        per_row=per_class,
        max_rows=k,
        guidance=model.config["train"]["sample"]["guidance"],
        progress=True,
    )
    grid = write_samples(x, Path(args.out), nrow=per_class)[0]
    names = ", ".join(model.class_names or [])
    print(f"rows (top to bottom): {names}")
    print(f"demo grid: {grid}")
    return 0
