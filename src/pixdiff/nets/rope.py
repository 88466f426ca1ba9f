"""2-D rotary position embedding for attention over an image's patch grid.

RoPE (Su et al. 2021, "RoFormer", Eq. 34) rotates each query and key channel pair by an angle
proportional to the token's position, so the attention logit q_m . k_n depends on the positions
only through their offset n - m. On images the axial form (Heo et al. 2024, "Rotary Position
Embedding for Vision Transformer", RoPE-Axial; EVA-02, Fang et al. 2023) gives half of the
pairs the token's row and the other half its column. JiT (Li & He 2025) uses it with qk-norm in
every block of its pixel Transformer.
"""

from __future__ import annotations

import torch
from torch import Tensor

ROPE_THETA = 10000.0  # base of the frequencies (Su et al. 2021; Vaswani et al. 2017)


def rope_2d(
    head_dim: int, grid_h: int, grid_w: int, *, theta: float = ROPE_THETA
) -> tuple[Tensor, Tensor]:
    """cos and sin of the axial 2-D RoPE angles for a grid of tokens in row-major order.

    Channel pair i of a head is (i, i + head_dim / 2) (the "rotate half" layout). Pairs
    0 .. head_dim / 4 - 1 turn by row * omega_k and the next head_dim / 4 by col * omega_k, with
    omega_k = theta^(-k / (head_dim / 4)) (Heo et al. 2024, RoPE-Axial).

    Returns:
        (cos, sin), each (grid_h * grid_w, head_dim / 2) float32.
    """
    if head_dim % 4:
        raise ValueError(f"2-D RoPE needs a head width divisible by 4, got {head_dim}")
    quarter = head_dim // 4
    omega = theta ** (-torch.arange(quarter, dtype=torch.float64) / quarter)  # (quarter,)
    rows, cols = torch.meshgrid(
        torch.arange(grid_h, dtype=torch.float64),
        torch.arange(grid_w, dtype=torch.float64),
        indexing="ij",
    )
    angles = torch.cat(
        [rows.reshape(-1, 1) * omega, cols.reshape(-1, 1) * omega], dim=1
    )  # (T, head_dim / 2)
    return angles.cos().float(), angles.sin().float()


def apply_rope(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """Rotate channel pairs (i, i + d/2) of x (..., T, d) by the angles whose cos and sin are
    (T, d/2): (x1, x2) -> (x1 cos - x2 sin, x2 cos + x1 sin) (Su et al. 2021, Eq. 34)."""
    x1, x2 = x.chunk(2, dim=-1)
    cos, sin = cos.to(x.dtype), sin.to(x.dtype)
    return torch.cat([x1 * cos - x2 * sin, x2 * cos + x1 * sin], dim=-1)
