"""The video metrics' real baselines: held-out real clips, and the same clips with their frames
shuffled in time, scored against a real reference of other held-out clips (docs/video.md,
"Evaluation"). The issue's targets compare a video model's scores with these:

    OMP_NUM_THREADS=1 nice -n 10 .venv/bin/python bench/video_metrics.py --n 1024 \
        --out out/video-metrics.json

The reference is ``ClipSpec(split="test", seed=0)``; the scored clips are ``seed=1`` (other
clips of the same held-out object-motion pairs), so "real" is the floor a generator can reach
at this n, and "shuffled" keeps every frame real but destroys the motion.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from pixdiff.data import ClipSpec, load_clips, to_model_space
from pixdiff.eval.report import format_table
from pixdiff.eval.video import VIDEO_METRICS, evaluate_clips, shuffle_frames


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options; every flag is documented in ``--help``."""
    p = argparse.ArgumentParser(
        description="Score held-out real clips and frame-shuffled real clips with the video "
        "metrics (fvd, motion, frame-fd, temporal) against a held-out real reference.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--source", default="both", choices=("both", "fashion-mnist", "emoji"))
    p.add_argument("--n", type=int, default=1024, help="clips scored, and in the reference")
    p.add_argument("--frames", type=int, default=16, help="frames per clip")
    p.add_argument("--size", type=int, default=32, help="frame side")
    p.add_argument("--seed", type=int, default=0, help="seed of the frame shuffle")
    p.add_argument("--out", default=None, help="JSON file to write the numbers to")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    """Score the two baselines and print (and optionally write) the tables."""
    args = parse_args(argv)
    torch.set_num_threads(1)
    spec = ClipSpec(source=args.source, size=args.size, frames=args.frames, num_clips=args.n,
                    split="test", seed=0)  # fmt: skip
    real = load_clips(ClipSpec(**{**spec.__dict__, "seed": 1}), progress=False)
    clips = to_model_space(real.clips)
    shuffled = shuffle_frames(clips, generator=torch.Generator().manual_seed(args.seed))
    start = time.perf_counter()
    results = {"reference": f"{spec}", "scored": "the same spec with seed=1", "metrics": {}}
    for name, x in (("real", clips), ("frames_shuffled", shuffled)):
        results["metrics"][name] = evaluate_clips(x, real.motions, spec, metrics=VIDEO_METRICS)
        print(f"[{name}]\n{format_table(results['metrics'][name])}")
    results["seconds"] = round(time.perf_counter() - start, 1)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(results, indent=2) + "\n")
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
