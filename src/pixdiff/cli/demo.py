"""``pixdiff demo``: the shipped models, one grid each."""

from __future__ import annotations

import torch

from pixdiff.checkpoint import load
from pixdiff.cli.output import add_output_flags, image_names, open_output, settings_of
from pixdiff.pipelines.cascade import Stage, cascade
from pixdiff.pipelines.generate import class_grid
from pixdiff.pipelines.steering import Steering
from pixdiff.sampling import Sampling
from pixdiff.shipped import shipped_cascade, shipped_run

# the emoji demo's prompts: captions of the train split
DEMO_PROMPTS = ("red apple", "cat face", "grinning face", "rocket", "sun with face", "snowman",
                "fire", "ghost")  # fmt: skip
DEMO_PER_PROMPT = 4
DISTILLED_DIR = "fashion-50-steps-vs-distilled"


def add_parser(sub) -> None:
    demo = sub.add_parser(
        "demo",
        help="sample the shipped models: Fashion-MNIST classes and emoji from prompts",
        description="Generate a grid of Fashion-MNIST items from the shipped model (one row "
        "per class) beside the same drawn in 2 steps by the shipped distilled model, then "
        "emoji from eight prompts with the shipped text-to-image model (32x32) and its "
        "super-resolution stage (64x64), and print the grids' paths.",
    )
    add_output_flags(demo, command="demo")
    demo.set_defaults(func=run_demo)


def distilled_beside(out, x) -> None:
    """The shipped distilled model's grid (its own few DDIM steps, one pass each) to the right
    of the 50-step grid ``x``, row by row, when the asset is installed."""
    try:
        model = load(shipped_run("fashion-distilled"))
    except FileNotFoundError:
        return
    k, steps = model.num_classes, model.config["train"]["sample"]["steps"]
    y = class_grid(model, per_row=8, max_rows=k, sampling=Sampling("ddim", steps))
    rows = torch.stack([x.reshape(k, 8, *x.shape[1:]), y.reshape(k, 8, *y.shape[1:])], dim=1)
    grid = out.write_images(rows.reshape(-1, *x.shape[1:]), DISTILLED_DIR, nrow=16)
    print(f"50 DDIM steps (left) beside the distilled model's {steps} steps (right): {grid}")


def run_demo(args) -> int:
    """The shipped models: one row per Fashion-MNIST class (guided, 50 DDIM steps), then emoji
    drawn from prompts at 32x32 and super-resolved to 64x64 by the shipped cascade."""
    model = load(shipped_run("fashion"))
    k = model.num_classes
    settings = settings_of(args, runs=[str(model.path), *map(str, shipped_cascade())])
    names = [*image_names(k * 8), "emoji", DISTILLED_DIR]
    with open_output(args, command="demo", settings=settings, names=names) as out:
        x = class_grid(model, per_row=8, max_rows=k, progress=True)
        grid = out.write_images(x, nrow=8)
        print(f"rows (top to bottom): {', '.join(model.class_names or [])}")
        print(f"demo grid: {grid}")
        distilled_beside(out, x)
        stages = [Stage(load(path), Sampling("dpmpp-2m", 25)) for path in shipped_cascade()]
        prompts = [p for p in DEMO_PROMPTS for _ in range(DEMO_PER_PROMPT)]
        low, high = cascade(stages, Steering(prompts=prompts), n=len(prompts), progress=True)
        low_grid = out.write_images(low, "emoji/32px", nrow=2 * DEMO_PER_PROMPT)
        grid = out.write_images(high, "emoji/64px", nrow=2 * DEMO_PER_PROMPT)
    print(f"emoji prompts (two per row, {DEMO_PER_PROMPT} samples each): {', '.join(DEMO_PROMPTS)}")
    print(f"emoji grids: {low_grid} (base), {grid} (after 32 -> 64)")
    return 0
