"""Golden outputs on fixed seeds: every registered sampler on analytic and network denoisers,
and the generation pipelines on the shipped models. A structural change must leave them
bit-identical (``python tests/golden/golden_outputs.py --check``); the test keeps them within
float round-off on any CPU.

Record them again (``--write``) only when a change is meant to alter outputs."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

GOLDEN = Path(__file__).with_name("outputs.safetensors")


def _sampler_outputs() -> dict[str, torch.Tensor]:
    from pixdiff import sample
    from pixdiff.samplers import SAMPLERS, get_sampler
    from pixdiff.schedule_registry import get_schedule
    from pixdiff.toy import GaussianMixture

    gm = GaussianMixture(
        torch.tensor([[1.0, -0.5, 0.25, 0.0], [-1.0, 0.5, 0.0, 0.75]], dtype=torch.float64),
        torch.tensor([0.3, 0.5], dtype=torch.float64),
        torch.tensor([0.4, 0.6], dtype=torch.float64),
    )
    out = {}
    cases = [("linear", "eps"), ("cosine", "v"), ("flow", "flow"), ("edm", "edm")]
    for name in sorted(SAMPLERS):
        for schedule, prediction in cases:
            if name == "ddpm-learned":
                continue  # needs a learned-variance network
            steps = max(get_sampler(name).min_steps, 6)
            x = sample(
                gm.denoiser(get_schedule(schedule), prediction),
                (5, 4),
                sampler=name,
                steps=steps,
                seed=3,
                dtype=torch.float64,
            )
            out[f"sampler/{name}/{schedule}"] = x
    return out


def _pipeline_outputs() -> dict[str, torch.Tensor]:
    from pixdiff.checkpoint import load
    from pixdiff.guidance import GuidanceOptions
    from pixdiff.pipelines.cascade import Stage, cascade
    from pixdiff.pipelines.generate import class_grid, generate
    from pixdiff.pipelines.steering import Steering
    from pixdiff.sampling import Sampling

    assets = Path(__file__).resolve().parents[2] / "src" / "pixdiff" / "assets"
    torch.set_num_threads(1)
    fashion = load(assets / "fashion_unet")
    out = {}
    out["generate/fashion/class"] = generate(
        fashion, Steering(classes=[0, 3, 7], guidance=2.0), Sampling("dpmpp-2m", 4), n=3, seed=5
    )
    out["generate/fashion/negative+rescale"] = generate(
        fashion,
        Steering(
            classes=[1, 1], negative_class=2, guidance=3.0,
            options=GuidanceOptions(rescale=0.7, interval=(0.2, 0.9)),
        ),
        Sampling("ddim", 3), n=2, seed=1,
    )  # fmt: skip
    out["generate/fashion/uncond"] = generate(fashion, None, Sampling("euler", 3), n=2, seed=2)
    out["class_grid/fashion"] = class_grid(
        fashion, guidance=2.0, per_row=2, max_rows=3, sampling=Sampling(steps=2)
    )
    emoji = load(assets / "emoji_unet")
    out["generate/emoji/prompt"] = generate(
        emoji, Steering(prompts=["red apple", "cat face"], negative_prompt="fire", guidance=3.0),
        Sampling("dpmpp-2m", 3), n=2, seed=0,
    )  # fmt: skip
    stages = [
        Stage(emoji, Sampling("dpmpp-2m", 3)),
        Stage(load(assets / "emoji_sr"), Sampling("ddim", 2), aug_level=0.1),
    ]
    low, high = cascade(stages, Steering(prompts="snowman"), n=2, seed=4)
    out["cascade/emoji/low"], out["cascade/emoji/high"] = low, high
    return out


def golden_outputs() -> dict[str, torch.Tensor]:
    return {**_sampler_outputs(), **_pipeline_outputs()}


def main(argv: list[str] | None = None) -> int:
    from safetensors.torch import load_file, save_file

    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--write", action="store_true", help="record the outputs as the golden ones")
    p.add_argument("--check", action="store_true", help="compare bit for bit with the record")
    p.add_argument(
        "--record", type=Path, default=GOLDEN,
        help="the record to write or compare with (default: the committed one; another CPU "
        "can differ from it in the last bits, so record the base commit on that CPU first)",
    )  # fmt: skip
    args = p.parse_args(argv)
    outputs = golden_outputs()
    if args.write:
        save_file({k: v.contiguous() for k, v in outputs.items()}, str(args.record))
        print(f"wrote {len(outputs)} outputs to {args.record}")
        return 0
    golden = load_file(str(args.record))
    bad = sorted(set(golden) ^ set(outputs))
    bad += [k for k in sorted(set(golden) & set(outputs)) if not torch.equal(golden[k], outputs[k])]
    print(f"{len(outputs) - len(bad)} of {len(golden)} outputs bit-identical; differ: {bad}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
