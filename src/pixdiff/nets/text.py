"""Text conditioning: a byte-level tokenizer, a small Transformer text encoder trained with the
denoiser, the builder that picks an encoder, and the network wrapper that carries one.

The tokenizer is byte-level (ByT5, Xue et al. 2022): the UTF-8 bytes of the lower-cased prompt
between BOS and EOS. It needs no vocabulary file and tokenizes any word, seen or not, which
suits small captioned sets such as the emoji names, where a word vocabulary would be a few
hundred entries and every new word at sampling time would be unknown.

What a prompt becomes (a Cond of ``context``, ``context_mask`` and ``pooled``) and the
:class:`~pixdiff.nets.prompts.PromptEncoder` interface are in :mod:`pixdiff.nets.prompts`. A
frozen Hugging Face encoder (T5, CLIP) is the other encoder; see :mod:`pixdiff.nets.hf_text`.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from pixdiff.conditioning import Cond
from pixdiff.nets.hf_text import HFTextEncoder
from pixdiff.nets.layers import SelfAttention, mlp
from pixdiff.nets.prompts import PromptEncoder, Tokens, check_prompts, masked_mean, warn_truncated

PAD, BOS, EOS = 0, 1, 2
BYTE_OFFSET = 3  # byte b has id b + 3
VOCAB_SIZE = BYTE_OFFSET + 256


def normalize_prompt(prompt: str) -> str:
    """Lower-case and collapse whitespace: "Red  Apple " -> "red apple"."""
    return " ".join(prompt.lower().split())


class ByteTokenizer:
    """UTF-8 bytes of the normalised prompt between BOS and EOS (ByT5, Xue et al. 2022).

    Ids: PAD 0, BOS 1, EOS 2, byte b -> b + 3. A batch is right-padded to its longest prompt
    (or to ``pad_to``); a prompt longer than ``max_length`` tokens keeps its first
    ``max_length - 2`` bytes and its EOS, with one warning per call.
    """

    def __init__(self, max_length: int):
        if max_length < 3:
            raise ValueError(f"max_length must be >= 3 (BOS, a byte, EOS), got {max_length}")
        self.max_length = max_length

    def __call__(self, prompts: Sequence[str], *, pad_to: int = 0, warn: bool = True) -> Tokens:
        """Tokenize a batch; ``pad_to`` pads to at least that many tokens (<= max_length)."""
        prompts = check_prompts(prompts)
        if pad_to > self.max_length:
            raise ValueError(f"pad_to={pad_to} exceeds max_length={self.max_length}")
        encoded = [normalize_prompt(p).encode("utf-8") for p in prompts]
        if warn:
            warn_truncated(prompts, [len(b) + 2 for b in encoded], self.max_length)
        rows = [[BOS, *(b + BYTE_OFFSET for b in e[: self.max_length - 2]), EOS] for e in encoded]
        length = max([pad_to, *map(len, rows)])
        ids = torch.full((len(rows), length), PAD, dtype=torch.long)
        for i, row in enumerate(rows):
            ids[i, : len(row)] = torch.tensor(row)
        return Tokens(ids, ids != PAD)

    @staticmethod
    def decode(ids: Tensor) -> str:
        """(L,) ids -> the normalised prompt (special tokens dropped)."""
        data = bytes(int(i) - BYTE_OFFSET for i in ids.tolist() if i >= BYTE_OFFSET)
        return data.decode("utf-8", errors="replace")


class EncoderBlock(nn.Module):
    """Pre-LN Transformer encoder layer (Vaswani et al. 2017; pre-LN as in GPT-2 and Xiong et
    al. 2020): x + attn(LN(x)), then x + MLP(LN(x)); padding keys are masked out."""

    def __init__(self, width: int, *, heads: int):
        super().__init__()
        self.norm1 = nn.LayerNorm(width)
        self.attn = SelfAttention(width, num_heads=heads)
        self.norm2 = nn.LayerNorm(width)
        self.mlp = mlp(width, 4 * width)

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        """x (N, L, D), mask (N, L) bool -> (N, L, D)."""
        x = x + self.attn(self.norm1(x), mask)
        return x + self.mlp(self.norm2(x))


class TextEncoder(PromptEncoder):
    """Byte-level Transformer encoder trained from scratch with the denoiser.

    Token and learned position embeddings (BERT, Devlin et al. 2019), ``layers`` pre-LN
    encoder blocks with masked self-attention, and a final LayerNorm (GPT-2 ``ln_f``, T5
    ``final_layer_norm``). Padding is right-padding and attends nowhere, so a real token's
    embedding does not depend on how far its batch is padded.
    """

    def __init__(self, *, width: int, layers: int, heads: int, max_length: int):
        super().__init__()
        self.width, self.max_length = width, max_length
        self.tokenizer = ByteTokenizer(max_length)
        self.token_embed = nn.Embedding(VOCAB_SIZE, width)
        self.pos_embed = nn.Parameter(torch.empty(max_length, width))
        self.blocks = nn.ModuleList(EncoderBlock(width, heads=heads) for _ in range(layers))
        self.norm = nn.LayerNorm(width)
        nn.init.normal_(self.token_embed.weight, std=0.02)  # BERT / GPT-2 initialisation
        nn.init.normal_(self.pos_embed, std=0.02)

    def tokenize(self, prompts: Sequence[str], *, warn: bool = True) -> Tokens:
        return self.tokenizer(prompts, warn=warn)

    def forward(self, tokens: Tokens) -> Cond:
        """Tokens (N, L) -> Cond(context (N, L, width), context_mask (N, L), pooled (N, width))."""
        ids, mask = tokens
        if ids.shape[1] > self.max_length:
            raise ValueError(f"{ids.shape[1]} tokens exceed max_length={self.max_length}")
        h = self.token_embed(ids) + self.pos_embed[: ids.shape[1]]  # (N, L, D)
        for block in self.blocks:
            h = block(h, mask)
        h = self.norm(h)
        return Cond(context=h, context_mask=mask, pooled=masked_mean(h, mask))


def build_text_encoder(
    *, encoder: str, width: int, layers: int, heads: int, max_length: int
) -> PromptEncoder:
    """The builtin encoder (``encoder="builtin"``), or a frozen Hugging Face one when
    ``encoder`` is the path of its folder (``layers`` and ``heads`` are then unused).

    Args:
        encoder: ``"builtin"`` or a local folder holding a Hugging Face text encoder.
        width: context width D the denoiser sees.
        layers, heads: depth and attention heads of the builtin encoder.
        max_length: the longest token sequence, BOS and EOS included.
    """
    if encoder == "builtin":
        return TextEncoder(width=width, layers=layers, heads=heads, max_length=max_length)
    return HFTextEncoder(encoder, width=width, max_length=max_length)


class TextConditionedNet(nn.Module):
    """A denoising network together with the text encoder whose output it is conditioned on.

    Called exactly like the network, ``(x_t, c_noise, cond)``, with ``cond`` from
    :meth:`encode`: prompts are encoded once per batch, not once per sampler step. Holding both
    in one module lets training, EMA and checkpoints treat them as one model (state-dict keys
    ``net.*`` and ``text_encoder.*``), as LDM's ``cond_stage_model`` (Rombach et al. 2022).
    """

    def __init__(self, net: nn.Module, text_encoder: PromptEncoder):
        super().__init__()
        self.net = net
        self.text_encoder = text_encoder

    @property
    def config(self):
        """The network's config (the encoder's is the run's ``text`` section)."""
        return self.net.config

    def forward(self, x: Tensor, c_noise: Tensor, cond: Cond | None = None) -> Tensor:
        return self.net(x, c_noise, cond)

    def encode(self, prompts: Sequence[str], *, warn: bool = True) -> Cond:
        return self.text_encoder.encode(prompts, warn=warn)

    def required_cond(self) -> list[str]:
        return self.net.required_cond()


def text_encoder_of(model: nn.Module) -> PromptEncoder | None:
    """The text encoder of a text-conditioned net or of the Denoiser wrapping one, else None."""
    for candidate in (model, getattr(model, "net", None)):
        if isinstance(candidate, TextConditionedNet):
            return candidate.text_encoder
    return None
