"""Building blocks shared by the U-Net and the DiT.

Embeddings (timestep, label, 2-D sin-cos position), normalisation, attention via
``torch.nn.functional.scaled_dot_product_attention``, the one zero-init helper, and the
low-resolution input of a super-resolution network. The checks of a network's inputs and the
dict round-trip of its config are in :mod:`pixdiff.nets.checks`.
"""

from __future__ import annotations

import math
from typing import TypeVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pixdiff.conditioning import Cond
from pixdiff.nets.checks import control_channels, self_conditioned
from pixdiff.nets.rope import apply_rope

M = TypeVar("M", bound=nn.Module)


# ----------------------------------------------------------------------------- initialisation


def zero_module(module: M) -> M:
    """Zero every parameter of ``module`` and return it: the one place zero-init happens.

    Used for the last layer of each residual branch and for the output layer, so that a fresh
    network is the identity on its residual stream and outputs exactly zero (Goyal et al. 2017;
    ADM, Dhariwal & Nichol 2021; adaLN-Zero, Peebles & Xie 2023).
    """
    for p in module.parameters():
        nn.init.zeros_(p)
    return module


# ----------------------------------------------------------------------------- embeddings


def timestep_embedding(c_noise: Tensor, dim: int, max_period: float = 10000.0) -> Tensor:
    """Sinusoidal embedding of a real-valued noise level (Vaswani et al. 2017; Ho et al. 2020).

    Frequencies and ``[cos, sin]`` order follow ADM / DiT. Computed in float32 whatever the
    input dtype or autocast state, because bf16 cannot resolve ``c_noise`` up to ~1000.

    Args:
        c_noise: (N,) noise conditioning (e.g. a timestep in [0, 1000) or EDM's ln(sigma)/4).
        dim: embedding width.
        max_period: lowest frequency is ``1 / max_period``.

    Returns:
        (N, dim) float32.
    """
    half = dim // 2
    exponent = torch.arange(half, dtype=torch.float32, device=c_noise.device) / half
    freqs = torch.exp(-math.log(max_period) * exponent)  # (half,)
    args = c_noise.float()[:, None] * freqs[None]  # (N, half)
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    if dim % 2:
        emb = F.pad(emb, (0, 1))
    return emb


class TimestepEmbedder(nn.Module):
    """Sinusoidal features followed by a 2-layer SiLU MLP (DDPM, ADM, DiT ``TimestepEmbedder``)."""

    def __init__(self, out_dim: int, *, freq_dim: int = 256):
        super().__init__()
        self.freq_dim = freq_dim
        self.mlp = nn.Sequential(
            nn.Linear(freq_dim, out_dim), nn.SiLU(), nn.Linear(out_dim, out_dim)
        )

    def forward(self, c_noise: Tensor) -> Tensor:
        """(N,) -> (N, out_dim)."""
        freq = timestep_embedding(c_noise, self.freq_dim)
        return self.mlp(freq.to(self.mlp[0].weight.dtype))


class LabelEmbedder(nn.Module):
    """Class-label embedding table with one extra row for the null label (Ho & Salimans 2022).

    Ids ``0 .. num_classes - 1`` are classes and ``num_classes`` is the null label used for
    classifier-free guidance. Dropping labels during training is the trainer's job.
    """

    def __init__(self, num_classes: int, dim: int):
        super().__init__()
        self.num_classes = num_classes
        self.table = nn.Embedding(num_classes + 1, dim)

    def forward(self, label: Tensor) -> Tensor:
        """(N,) int64 -> (N, dim); raises ValueError for ids outside [0, num_classes]."""
        check_label(label, self.num_classes)
        return self.table(label)


def check_label(label: Tensor, num_classes: int) -> None:
    """Raise a ValueError unless ``label`` is a 1-D integer tensor of ids in [0, num_classes].

    The range check reads the values, so it runs only eagerly: a traced, scripted, compiled or
    exported graph (TorchScript, ONNX, ``torch.export``) cannot branch on data, and there an id
    out of range fails in the embedding lookup instead."""
    if label.dim() != 1 or label.dtype.is_floating_point or label.dtype == torch.bool:
        raise ValueError(
            f"cond.label must be a 1-D integer tensor, got {tuple(label.shape)} {label.dtype}"
        )
    if _building_graph():
        return
    if label.numel() and (int(label.min()) < 0 or int(label.max()) > num_classes):
        raise ValueError(
            f"cond.label ids must lie in [0, {num_classes}] ({num_classes} is the null label "
            f"for classifier-free guidance); got min {int(label.min())}, max {int(label.max())}"
        )


