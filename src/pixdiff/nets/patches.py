"""Patch embeddings of a pixel Transformer: the plain linear one of ViT / DiT and the low-rank
bottleneck of JiT.

A patch embedding is a linear map of each p x p x C patch to the hidden width, written as a
strided convolution (ViT, Dosovitskiy et al. 2021, Eq. 1; DiT, Peebles & Xie 2023). JiT (Li &
He 2025, "bottleneck patch embedding") factors it through ``bottleneck_dim`` channels,
patch -> bottleneck (no bias) -> hidden, so that a large patch (p^2 C above the hidden width)
enters through a low-rank map; in their ablation a small bottleneck does not hurt x-prediction
and can help it.
"""

from __future__ import annotations

from torch import nn


def patch_embedding(
    in_channels: int, hidden_size: int, patch_size: int, *, bottleneck_dim: int = 0
) -> nn.Module:
    """(N, in_channels, H, W) -> (N, hidden_size, H / p, W / p): one strided convolution, or
    with ``bottleneck_dim`` > 0 the strided convolution to ``bottleneck_dim`` channels (no bias)
    followed by a 1x1 convolution to ``hidden_size`` (JiT's ``BottleneckPatchEmbed``)."""
    p = patch_size
    if not bottleneck_dim:
        return nn.Conv2d(in_channels, hidden_size, p, p)
    return nn.Sequential(
        nn.Conv2d(in_channels, bottleneck_dim, p, p, bias=False),
        nn.Conv2d(bottleneck_dim, hidden_size, 1),
    )


def init_patch_embedding(embedding: nn.Module) -> None:
    """Initialise each convolution of a patch embedding like a linear layer: Xavier-uniform over
    its flattened weight, zero bias (DiT's and JiT's ``initialize_weights``)."""
    for conv in embedding.modules():
        if isinstance(conv, nn.Conv2d):
            nn.init.xavier_uniform_(conv.weight.view(conv.weight.shape[0], -1))
            if conv.bias is not None:
                nn.init.zeros_(conv.bias)


def patch_embedding_macs(
    in_channels: int, hidden_size: int, patch_size: int, *, bottleneck_dim: int = 0
) -> int:
    """Multiply-accumulates per token of :func:`patch_embedding` (biases not counted)."""
    patch = patch_size * patch_size * in_channels
    if not bottleneck_dim:
        return patch * hidden_size
    return patch * bottleneck_dim + bottleneck_dim * hidden_size
