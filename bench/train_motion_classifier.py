"""Train the motion classifier of the video metrics and save it (``src/pixdiff/assets/
motion_classifier/``): a (2+1)D CNN on the 16 motions of the synthetic clips of both sources
(Fashion-MNIST items and emoji, colour, 32x32, 16 frames), scored on the held-out split (unseen
object-motion pairs):

    OMP_NUM_THREADS=1 nice -n 10 .venv/bin/python bench/train_motion_classifier.py \
        --train-clips 4096 --epochs 8 --batch-size 32 --lr 3e-3 --seed 0
"""

from __future__ import annotations

import argparse
import platform
import sys
import time

import torch

from pixdiff.data import ClipSet, ClipSpec, load_clips
from pixdiff.eval.classifier import parameter_count
from pixdiff.eval.motion_classifier import (
    MOTION_DIR,
    ClipExtractor,
    load_video_classifier,
    save_video_classifier,
)
from pixdiff.eval.motion_training import motion_accuracy_of, train_motion_classifier


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options; every flag is documented in ``--help``."""
    p = argparse.ArgumentParser(
        description="Train the motion classifier (features of the FVD-style distance, motion "
        "accuracy) on synthetic clips and save model.safetensors (float32) + config.json.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--source", default="both", choices=("both", "fashion-mnist", "emoji"))
    p.add_argument("--train-clips", type=int, default=4096, help="training clips")
    p.add_argument("--test-clips", type=int, default=1024, help="held-out clips scored")
    p.add_argument("--epochs", type=int, default=8, help="passes over the training clips")
    p.add_argument("--batch-size", type=int, default=32, help="clips per AdamW step")
    p.add_argument("--lr", type=float, default=3e-3, help="peak learning rate")
    p.add_argument("--seed", type=int, default=0, help="init, batch order, frame subsampling")
    p.add_argument("--threads", type=int, default=1, help="CPU threads for torch")
    p.add_argument("--out", default=str(MOTION_DIR), help="folder to write the classifier into")
    p.add_argument(
        "--score-only", action="store_true",
        help="train nothing: report the held-out accuracy of the classifier saved in --out",
    )  # fmt: skip
    return p.parse_args(argv)


def every_2nd(test: ClipSet) -> ClipSet:
    """The held-out clips at every second frame (8 of 16)."""
    return ClipSet(test.clips[:, ::2], motions=test.motions, name="clips-test-8")


def main(argv: list[str] | None = None) -> None:
    """Train, save, reload what was saved and report held-out accuracy (16 and 8 frames)."""
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    spec = ClipSpec(source=args.source, size=32, frames=16, num_clips=args.train_clips)
    train = load_clips(spec)
    test = load_clips(ClipSpec(source=args.source, size=32, frames=16,
                               num_clips=args.test_clips, split="test"))  # fmt: skip
    if args.score_only:
        saved = ClipExtractor(load_video_classifier(args.out), name="s")
        acc, acc8 = motion_accuracy_of(saved, test), motion_accuracy_of(saved, every_2nd(test))
        print(f"held-out motion accuracy: {acc:.4f} (16 frames), {acc8:.4f} (every 2nd frame)")
        return
    start = time.perf_counter()
    model, acc = train_motion_classifier(
        train, test, epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
        seed=args.seed, progress=True,
    )  # fmt: skip
    wall = time.perf_counter() - start
    saved = ClipExtractor(load_video_classifier(save_video_classifier(model, args.out)), name="s")
    acc8 = motion_accuracy_of(saved, every_2nd(test))
    flags = sys.argv[1:] if argv is None else argv
    metadata = {
        "command": " ".join(["python bench/train_motion_classifier.py", *flags]),
        "source": args.source, "train_clips": args.train_clips, "test_clips": args.test_clips,
        "epochs": args.epochs, "batch_size": args.batch_size, "lr": args.lr, "seed": args.seed,
        "threads": args.threads, "train_wall_s": round(wall, 1),
        "heldout_motion_accuracy": round(motion_accuracy_of(saved, test), 4),
        "heldout_motion_accuracy_8_frames": round(acc8, 4),
        "parameters": parameter_count(model), "torch": torch.__version__,
        "cpu": platform.processor() or platform.machine(),
    }  # fmt: skip
    save_video_classifier(model, args.out, metadata=metadata)
    print(f"parameters: {metadata['parameters']}")
    print(f"held-out motion accuracy: {acc:.4f} (16 frames), {acc8:.4f} (every 2nd frame)")
    print(f"training wall time: {wall:.1f} s on {args.threads} thread(s); saved to {args.out}")


if __name__ == "__main__":
    main()
