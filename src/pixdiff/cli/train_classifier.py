"""``pixdiff train-classifier``: train a noise-conditional classifier for classifier guidance."""

from __future__ import annotations

from pixdiff.classifier_store import check_out_dir, save_noisy_classifier
from pixdiff.cli import flags
from pixdiff.data import load_dataset
from pixdiff.schedule_registry import SCHEDULE_NAMES, get_schedule
from pixdiff.training.loggers import lines_on_stdout
from pixdiff.training.noisy_classifier import train_noisy_classifier
from pixdiff.training.runtime import resolve_device


def add_parser(sub) -> None:
    p = sub.add_parser(
        "train-classifier",
        help="train a noise-conditional classifier for classifier guidance",
        description="Train a classifier p(y | x_t) on images noised along a schedule "
        "(Dhariwal & Nichol 2021) and save model.safetensors + config.json in --out; use it "
        "with `pixdiff sample --classifier DIR --classifier-scale S`.",
    )
    p.add_argument(
        "--data",
        default="fashion-mnist",
        help="fashion-mnist | emoji | PATH to an image folder with labels (metadata.jsonl)",
    )
    p.add_argument("--out", required=True, help="directory to write the classifier into")
    p.add_argument("--steps", type=flags.int_in(1, 10**9), default=2000, help="training steps")
    p.add_argument("--batch-size", type=flags.positive, default=128, help="images per step")
    p.add_argument("--lr", type=flags.float_in(0.0, 1.0), default=3e-4, help="AdamW learning rate")
    p.add_argument(
        "--schedule",
        default="cosine",
        choices=SCHEDULE_NAMES,
        help="noise schedule of the training images (any model can use the classifier: "
        "its inputs are matched by log-SNR)",
    )
    p.add_argument(
        "--image-size",
        type=flags.positive,
        default=28,
        help="image size (the model's to be guided)",
    )
    p.add_argument(
        "--seed", type=flags.seed, default=0, help="seed (initialisation, batches, noise)"
    )
    flags.add_device_flag(p)
    p.add_argument("--overwrite", action="store_true", help="replace a classifier in --out")
    p.add_argument(
        "--no-progress",
        action="store_true",
        help="no progress bar: print a one-line log every --log-every steps instead (also "
        "printed when stdout is not a terminal)",
    )
    p.add_argument(
        "--log-every", type=flags.positive, default=100, metavar="K", help="steps per log line"
    )
    p.set_defaults(func=run)


def run(args) -> int:
    out = check_out_dir(args.out, overwrite=args.overwrite)
    data = load_dataset(args.data, image_size=args.image_size)
    classifier, loss = train_noisy_classifier(
        data,
        get_schedule(args.schedule),
        steps=args.steps,
        batch_size=args.batch_size,
        lr=args.lr,
        seed=args.seed,
        device=resolve_device(args.device),
        progress=not args.no_progress,
        log_every=args.log_every if lines_on_stdout(not args.no_progress) else 0,
    )
    meta = {"data": data.name, "steps": args.steps, "final_loss": loss, "seed": args.seed}
    save_noisy_classifier(classifier, out, metadata=meta)
    print(f"classifier saved in {out} (final loss {loss:.4f})")
    return 0
