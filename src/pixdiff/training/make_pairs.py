"""``pixdiff make-pairs RUN --scorer ...``: preference pairs from AI feedback, offline (as the
AI-feedback variant of Diffusion-DPO, Wallace et al. 2024, Sec. 6.3).

For each condition (a class of a class model, a prompt of a text model) the run draws k images,
a scorer ranks them, and the i-th best is paired with the i-th worst (k // 2 pairs, the widest
margins first). The scorers, higher is better:

- ``classifier``: the shipped Fashion-MNIST classifier's probability of the requested class
  (a class model whose class names are the classifier's);
- ``emoji-features``: the cosine similarity, in the shipped emoji network's features, between a
  sample and the real emoji whose caption is the prompt (a text model on emoji captions);
- ``FILE.pt``: a user's TorchScript module, ``module(images) -> (N,)`` scores, images
  (N, C, H, W) in [-1, 1] (or ``(N, K)`` logits of a class model: the requested class's).

The output folder holds the images (PNG) and ``pairs.jsonl`` for ``pixdiff align``.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor

from pixdiff.checkpoint import LoadedModel
from pixdiff.data import FASHION_MNIST_CLASSES, load_dataset, to_model_space
from pixdiff.eval.classifier import EMOJI_DIR
from pixdiff.eval.features import DEFAULT_EXTRACTOR, load_extractor
from pixdiff.images import save_png
from pixdiff.pipelines.generate import generate
from pixdiff.pipelines.steering import Steering
from pixdiff.sampling import Sampling

Scorer = Callable[[Tensor, object], Tensor]  # (images, the condition) -> (N,) scores
SCORERS = ("classifier", "emoji-features")


def classifier_scorer(model: LoadedModel, device) -> Scorer:
    """The shipped classifier's probability of the requested class id."""
    names = list(FASHION_MNIST_CLASSES)
    if not model.num_classes or (model.class_names and model.class_names != names):
        raise ValueError(
            "--scorer classifier takes a class model with the Fashion-MNIST classes; use "
            "emoji-features or a TorchScript FILE.pt for this run"
        )
    extractor = load_extractor(DEFAULT_EXTRACTOR, device=device)

    def score(x: Tensor, label: int) -> Tensor:
        return extractor.logits(x).softmax(-1)[:, label]

    return score


def emoji_scorer(model: LoadedModel, device) -> Scorer:
    """Cosine similarity to the real emoji of the prompt, in the emoji network's features."""
    if model.text_encoder is None:
        raise ValueError("--scorer emoji-features takes a text-conditioned (emoji) run")
    extractor = load_extractor(str(EMOJI_DIR), device=device)
    emoji = load_dataset("emoji", image_size=extractor.input_shape[-1], split="all")
    lookup = {c.lower(): i for i, c in enumerate(emoji.captions)}

    def score(x: Tensor, prompt: str) -> Tensor:
        if prompt.lower() not in lookup:
            raise ValueError(f"--scorer emoji-features: no emoji is captioned {prompt!r}")
        i = lookup[prompt.lower()]
        real = extractor.features(to_model_space(emoji.images[i : i + 1]))
        return F.cosine_similarity(extractor.features(x), real, dim=-1)

    return score


def torchscript_scorer(path: str, model: LoadedModel, device) -> Scorer:
    """A user's TorchScript module (see the module doc); loading runs no pickle."""
    file = Path(path).expanduser()
    if not file.is_file():
        raise FileNotFoundError(f"--scorer {path}: no such file (or: {', '.join(SCORERS)})")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            module = torch.jit.load(str(file), map_location=device).eval()
    except (RuntimeError, ValueError):
        raise ValueError(f"--scorer {path} is not a TorchScript file (torch.jit.save)") from None

    def score(x: Tensor, condition) -> Tensor:
        with torch.no_grad():
            out = module(x.to(device)).float().cpu()
        if out.ndim == 2 and isinstance(condition, int):
            out = out[:, condition]
        if out.shape != (len(x),):
            raise ValueError(f"--scorer {path} returned {tuple(out.shape)}, not ({len(x)},)")
        return out

    return score


def scorer_for(spec: str, model: LoadedModel, device) -> Scorer:
    if spec == "classifier":
        return classifier_scorer(model, device)
    if spec == "emoji-features":
        return emoji_scorer(model, device)
    return torchscript_scorer(spec, model, device)


def conditions(model: LoadedModel, prompts: Sequence[str] | None) -> list:
    """Class ids (every class) of a class model, or ``prompts`` of a text model."""
    if model.text_encoder is not None:
        if not prompts:
            raise ValueError("a text-conditioned run needs --prompt TEXT (repeat) or --prompts")
        return list(prompts)
    if model.num_classes:
        return list(range(model.num_classes))
    raise ValueError("make-pairs needs a class or text-conditioned run (pairs are per condition)")


def make_pairs(
    model: LoadedModel, out: str | Path, *, scorer: str, k: int = 4,
    prompts: Sequence[str] | None = None, steps: int = 25, seed: int = 0, device="cpu",
) -> Path:  # fmt: skip
    """Draw k images per condition, rank them by ``scorer``, write the pairs into ``out``
    (a new or empty folder); returns the path of pairs.jsonl."""
    if k < 2:
        raise ValueError(f"-k must be at least 2 (a pair needs two images), got {k}")
    out = Path(out)
    if out.exists() and any(out.iterdir()):
        raise FileExistsError(f"{out} exists and is not empty; give a new folder")
    score = scorer_for(scorer, model, device)
    rows = []
    for j, condition in enumerate(conditions(model, prompts)):
        text = isinstance(condition, str)
        steering = Steering(prompts=condition) if text else Steering(classes=condition)
        x = generate(
            model, steering, Sampling(steps=steps), n=k, seed=seed + j * k, device=device
        ).clamp(-1, 1)
        order = torch.argsort(score(x, condition), descending=True).tolist()
        names = [f"{j:04d}_{i}.png" for i in range(k)]
        for i, name in enumerate(names):
            save_png(x[i], out / name)
        key = "prompt" if text else "class"
        value = model.class_names[condition] if not text and model.class_names else condition
        for a in range(k // 2):
            rows.append({key: value, "chosen": names[order[a]], "rejected": names[order[-1 - a]]})
    path = out / "pairs.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


__all__ = ["SCORERS", "make_pairs"]
