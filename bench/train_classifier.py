"""Train an evaluation classifier and save it: Fashion-MNIST (default) or emoji features.

``--data fashion-mnist`` builds ``src/pixdiff/assets/fashion_classifier/``:

    python bench/train_classifier.py --epochs 3 --batch-size 128 --lr 2e-3 --seed 0

``--data emoji`` builds the emoji feature network of ``bench/cascade.py``
(``src/pixdiff/assets/emoji_classifier/``): the same architecture on 64x64 RGB, trained to
tell the train split's emoji apart (one class per emoji; shifts of up to 4 px on white are the
only augmentation, as the mirror of an arrow is another emoji). Its penultimate features are
what the Frechet distance between emoji sets is measured in:

    python bench/train_classifier.py --data emoji --epochs 150 --batch-size 32 --lr 1e-3 \
        --seed 0 --threads 2

(lr 3e-3 does not learn 1,225 classes at all: 0.2% after 58 epochs.)
"""

from __future__ import annotations

import argparse
import platform
import sys
import time

import torch

from pixdiff.data import ImageSet, load_dataset, load_fashion_mnist
from pixdiff.eval.classifier import (
    DEFAULT_DIR,
    EMOJI_DIR,
    accuracy,
    load_classifier,
    parameter_count,
    save_classifier,
)
from pixdiff.eval.classifier_training import train_classifier


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options; every flag is documented in ``--help``."""
    parser = argparse.ArgumentParser(
        description="Train one of pixdiff's evaluation classifiers (the feature network of its "
        "Frechet distance / KID / precision-recall): Fashion-MNIST, or with --data emoji the "
        "emoji feature network. Saves model.safetensors (float16) + config.json.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument(
        "--data",
        default="fashion-mnist",
        choices=("fashion-mnist", "emoji"),
        help="fashion-mnist: 10 classes; emoji: one class per train-split emoji, 64x64 RGB",
    )
    parser.add_argument("--epochs", type=int, default=3, help="passes over the train images")
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
        default=None,
        help="folder to write model.safetensors, config.json into (replaced atomically); "
        f"default {DEFAULT_DIR} or, for emoji, {EMOJI_DIR}",
    )
    return parser.parse_args(argv)


EMOJI_SIZE, EMOJI_SHIFT = 64, 4


def emoji_identities() -> ImageSet:
    """The train split's 64x64 emoji, each its own class (labels 0..N-1, named by caption)."""
    data = load_dataset("emoji", image_size=EMOJI_SIZE, split="train")
    labels = torch.arange(len(data))
    return ImageSet(data.images, labels, list(data.captions), data.captions, "emoji-64-ids")


def main(argv: list[str] | None = None) -> None:
    """Train, save, reload the float16 weights and report test accuracy and wall time."""
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    emoji = args.data == "emoji"
    out = args.out or (EMOJI_DIR if emoji else DEFAULT_DIR)
    # emoji: accuracy is measured on the un-shifted train images (each class has one image)
    data = {"train_data": emoji_identities(), "augment": True, "max_shift": EMOJI_SHIFT,
            "flip": False, "fill": 1.0} if emoji else {"augment": args.augment}  # fmt: skip
    if emoji:
        data["test_data"] = data["train_data"]
    start = time.perf_counter()
    model, acc = train_classifier(
        epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, seed=args.seed,
        progress=True, **data,
    )  # fmt: skip
    wall = time.perf_counter() - start
    # Measure what ships: the weights after their round trip through float16 on disk.
    saved = load_classifier(save_classifier(model, out))
    saved_acc = accuracy(saved, data["test_data"] if emoji else load_fashion_mnist("test"))
    flags = sys.argv[1:] if argv is None else argv
    metadata = {
        "command": " ".join(["python bench/train_classifier.py", *flags]),
        "epochs": args.epochs, "batch_size": args.batch_size, "lr": args.lr, "seed": args.seed,
        "data": args.data, "augment": args.augment or emoji, "threads": args.threads,
        "train_wall_s": round(wall, 1),
        "test_accuracy_fp32": round(acc, 4), "test_accuracy": round(saved_acc, 4),
        "parameters": parameter_count(model), "torch": torch.__version__,
        "cpu": platform.processor() or platform.machine(),
    }  # fmt: skip
    save_classifier(model, out, metadata=metadata)
    print(f"parameters: {parameter_count(model)}")
    print(f"test accuracy: {acc:.4f} (float32), {saved_acc:.4f} (saved float16 weights)")
    print(f"training wall time: {wall:.1f} s on {args.threads} thread(s)")
    print(f"saved to {out}")


if __name__ == "__main__":
    main()
