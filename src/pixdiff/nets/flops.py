"""Forward FLOPs per image (per clip, for a video network) of a network: counted analytically
for the DiT family and measured with ``torch.utils.flop_counter`` for any network.

Both count the matrix products (linear layers, convolutions, the two products of attention) at
2 FLOPs per multiply-accumulate and leave out normalisation, activations, softmax and RoPE,
which are a few percent at most. The DiT and JiT papers report multiply-accumulates ("Gflops",
counted with fvcore): divide by 2 to compare (Peebles & Xie 2023, Table 4; Li & He 2025).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from pixdiff.conditioning import Cond
from pixdiff.nets.checks import input_channels
from pixdiff.nets.dit import DiTConfig
from pixdiff.nets.patches import patch_embedding_macs
from pixdiff.nets.video_dit import VideoDiTConfig


def dit_flops(
    config: DiTConfig, image_size: int | None = None, *, context_len: int = 0
) -> dict[str, int]:
    """Forward FLOPs of one image through a DiT (or JiT-style DiT), by part and in total.

    Per image with T = (image_size / p)^2 tokens of width D, MLP width M = D * mlp_ratio and
    context length L, the multiply-accumulates are: patch embedding T p^2 C D (or through the
    bottleneck b: T (p^2 C b + b D)); conditioning MLPs 256 D + D^2 each; per block adaLN 6 D^2,
    qkv and output projections 4 T D^2, attention 2 T^2 D (scores and weighted sum), MLP 2 T D M,
    and with cross-attention 2 T D^2 + 2 L D_ctx D + 2 T L D; final layer 2 D^2 + T D p^2 C_out.

    Args:
        config: the network's config.
        image_size: side of the square image (default: ``config.image_size``).
        context_len: tokens of the cross-attention context (needed with ``context_dim``).

    Returns:
        FLOPs (2 per multiply-accumulate) of ``embed``, ``cond``, ``attention`` (projections),
        ``attention_scores``, ``mlp``, ``cross_attention``, ``adaln``, ``final`` and ``total``.
    """
    c, size = config, image_size or config.image_size
    if size % c.patch_size:
        raise ValueError(f"image_size {size} is not divisible by patch_size {c.patch_size}")
    if c.context_dim and context_len < 1:
        raise ValueError("a cross-attention DiT needs context_len >= 1 to count its FLOPs")
    t, d, p = (size // c.patch_size) ** 2, c.hidden_size, c.patch_size
    embedders = 1 + (c.low_res_channels > 0) + c.guidance_embed
    cross = 2 * t * d * d + 2 * context_len * c.context_dim * d + 2 * t * context_len * d
    macs = {
        "embed": t * patch_embedding_macs(input_channels(c), d, p, bottleneck_dim=c.bottleneck_dim),
        "cond": embedders * (256 * d + d * d) + c.pooled_dim * d,
        "attention": c.depth * 4 * t * d * d,
        "attention_scores": c.depth * 2 * t * t * d,
        "mlp": c.depth * 2 * t * d * int(d * c.mlp_ratio),
        "cross_attention": c.depth * cross if c.context_dim else 0,
        "adaln": c.depth * 6 * d * d + 2 * d * d,
        "final": t * d * p * p * c.out_channels,
    }
    flops = {name: 2 * value for name, value in macs.items()}
    return {**flops, "total": sum(flops.values())}


def video_dit_flops(
    config: VideoDiTConfig,
    frames: int | None = None,
    image_size: int | None = None,
    *,
    context_len: int = 0,
) -> dict[str, int]:
    """Forward FLOPs of one clip through a space-time DiT (:mod:`.video_dit`), by part.

    The F frames each cost :func:`dit_flops`; each temporal block adds, over the T patch
    positions' sequences of F frames, the multiply-accumulates adaLN 6 T D^2 (one modulation per
    sequence), projections 4 T F D^2, attention 2 T F^2 D and MLP 2 T F D M (divided space-time
    attention, Bertasius et al. 2021, Sec. 3: the temporal part is linear in T, quadratic in F).

    Returns:
        F times each of :func:`dit_flops`'s parts, ``temporal_adaln``,
        ``temporal_attention``, ``temporal_attention_scores``, ``temporal_mlp`` and ``total``.
    """
    f, c = frames or config.num_frames, config
    spatial = dit_flops(c.image_config(), image_size, context_len=context_len)
    t, d = ((image_size or c.image_size) // c.patch_size) ** 2, c.hidden_size
    macs = {
        "temporal_adaln": c.depth * t * 6 * d * d,
        "temporal_attention": c.depth * 4 * t * f * d * d,
        "temporal_attention_scores": c.depth * 2 * t * f * f * d,
        "temporal_mlp": c.depth * 2 * t * f * d * int(d * c.mlp_ratio),
    }
    flops = {name: f * value for name, value in spatial.items() if name != "total"}
    flops.update({name: 2 * value for name, value in macs.items()})
    return {**flops, "total": sum(flops.values())}


def measure_flops(net: nn.Module, shape: tuple[int, ...], cond: Cond | None = None) -> int:
    """Forward FLOPs of one (C, H, W) image (or (F, C, H, W) clip, for a video network)
    through ``net(x, c_noise, cond)``, counted by
    ``torch.utils.flop_counter`` with attention on the math SDPA path (the fused kernels are
    not counted). A class-conditional net without ``cond`` gets label 0."""
    if cond is None and "label" in getattr(net, "required_cond", list)():
        cond = Cond(label=torch.zeros(1, dtype=torch.long))
    param = next(net.parameters())
    x = torch.zeros(1, *shape, device=param.device, dtype=param.dtype)
    c_noise = torch.zeros(1, device=param.device)
    with torch.no_grad(), sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as count:
        net(x, c_noise, cond)
    return count.get_total_flops()
