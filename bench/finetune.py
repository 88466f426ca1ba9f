"""Fine-tuning benchmark (issue #19): DreamBooth with LoRA against full fine-tuning on the
shipped emoji model, and Diffusion-DPO with classifier feedback on the Fashion-MNIST model.

Part 1, DreamBooth. Each of --subjects held-out emoji (the test split: never trained on) is
taught from its one image under small augmentations (shifts of up to 2 px, a horizontal flip)
as "a sks emoji", with prior preservation of "an emoji", once by LoRA (--lora-rank) and once in
full. Samples of "a sks emoji" from the base and from each fine-tuned model are ranked against
every emoji (train and test) by cosine similarity in the emoji network's features: the subject's
rank (1 = nearest) and its percentile; lower is closer to the subject. Also the parameters each
method trains and the median subject similarity of LoRA relative to full fine-tuning.

Part 2, DPO. `make-pairs` with the shipped classifier (k images per class), then `align` with
LoRA; the share of samples at guidance 1 that the classifier puts in their requested class, base
against aligned, and their FD against the Fashion-MNIST test set when there are enough samples
(more than the classifier's feature width).

--tiny runs everything at toy size (1 subject, 2 steps, a few samples) to check the script end
to end; its numbers mean nothing. Writes results.json into --out.

    .venv/bin/python bench/finetune.py --out docs/bench/finetune            # the full benchmark
    .venv/bin/python bench/finetune.py --tiny --out /tmp/finetune-tiny      # end to end, toy
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import torch

from pixdiff.checkpoint import load, read_tensors
from pixdiff.config import OptimConfig, RunConfig
from pixdiff.data import load_dataset, to_model_space
from pixdiff.eval.classifier import EMOJI_DIR
from pixdiff.eval.features import load_extractor
from pixdiff.eval.fid import FeatureStats, frechet_distance
from pixdiff.formats.diffusers_import import load_model
from pixdiff.images import save_png
from pixdiff.nets.lora import LoRAConfig
from pixdiff.pipelines.generate import generate
from pixdiff.pipelines.steering import Steering
from pixdiff.sampling import Sampling
from pixdiff.shipped import shipped_run
from pixdiff.training.align import align
from pixdiff.training.dreambooth import finetune
from pixdiff.training.make_pairs import make_pairs

PROMPT, CLASS_PROMPT = "a sks emoji", "an emoji"


def subject_folder(image: torch.Tensor, folder: Path) -> Path:
    """The subject's image (C, H, W) uint8 under shifts of -2..2 px and a flip, as PNGs."""
    folder.mkdir(parents=True, exist_ok=True)
    x = to_model_space(image[None])[0]
    views = [x.roll(shifts=(dy, dx), dims=(1, 2)) for dy in (-2, 0, 2) for dx in (-2, 0, 2)]
    for i, view in enumerate([*views, x.flip(-1)]):
        save_png(view, folder / f"{i}.png")
    return folder


def subject_ranks(model, extractor, bank: torch.Tensor, subject: int, n: int, steps: int):
    """The subject's rank among all emoji for each of n samples of PROMPT (1 = nearest)."""
    x = generate(model, Steering(prompts=PROMPT), Sampling(steps=steps), n=n, seed=0)
    feats = torch.nn.functional.normalize(extractor.features(x.clamp(-1, 1)), dim=-1)
    sims = feats @ bank.T  # (n, emoji)
    return (sims > sims[:, subject : subject + 1]).sum(1).add(1).tolist(), sims[:, subject]