def _building_graph() -> bool:
    """Whether torch is recording a graph (tracing, scripting, compiling or exporting) rather
    than running eagerly."""
    return torch.jit.is_tracing() or torch.jit.is_scripting() or torch.compiler.is_compiling()


def sincos_pos_embed_2d(dim: int, grid_h: int, grid_w: int) -> Tensor:
    """Fixed 2-D sin-cos position embedding (MAE, He et al. 2022; DiT, Peebles & Xie 2023).

    The first half of the channels encodes the column and the second half the row (the
    order of MAE's ``get_2d_sincos_pos_embed``), each with the 1-D Transformer embedding
    ``[sin, cos]`` of ``omega = 1 / 10000^(2i/d)``.

    Returns:
        (grid_h * grid_w, dim) float32, tokens in row-major order.
    """
    if dim % 4:
        raise ValueError(f"2-D sin-cos position embedding needs dim divisible by 4, got {dim}")
    rows, cols = torch.meshgrid(
        torch.arange(grid_h, dtype=torch.float32),
        torch.arange(grid_w, dtype=torch.float32),
        indexing="ij",
    )
    return torch.cat([_sincos_1d(dim // 2, cols), _sincos_1d(dim // 2, rows)], dim=1)


def _sincos_1d(dim: int, pos: Tensor) -> Tensor:
    """(H, W) positions -> (H * W, dim) ``[sin, cos]`` embedding (MAE ``get_1d_sincos``)."""
    omega = 1.0 / 10000 ** (torch.arange(dim // 2, dtype=torch.float32) / (dim / 2))
    out = pos.reshape(-1, 1) * omega[None]  # (H * W, dim / 2)
    return torch.cat([torch.sin(out), torch.cos(out)], dim=1)


# ----------------------------------------------------------------------------- normalisation


def group_count(channels: int, max_groups: int) -> int:
    """Largest number of groups <= ``max_groups`` that divides ``channels``."""
    return next(g for g in range(min(max_groups, channels), 0, -1) if channels % g == 0)


class GroupNorm(nn.GroupNorm):
    """GroupNorm computed in float32 and cast back (ADM ``GroupNorm32``), robust to bf16."""

    def forward(self, x: Tensor) -> Tensor:
        weight = None if self.weight is None else self.weight.float()
        bias = None if self.bias is None else self.bias.float()
        y = F.group_norm(x.float(), self.num_groups, weight, bias, self.eps)
        return y.to(x.dtype)


def group_norm(channels: int, *, max_groups: int = 32, eps: float = 1e-5) -> GroupNorm:
    """GroupNorm with 32 groups (Wu & He 2018), or fewer when ``channels`` needs it."""
    return GroupNorm(group_count(channels, max_groups), channels, eps=eps)


# ----------------------------------------------------------------------------- attention


def _split_heads(x: Tensor, num_heads: int) -> Tensor:
    """(N, T, D) -> (N, heads, T, D / heads)."""
    n, t, d = x.shape
    return x.reshape(n, t, num_heads, d // num_heads).transpose(1, 2)


def _merge_heads(x: Tensor) -> Tensor:
    """(N, heads, T, d) -> (N, T, heads * d)."""
    n, h, t, d = x.shape
    return x.transpose(1, 2).reshape(n, t, h * d)


def _check_heads(dim: int, num_heads: int) -> None:
    if num_heads < 1 or dim % num_heads:
        raise ValueError(f"attention width {dim} is not divisible by num_heads={num_heads}")


class SelfAttention(nn.Module):
    """Multi-head self-attention over tokens (Vaswani et al. 2017) using fused SDPA.

    With ``zero_init_out`` the output projection starts at zero, so a residual branch
    ``x + attn(x)`` starts as the identity (ADM ``AttentionBlock``). With ``qk_norm`` each
    head's queries and keys pass through RMSNorm (Zhang & Sennrich 2019) before the dot
    product, which bounds the attention logits (QK-norm: Henry et al. 2020; ViT-22B, Dehghani
    et al. 2023; JiT, Li & He 2025); ``rope`` rotates them by position (:mod:`.rope`).
    """

    def __init__(
        self, dim: int, *, num_heads: int, zero_init_out: bool = False, qk_norm: bool = False
    ):
        super().__init__()
        _check_heads(dim, num_heads)
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        if zero_init_out:
            zero_module(self.proj)
        head_dim = dim // num_heads
        self.q_norm = nn.RMSNorm(head_dim, eps=1e-6) if qk_norm else None
        self.k_norm = nn.RMSNorm(head_dim, eps=1e-6) if qk_norm else None

    def forward(
        self,
        x: Tensor,
        mask: Tensor | None = None,
        rope: tuple[Tensor, Tensor] | None = None,
        bias: Tensor | None = None,
    ) -> Tensor:
        """x (N, T, D) -> (N, T, D); mask (N, T) bool, False = padding no token attends to;
        rope: (cos, sin), each (T, D / heads / 2), from :func:`.rope.rope_2d`; bias: float
        (N or 1, heads or 1, T, T) added to the attention logits, -inf where a query must not
        attend to a key (a relative position bias, :mod:`.temporal`).

        Every row of ``mask`` and ``bias`` needs one key to attend to (else NaN).
        """
        q, k, v = self.qkv(x).chunk(3, dim=-1)  # 3 x (N, T, D)
        q, k, v = (_split_heads(a, self.num_heads) for a in (q, k, v))
        if self.q_norm is not None:
            q, k = self.q_norm(q), self.k_norm(k)
        if rope is not None:
            q, k = apply_rope(q, *rope), apply_rope(k, *rope)
        attend = None if mask is None else mask[:, None, None, :]  # (N, 1, 1, T) over keys
        if bias is not None:
            bias = bias.to(q.dtype)  # SDPA takes a float mask only in the queries' dtype
            attend = bias if attend is None else bias.masked_fill(~attend, float("-inf"))
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=attend)  # (N, heads, T, d)
        return self.proj(_merge_heads(out))


def mlp(dim: int, hidden: int) -> nn.Sequential:
    """The Transformer's position-wise feed-forward layer with a tanh-GELU (Vaswani et al. 2017;
    GELU, Hendrycks & Gimpel 2016, as in ViT and DiT)."""
    return nn.Sequential(
        nn.Linear(dim, hidden), nn.GELU(approximate="tanh"), nn.Linear(hidden, dim)
    )


class CrossAttention(nn.Module):
    """Multi-head attention from tokens to a padded context sequence (LDM, Rombach et al. 2022).

    Padding tokens (``context_mask`` False) are excluded from attention. A sample with no real
    token at all gets a zero update instead of the NaN a fully masked softmax would give.
    """

    def __init__(self, dim: int, context_dim: int, *, num_heads: int, zero_init_out: bool = False):
        super().__init__()
        _check_heads(dim, num_heads)
        self.num_heads = num_heads
        self.q = nn.Linear(dim, dim)
        self.kv = nn.Linear(context_dim, 2 * dim)
        self.proj = nn.Linear(dim, dim)
        if zero_init_out:
            zero_module(self.proj)

    def forward(self, x: Tensor, context: Tensor, context_mask: Tensor | None = None) -> Tensor:
        """Args: x (N, T, D); context (N, L, context_dim); context_mask (N, L) bool or None."""
        q = _split_heads(self.q(x), self.num_heads)  # (N, heads, T, d)
        k, v = (_split_heads(a, self.num_heads) for a in self.kv(context).chunk(2, dim=-1))
        if context_mask is None:
            return self.proj(_merge_heads(F.scaled_dot_product_attention(q, k, v)))
        has_token = context_mask.any(dim=1)  # (N,)
        # Let empty rows attend to everything (finite), then zero them: no NaN in fwd or bwd.
        attend = context_mask | ~has_token[:, None]  # (N, L)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=attend[:, None, None, :])
        out = self.proj(_merge_heads(out))  # (N, T, D)
        return out * has_token[:, None, None].to(out.dtype)


class CondEmbedder(nn.Module):
    """Sum of the noise-level embedding and every vector condition (ADM, DiT, Imagen, CDM).

    Class labels (ADM ``label_emb``, DiT ``y_embedder``), a pooled text embedding (Imagen,
    Saharia et al. 2022), the augmentation time t of a low-resolution input (CDM, Ho et
    al. 2022, embedded like a timestep, as ``LOW_RES_NOISE_SCALE * t``) and the guidance scale
    w of a guided-distilled network (Meng et al. 2023, Sec. 4.1: a Fourier embedding of w, here
    ``GUIDANCE_SCALE * w``) are each mapped to ``dim`` and added to the timestep embedding. The
    guidance embedding's last layer starts at zero, so a student built from its teacher's
    weights computes exactly the teacher's function until it is trained.
    """

    def __init__(
        self,
        dim: int,
        *,
        freq_dim: int,
        num_classes: int = 0,
        pooled_dim: int = 0,
        low_res_noise: bool = False,
        guidance: bool = False,
    ):
        super().__init__()
        self.time = TimestepEmbedder(dim, freq_dim=freq_dim)
        self.label = LabelEmbedder(num_classes, dim) if num_classes else None
        self.pooled = nn.Linear(pooled_dim, dim) if pooled_dim else None
        self.low_res_noise = TimestepEmbedder(dim, freq_dim=freq_dim) if low_res_noise else None
        self.guidance = TimestepEmbedder(dim, freq_dim=freq_dim) if guidance else None
        if self.guidance is not None:
            zero_module(self.guidance.mlp[-1])

    def forward(self, c_noise: Tensor, cond: Cond) -> Tensor:
        """(N,) noise level and a checked Cond -> (N, dim)."""
        emb = self.time(c_noise)
        if self.label is not None:
            emb = emb + self.label(cond.label)
        if self.pooled is not None:
            emb = emb + self.pooled(cond.pooled)
        if self.low_res_noise is not None:
            emb = emb + self.low_res_noise(LOW_RES_NOISE_SCALE * cond.low_res_noise)
        if self.guidance is not None:
            emb = emb + self.guidance(GUIDANCE_SCALE * cond.guidance)
        return emb


# The augmentation time t in [0, 1] is embedded as 1000 t, the scale of the timestep a network
# is fed for its own noise level (``Schedule.timestep``), so the sinusoidal frequencies resolve it.
LOW_RES_NOISE_SCALE = 1000.0
# A guidance scale w (about 0 to 10) is embedded as 100 w, so that the sinusoidal frequencies
# resolve steps of 0.01 in w.
GUIDANCE_SCALE = 100.0


def concat_low_res(x: Tensor, low_res: Tensor) -> Tensor:
    """x_t with the low-resolution image, upsampled bilinearly to x's size, appended as extra
    channels (SR3, Saharia et al. 2021, Sec. 2.4; they upsample bicubically, whose overshoot
    bilinear avoids). x (N, C, H, W), low_res (N, C', h, w) -> (N, C + C', H, W)."""
    up = F.interpolate(low_res.to(x.dtype), size=x.shape[-2:], mode="bilinear", align_corners=False)
    return torch.cat([x, up], dim=1)


def network_input(x: Tensor, cond: Cond, config) -> Tensor:
    """x_t with the extra input channels a UNet/DiT ``config`` asks for: the upsampled low-res
    image (:func:`concat_low_res`); with ``self_condition``, the previous x0 estimate
    ``cond.self_cond`` (Chen et al. 2023, "Analog Bits", Sec. 3), zeros when it is absent (the
    first sampling step, and half of the training batches, Alg. 1-2); with
    ``control_channels``, the control map ``cond.control`` (InstructPix2Pix, Brooks et al.
    2023, Sec. 3.2). (N, C, H, W) -> (N, C [+ C'] [+ C] [+ C_control], H, W)."""
    h = concat_low_res(x, cond.low_res) if config.low_res_channels else x
    if self_conditioned(config):
        previous = torch.zeros_like(x) if cond.self_cond is None else cond.self_cond.to(x.dtype)
        h = torch.cat([h, previous], dim=1)
    if control_channels(config):
        h = torch.cat([h, cond.control.to(x.dtype)], dim=1)
    return h
