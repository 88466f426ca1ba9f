"""Train the Fashion-MNIST evaluation classifier and save it (default: the shipped asset).

Example (the command that built ``src/pixdiff/assets/fashion_classifier/``):

    python bench/train_classifier.py --epochs 3 --batch-size 128 --lr 2e-3 --seed 0
"""

from __future__ import annotations

import argparse
import platform
import sys
import time

import torch

from pixdiff.data import load_fashion_mnist
from pixdiff.eval.classifier import (
    DEFAULT_DIR,
    accuracy,
    load_classifier,
    parameter_count,
    save_classifier,
    train_classifier,
)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options; every flag is documented in ``--help``."""
    parser = argparse.ArgumentParser(
        description="Train pixdiff's Fashion-MNIST evaluation classifier (the feature network "
        "of its Frechet distance / KID / precision-recall) and save it as model.safetensors "
        "(float16) + config.json.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--epochs", type=int, default=3, help="passes over the 60k train images")
    parser.add_argument("--batch-size", type=int, default=128, help="images per AdamW step")
    parser.add_argument(
        "--lr", type=float, default=2e-3, help="peak learning rate (warm-up, then cosine to 0)"
    )
    parser.add_argument(
        "--seed", type=int, default=0, help="seed of the init, batch order and augmentation"
    )
    parser.add_argument(
        "--augment",
        action="store_true",
        help="random horizontal flips and +-2 px shifts (pays off only with more epochs)",
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="CPU threads for torch; results are bit-reproducible only at the same count",
    )
    parser.add_argument(
        "--out",
        default=str(DEFAULT_DIR),
        help="folder to write model.safetensors, config.json into (replaced atomically)",
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    """Train, save, reload the float16 weights and report test accuracy and wall time."""
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    start = time.perf_counter()
    model, acc = train_classifier(
        epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, seed=args.seed,
        augment=args.augment, progress=True,
    )  # fmt: skip
    wall = time.perf_counter() - start
    # Measure what ships: the weights after their round trip through float16 on disk.
    saved = load_classifier(save_classifier(model, args.out))
    saved_acc = accuracy(saved, load_fashion_mnist("test"))
    flags = sys.argv[1:] if argv is None else argv
    metadata = {
        "command": " ".join(["python bench/train_classifier.py", *flags]),
        "epochs": args.epochs, "batch_size": args.batch_size, "lr": args.lr, "seed": args.seed,
        "augment": args.augment, "threads": args.threads, "train_wall_s": round(wall, 1),
        "test_accuracy_fp32": round(acc, 4), "test_accuracy": round(saved_acc, 4),
        "parameters": parameter_count(model), "torch": torch.__version__,
        "cpu": platform.processor() or platform.machine(),
    }  # fmt: skip
    save_classifier(model, args.out, metadata=metadata)
    print(f"parameters: {parameter_count(model)}")
    print(f"test accuracy: {acc:.4f} (float32), {saved_acc:.4f} (saved float16 weights)")
    print(f"training wall time: {wall:.1f} s on {args.threads} thread(s)")
    print(f"saved to {args.out}")


if __name__ == "__main__":
    main()
