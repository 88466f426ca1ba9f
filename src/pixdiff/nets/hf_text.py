"""A frozen Hugging Face text encoder (T5 encoder, CLIP text model, ...) from a local folder.

Imagen conditions on a frozen T5-XXL (Saharia et al. 2022, Sec. 2.1), Stable Diffusion on a
frozen CLIP text model (Rombach et al. 2022). Here the encoder's last hidden states go through
a trained linear projection to the denoiser's context width; only that projection is a
parameter of the pixdiff model (and of its checkpoints). The run's config records the folder,
which must still hold the model when the run is loaded. Nothing is downloaded: the folder is
read with ``local_files_only=True`` and the weights must be safetensors (no pickle).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from torch import Tensor, nn

from pixdiff.conditioning import Cond
from pixdiff.nets.prompts import PromptEncoder, Tokens, check_prompts, masked_mean, warn_truncated

TOKENIZER_FILES = ("tokenizer.json", "spiece.model", "tokenizer.model", "vocab.json", "vocab.txt")


def check_encoder_dir(path: str | Path) -> Path:
    """The folder, or a one-line FileNotFoundError naming what it lacks."""
    path = Path(path).expanduser()
    if not path.is_dir():
        raise FileNotFoundError(f"text encoder folder {path} does not exist")
    missing = []
    if not (path / "config.json").is_file():
        missing.append("config.json")
    if not any(path.glob("*.safetensors")):
        missing.append("*.safetensors weights")
    if not any((path / name).is_file() for name in TOKENIZER_FILES):
        missing.append(f"a tokenizer (one of {', '.join(TOKENIZER_FILES)})")
    if missing:
        raise FileNotFoundError(
            f"text encoder folder {path} lacks {', '.join(missing)}; write the model there with "
            "model.save_pretrained(folder) and its tokenizer with tokenizer.save_pretrained(folder)"
        )
    return path


def load_hf_encoder(path: Path):
    """(tokenizer, model) read from ``path`` with transformers, offline, safetensors only."""
    try:
        from transformers import AutoModelForTextEncoding, AutoTokenizer
    except ImportError:
        raise ValueError(
            "a Hugging Face text encoder needs transformers: pip install 'pixdiff[text]'"
        ) from None
    try:
        tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
        model = AutoModelForTextEncoding.from_pretrained(
            path, local_files_only=True, use_safetensors=True
        )
    except (OSError, ValueError, KeyError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ValueError(f"cannot load a text encoder from {path}: {first}") from None
    return tokenizer, model


class Frozen:
    """Holds a module outside the parameter tree: not trained, not in ``state_dict``, and
    shared, not copied, by ``copy.deepcopy`` (so the EMA model reuses the same encoder)."""

    def __init__(self, module: nn.Module):
        self.module = module.eval().requires_grad_(False)

    def __deepcopy__(self, memo) -> Frozen:
        return self


class HFTextEncoder(PromptEncoder):
    """A frozen Hugging Face encoder plus a trained projection to ``width``.

    Pooled embedding: the masked mean of the projected tokens, as for the builtin encoder.
    """

    def __init__(self, path: str | Path, *, width: int, max_length: int):
        super().__init__()
        self.path = check_encoder_dir(path)
        self.tokenizer, model = load_hf_encoder(self.path)
        self.frozen = Frozen(model)
        self.width, self.max_length = width, max_length
        self.proj = nn.Linear(model.config.hidden_size, width)

    def tokenize(self, prompts: Sequence[str], *, warn: bool = True) -> Tokens:
        prompts = check_prompts(prompts)
        if warn:
            lengths = [len(ids) for ids in self.tokenizer(prompts)["input_ids"]]
            warn_truncated(prompts, lengths, self.max_length)
        batch = self.tokenizer(
            prompts, padding="longest", truncation=True, max_length=self.max_length,
            return_tensors="pt",
        )  # fmt: skip
        return Tokens(batch["input_ids"], batch["attention_mask"].bool())

    def forward(self, tokens: Tokens) -> Cond:
        """Tokens (N, L) -> Cond(context (N, L, width), context_mask (N, L), pooled (N, width))."""
        ids, mask = tokens
        model = self.frozen.module.to(ids.device)  # a no-op once it is there
        with torch.no_grad():
            hidden: Tensor = model(input_ids=ids, attention_mask=mask.long()).last_hidden_state
        h = self.proj(hidden.to(self.proj.weight.dtype))  # (N, L, width)
        return Cond(context=h, context_mask=mask, pooled=masked_mean(h, mask))
