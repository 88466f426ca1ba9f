"""What every prompt encoder shares: a padded batch of tokens, the :class:`PromptEncoder`
interface (prompts -> Cond), prompt checks and the masked-mean pooling.

A prompt becomes a :class:`~pixdiff.conditioning.Cond` with three fields, as in Imagen (Saharia
et al. 2022, Sec. 2.4): ``context`` (N, L, D), the token embeddings the network attends to
through cross-attention; ``context_mask`` (N, L), True for real tokens; and ``pooled`` (N, D),
their masked mean, which the network adds to its timestep embedding. Mean pooling over the
real tokens (not the EOS token) keeps ``pooled`` independent of how much padding a batch has.
The builtin encoder (:mod:`pixdiff.nets.text`) and a frozen Hugging Face one
(:mod:`pixdiff.nets.hf_text`) both implement the interface.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import NamedTuple

import torch
from torch import Tensor, nn

from pixdiff.conditioning import Cond


class Tokens(NamedTuple):
    """A padded batch of token ids: ids (N, L) int64 and mask (N, L) bool (True = real)."""

    ids: Tensor
    mask: Tensor

    def to(self, device: torch.device | str) -> Tokens:
        return Tokens(self.ids.to(device), self.mask.to(device))


def check_prompts(prompts: Sequence[str]) -> list[str]:
    """``prompts`` as a list of strings; a bare string is an error (it would be split to chars)."""
    if isinstance(prompts, str) or not all(isinstance(p, str) for p in prompts):
        raise ValueError(f"prompts must be a list of strings, got {prompts!r}")
    return list(prompts)


def warn_truncated(prompts: Sequence[str], lengths: Sequence[int], max_length: int) -> None:
    """One warning for all the prompts of a call whose token count exceeds ``max_length``,
    counting distinct non-empty prompts (a batch repeats a prompt per image and adds the empty
    one for guidance)."""
    sizes = {p: n for p, n in zip(prompts, lengths, strict=True) if p}
    long = [p for p, n in sizes.items() if n > max_length]
    if long:
        warnings.warn(
            f"{len(long)} of {len(sizes)} distinct prompt(s) exceed the text encoder's max_length="
            f"{max_length} tokens and were truncated (first: {long[0]!r}); raise "
            "text.max_length when training to keep longer prompts",
            stacklevel=3,
        )


def masked_mean(h: Tensor, mask: Tensor) -> Tensor:
    """Mean of h (N, L, D) over the positions where mask (N, L) is True -> (N, D); 0 if none."""
    weights = mask.to(h.dtype)[..., None]  # (N, L, 1)
    return (h * weights).sum(1) / weights.sum(1).clamp_min(1)


class PromptEncoder(nn.Module):
    """Prompts -> Cond(context, context_mask, pooled). Subclasses give ``tokenize`` and
    ``forward(tokens)``; ``width`` is D and ``max_length`` the longest token sequence."""

    width: int
    max_length: int

    def tokenize(self, prompts: Sequence[str], *, warn: bool = True) -> Tokens:
        raise NotImplementedError

    def encode(self, prompts: Sequence[str], *, warn: bool = True) -> Cond:
        """Tokenize and encode on the encoder's device."""
        device = next(self.parameters()).device
        return self(self.tokenize(prompts, warn=warn).to(device))