def dreambooth(args, out: Path) -> dict:
    base_name = str(shipped_run("emoji"))
    base = load(base_name)
    size = base.image_shape[-1]
    extractor = load_extractor(str(EMOJI_DIR))
    emoji = load_dataset("emoji", image_size=size, split="all")
    held = load_dataset("emoji", image_size=size, split="test")
    bank = torch.nn.functional.normalize(
        extractor.features(to_model_space(emoji.images)), dim=-1
    )  # (emoji, D)
    optim = OptimConfig(
        batch_size=args.batch, lr=1e-4, warmup_steps=min(20, args.steps), ema_decay=0.99
    )
    run = RunConfig(steps=args.steps, sample_every=0, checkpoint_every=0, log_every=10)
    results = []
    for s in range(args.subjects):
        caption = held.captions[s * (len(held) // args.subjects)]
        index = emoji.captions.index(caption)
        data = subject_folder(emoji.images[index], out / f"subject{s}")
        row = {"caption": caption, "emoji": len(emoji)}
        base_ranks, base_sim = subject_ranks(
            base, extractor, bank, index, args.n, args.sample_steps
        )
        row["base"] = {"ranks": base_ranks, "similarity": float(base_sim.median())}
        for method, lora in (("lora", LoRAConfig(rank=args.lora_rank)), ("full", None)):
            tuned = out / f"{method}{s}"
            lr = {"lr": 1e-5} if lora is None else {}
            started = time.perf_counter()
            finetune(
                base_name,
                tuned,
                data=str(data),
                optim=OptimConfig(**{**optim.__dict__, **lr}),
                run=run,
                lora=lora,
                instance_prompt=PROMPT,
                class_prompt=CLASS_PROMPT,
                prior_images=args.prior_images,
                progress=False,
            )
            seconds = time.perf_counter() - started
            name = "lora.safetensors" if lora else "model.safetensors"
            params = sum(t.numel() for t in read_tensors(tuned / name)[0].values())
            ranks, sim = subject_ranks(
                load_model(tuned), extractor, bank, index, args.n, args.sample_steps
            )
            row[method] = {
                "ranks": ranks,
                "similarity": float(sim.median()),
                "trained_parameters": params,
                "seconds": round(seconds, 1),
            }
        row["lora_params_share"] = (
            row["lora"]["trained_parameters"] / row["full"]["trained_parameters"]
        )
        row["lora_similarity_vs_full"] = row["lora"]["similarity"] / row["full"]["similarity"]
        for key in ("base", "lora", "full"):
            ranks = torch.tensor(row[key]["ranks"], dtype=torch.float)
            row[key]["median_rank_percent"] = float(100 * ranks.median() / len(emoji))
        results.append(row)
        print(json.dumps({k: row[k] for k in ("caption", "lora_params_share")}))
    return {"subjects": results}


def accuracy_and_fd(model, classifier, real: FeatureStats | None, n: int, steps: int):
    """Share of samples at guidance 1 classified as their class, and FD (None if too few)."""
    k = model.num_classes
    labels = torch.arange(n * k) % k
    x = generate(model, Steering(classes=labels, guidance=1.0), Sampling(steps=steps), n=n * k)
    feats, logits = classifier.embed(x.clamp(-1, 1))
    accuracy = float((logits.argmax(-1) == labels).float().mean())
    fd = None
    if real is not None and len(feats) > feats.shape[1]:
        fd = frechet_distance(FeatureStats.from_features(feats), real)
    return accuracy, fd


def dpo(args, out: Path) -> dict:
    base_name = str(shipped_run("fashion"))
    base = load(base_name)
    classifier = load_extractor("fashion-classifier")
    test = load_dataset("fashion-mnist", image_size=28, split="test")
    real = FeatureStats.from_features(classifier.features(to_model_space(test.images[: args.real])))
    pairs = make_pairs(base, out / "pairs", scorer="classifier", k=args.k, steps=args.sample_steps)
    aligned = align(
        base_name,
        out / "aligned",
        pairs=str(pairs),
        progress=False,
        beta=args.beta,
        optim=OptimConfig(
            batch_size=args.batch, lr=1e-4, warmup_steps=min(20, args.steps), ema_decay=0.99
        ),
        run=RunConfig(steps=args.steps, sample_every=0, checkpoint_every=0, log_every=10),
        lora=LoRAConfig(rank=args.lora_rank),
    )
    before = accuracy_and_fd(base, classifier, real, args.n, args.sample_steps)
    after = accuracy_and_fd(load_model(aligned), classifier, real, args.n, args.sample_steps)
    return {
        "base": {"accuracy": before[0], "fd": before[1]},
        "aligned": {"accuracy": after[0], "fd": after[1]},
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--tiny", action="store_true", help="toy sizes: checks the script only")
    p.add_argument("--subjects", type=int, default=5)
    p.add_argument("--steps", type=int, default=400, help="fine-tuning steps")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--lora-rank", type=int, default=8)
    p.add_argument("--prior-images", type=int, default=64)
    p.add_argument("--n", type=int, default=32, help="samples per subject / per class")
    p.add_argument("--sample-steps", type=int, default=50)
    p.add_argument("--k", type=int, default=8, help="images per class for make-pairs")
    p.add_argument("--beta", type=float, default=2500.0)
    p.add_argument("--real", type=int, default=10000, help="real test images for FD")
    args = p.parse_args()
    if args.tiny:
        args.subjects, args.steps, args.batch, args.prior_images = 1, 2, 4, 2
        args.n, args.sample_steps, args.k, args.real = 2, 2, 2, 200
    torch.manual_seed(0)
    started = time.perf_counter()
    results = {
        "dreambooth": dreambooth(args, args.out),
        "dpo": dpo(args, args.out),
        "settings": vars(args) | {"out": str(args.out)},
        "torch": torch.__version__,
        "cpu": platform.machine(),
        "wall_s": round(time.perf_counter() - started, 1),
    }
    (args.out / "results.json").write_text(json.dumps(results, indent=2, default=str))
    print(json.dumps(results["dpo"]))


if __name__ == "__main__":
    main()
