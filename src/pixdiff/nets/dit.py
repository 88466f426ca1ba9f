"""Diffusion Transformer on pixel patches (Peebles & Xie 2023, "Scalable Diffusion Models with
Transformers"; reference design: facebookresearch/DiT ``models.py``).

Patchify with a strided conv, add a fixed 2-D sin-cos position embedding, run adaLN-Zero
Transformer blocks conditioned on the noise level (and label / pooled embedding), then an adaLN
final layer and unpatchify. With ``context_dim`` each block gains a cross-attention sub-layer
after self-attention (PixArt-alpha, Chen et al. 2023) whose output projection starts at zero.
With ``low_res_channels`` it is a super-resolution model: the upsampled low-resolution image is
concatenated to x_t before the patch embedding (SR3 / CDM, as the U-Net).

JiT's options (Li & He 2025, "Back to Basics: Let Denoising Generative Models Denoise") turn it
into their pixel Transformer with large patches: ``bottleneck_dim`` (a low-rank patch
embedding, :mod:`.patches`), ``rope`` (2-D rotary position embedding in self-attention,
:mod:`.rope`) and ``qk_norm`` (RMSNorm on queries and keys); presets ``jit-tiny-*``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from torch import Tensor, nn

from pixdiff.conditioning import Cond
from pixdiff.nets.checks import (
    broadcast_c_noise,
    check_config_ints,
    check_net_inputs,
    config_from_dict,
    config_to_dict,
    input_channels,
    required_cond,
)
from pixdiff.nets.layers import (
    CondEmbedder,
    CrossAttention,
    SelfAttention,
    mlp,
    network_input,
    sincos_pos_embed_2d,
    zero_module,
)
from pixdiff.nets.patches import init_patch_embedding, patch_embedding
from pixdiff.nets.rope import rope_2d

# ``hook(i, tokens, c) -> tokens`` after the DiT's block i: (N, T, D) tokens, (N, D) condition.
TokenHook = Callable[[int, Tensor, Tensor], Tensor]


@dataclass(frozen=True)
class DiTConfig:
    """Hyper-parameters of :class:`DiT`; round-trips through JSON via to_dict / from_dict.

    Attributes:
        in_channels: image channels (the output has the same, doubled by ``learn_sigma``).
        image_size: training resolution; sets the stored position-embedding grid.
        patch_size: side of the square patches (tokens = (image_size / patch_size)**2).
        hidden_size, depth, num_heads, mlp_ratio: Transformer width, blocks, heads, MLP ratio.
        num_classes: class-conditional with this many classes (0 = no labels).
        learn_sigma: output twice the channels (iDDPM learned variance, as DiT does).
        context_dim: width of cross-attention context tokens (0 = no cross-attention).
        pooled_dim: width of a pooled embedding added to the conditioning vector (0 = none).
        low_res_channels: channels of ``cond.low_res``, upsampled and concatenated to the
            input before patchifying (SR3 / CDM super-resolution; 0 = none).
        guidance_embed: take the guidance scale ``cond.guidance`` as an input (a student of
            guided distillation, Meng et al. 2023); off for every trained model.
        self_condition: also take the previous x0 estimate ``cond.self_cond`` as
            ``in_channels`` more input channels (Chen et al. 2023, "Analog Bits", Sec. 3).
        control_channels: channels of the control map ``cond.control`` concatenated to the
            input before patchifying (InstructPix2Pix, Brooks et al. 2023; 0 = none).
        bottleneck_dim: patch -> bottleneck_dim -> hidden_size patch embedding (JiT; 0 = one
            linear map, as DiT).
        rope: 2-D rotary position embedding of queries and keys (RoPE-Axial, Heo et al. 2024),
            beside the fixed sin-cos embedding, as JiT; needs a head width divisible by 4.
        qk_norm: RMSNorm on each head's queries and keys (Dehghani et al. 2023; JiT).
    """

    in_channels: int = 3
    image_size: int = 32
    patch_size: int = 2
    hidden_size: int = 384
    depth: int = 12
    num_heads: int = 6
    mlp_ratio: float = 4.0
    num_classes: int = 0
    learn_sigma: bool = False
    context_dim: int = 0
    pooled_dim: int = 0
    low_res_channels: int = 0
    guidance_embed: bool = False
    self_condition: bool = False
    control_channels: int = 0
    bottleneck_dim: int = 0
    rope: bool = False
    qk_norm: bool = False

    def __post_init__(self) -> None:
        check_config_ints(
            self,
            positive=("in_channels", "image_size", "patch_size", "hidden_size", "depth")
            + ("num_heads",),
            non_negative=("num_classes", "context_dim", "pooled_dim", "low_res_channels")
            + ("bottleneck_dim", "control_channels"),
        )
        if self.image_size % self.patch_size:
            fits = [p for p in range(1, min(self.image_size, 32) + 1) if self.image_size % p == 0]
            raise ValueError(
                f"image_size {self.image_size} is not divisible by patch_size {self.patch_size}: "
                f"the patches must tile the image; use a patch_size in {fits} or another "
                "image size (--image-size)"
            )
        if self.hidden_size % self.num_heads or self.hidden_size % 4:
            raise ValueError(
                f"hidden_size {self.hidden_size} must be divisible by num_heads "
                f"{self.num_heads} and by 4 (2-D sin-cos position embedding)"
            )
        if self.rope and (self.hidden_size // self.num_heads) % 4:
            raise ValueError(
                f"rope needs a head width (hidden_size / num_heads = "
                f"{self.hidden_size}/{self.num_heads}) divisible by 4"
            )
        if not self.mlp_ratio > 0:
            raise ValueError(f"mlp_ratio must be positive, got {self.mlp_ratio}")

    @property
    def out_channels(self) -> int:
        return self.in_channels * (2 if self.learn_sigma else 1)

    @property
    def grid_size(self) -> int:
        """Tokens per side at ``image_size``."""
        return self.image_size // self.patch_size

    def to_dict(self) -> dict[str, Any]:
        return config_to_dict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> DiTConfig:
        return config_from_dict(cls, d)


def init_linears(module: nn.Module) -> None:
    """Xavier-uniform weights and zero biases for every linear layer in ``module`` (DiT)."""
    for layer in module.modules():
        if isinstance(layer, nn.Linear):
            nn.init.xavier_uniform_(layer.weight)
            nn.init.zeros_(layer.bias)


def modulate(x: Tensor, shift: Tensor, scale: Tensor) -> Tensor:
    """adaLN: ``x * (1 + scale) + shift`` with (N, 1, D) modulation over (N, T, D) tokens."""
    return x * (1 + scale) + shift


def _layer_norm(dim: int) -> nn.LayerNorm:
    """LayerNorm without affine parameters: adaLN supplies scale and shift."""
    return nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)


class DiTBlock(nn.Module):
    """Transformer block with adaLN-Zero conditioning (Peebles & Xie 2023, Fig. 3).

    Six modulation vectors (shift, scale, gate for attention and MLP) regress from the
    conditioning vector; an optional cross-attention sub-layer sits between attention and MLP.
    """

    def __init__(
        self, dim: int, *, num_heads: int, mlp_ratio: float, context_dim: int, qk_norm: bool = False
    ):
        super().__init__()
        self.norm1 = _layer_norm(dim)
        self.attn = SelfAttention(dim, num_heads=num_heads, qk_norm=qk_norm)
        self.cross_norm = _layer_norm(dim) if context_dim else None
        self.cross_attn = (
            CrossAttention(dim, context_dim, num_heads=num_heads) if context_dim else None
        )
        self.norm2 = _layer_norm(dim)
        self.mlp = mlp(dim, int(dim * mlp_ratio))
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(dim, 6 * dim))

    def forward(
        self,
        x: Tensor,
        c: Tensor,
        context: Tensor | None,
        context_mask: Tensor | None,
        rope: tuple[Tensor, Tensor] | None = None,
        bias: Tensor | None = None,
    ) -> Tensor:
        """x (N, T, D) tokens, c (N, D) conditioning -> (N, T, D); rope: (cos, sin) or None;
        bias: attention logit bias, as :class:`.layers.SelfAttention` takes it, or None."""
        mod = self.adaLN_modulation(c)[:, None].chunk(6, dim=-1)  # 6 x (N, 1, D)
        shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp = mod
        h = modulate(self.norm1(x), shift_msa, scale_msa)
        x = x + gate_msa * self.attn(h, rope=rope, bias=bias)
        if self.cross_attn is not None:
            x = x + self.cross_attn(self.cross_norm(x), context, context_mask)
        return x + gate_mlp * self.mlp(modulate(self.norm2(x), shift_mlp, scale_mlp))


class FinalLayer(nn.Module):
    """adaLN LayerNorm and a linear map from tokens to patch pixels (DiT ``FinalLayer``)."""

    def __init__(self, dim: int, patch_size: int, out_channels: int):
        super().__init__()
        self.norm_final = _layer_norm(dim)
        self.linear = nn.Linear(dim, patch_size * patch_size * out_channels)
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(dim, 2 * dim))

    def forward(self, x: Tensor, c: Tensor) -> Tensor:
        """(N, T, D), (N, D) -> (N, T, p * p * out_channels)."""
        shift, scale = self.adaLN_modulation(c)[:, None].chunk(2, dim=-1)  # 2 x (N, 1, D)
        return self.linear(modulate(self.norm_final(x), shift, scale))


class DiT(nn.Module):
    """Pixel-space DiT: ``net(x_t, c_noise, cond) -> (N, in_channels [x2], H, W)``.

    Any H, W divisible by ``patch_size`` is accepted; the position embedding is fixed sin-cos,
    stored (not saved) for the configured grid and recomputed for other grids.
    """

    def __init__(self, config: DiTConfig):
        super().__init__()
        self.config = config
        c = config
        self.x_embedder = patch_embedding(
            input_channels(c), c.hidden_size, c.patch_size, bottleneck_dim=c.bottleneck_dim
        )
        self.embed = CondEmbedder(
            c.hidden_size,
            freq_dim=256,
            num_classes=c.num_classes,
            pooled_dim=c.pooled_dim,
            low_res_noise=c.low_res_channels > 0,
            guidance=c.guidance_embed,
        )
        pos = sincos_pos_embed_2d(c.hidden_size, c.grid_size, c.grid_size)
        self.register_buffer("pos_embed", pos[None], persistent=False)  # (1, T, D)
        self.blocks = nn.ModuleList(
            DiTBlock(
                c.hidden_size,
                num_heads=c.num_heads,
                mlp_ratio=c.mlp_ratio,
                context_dim=c.context_dim,
                qk_norm=c.qk_norm,
            )
            for _ in range(c.depth)
        )
        self.final_layer = FinalLayer(c.hidden_size, c.patch_size, c.out_channels)
        self.initialize_weights()

    def initialize_weights(self) -> None:
        """All initialisation in one place, as DiT's ``initialize_weights``.

        Xavier-uniform linears with zero bias; the patch embedding initialised like a linear;
        embedding tables and the timestep MLPs N(0, 0.02); adaLN modulations, cross-attention
        outputs and the final linear zeroed (adaLN-Zero), so a fresh DiT outputs exactly zero;
        the guidance embedding's output zeroed, so a guided student starts as its teacher.
        """
        init_linears(self)
        init_patch_embedding(self.x_embedder)
        if self.embed.label is not None:
            nn.init.normal_(self.embed.label.table.weight, std=0.02)
        for embedder in (self.embed.time, self.embed.low_res_noise, self.embed.guidance):
            if embedder is not None:
                nn.init.normal_(embedder.mlp[0].weight, std=0.02)
                nn.init.normal_(embedder.mlp[2].weight, std=0.02)
        if self.embed.guidance is not None:  # the student starts as its teacher
            zero_module(self.embed.guidance.mlp[2])
        for block in self.blocks:
            zero_module(block.adaLN_modulation[-1])
            if block.cross_attn is not None:
                zero_module(block.cross_attn.proj)
        zero_module(self.final_layer.adaLN_modulation[-1])
        zero_module(self.final_layer.linear)

    def forward(
        self,
        x: Tensor,
        c_noise: Tensor,
        cond: Cond | None = None,
        *,
        block_hook: TokenHook | None = None,
    ) -> Tensor:
        """Predict the network output for noisy images.

        Args:
            x: (N, in_channels, H, W) noisy images, H and W multiples of ``patch_size``.
            c_noise: (N,) float noise conditioning, or a scalar broadcast to N.
            cond: the conditioning this net was built for (label / context / pooled / low_res).
            block_hook: ``hook(i, tokens, c) -> tokens`` on the (N, T, D) tokens after block i
                with the (N, D) conditioning vector; a video DiT inserts its temporal blocks
                here (:mod:`pixdiff.nets.video_dit`).

        Returns:
            (N, in_channels * (2 if learn_sigma else 1), H, W).
        """
        c_noise = broadcast_c_noise(c_noise, x.shape[0], x.device)
        cond = self._check_inputs(x, cond)
        grid_h, grid_w = x.shape[2] // self.config.patch_size, x.shape[3] // self.config.patch_size
        h = network_input(x, cond, self.config)
        tokens = self.x_embedder(h).flatten(2).transpose(1, 2)  # (N, T, D)
        tokens = tokens + self._pos_embed(grid_h, grid_w).to(tokens.dtype)
        c = self.embed(c_noise, cond)  # (N, D)
        rope = self._rope(grid_h, grid_w)
        for i, block in enumerate(self.blocks):
            tokens = block(tokens, c, cond.context, cond.context_mask, rope)
            if block_hook is not None:
                tokens = block_hook(i, tokens, c)
        out = self.final_layer(tokens, c)  # (N, T, p * p * out_channels)
        return self.unpatchify(out, grid_h, grid_w)

    def _pos_embed(self, grid_h: int, grid_w: int) -> Tensor:
        """(1, grid_h * grid_w, D) fixed position embedding."""
        if (grid_h, grid_w) == (self.config.grid_size, self.config.grid_size):
            return self.pos_embed
        pos = sincos_pos_embed_2d(self.config.hidden_size, grid_h, grid_w)
        return pos[None].to(self.pos_embed.device)

    def _rope(self, grid_h: int, grid_w: int) -> tuple[Tensor, Tensor] | None:
        """(cos, sin), each (grid_h * grid_w, head_dim / 2), of the 2-D RoPE; None without."""
        if not self.config.rope:
            return None
        cos, sin = rope_2d(self.config.hidden_size // self.config.num_heads, grid_h, grid_w)
        return cos.to(self.pos_embed.device), sin.to(self.pos_embed.device)

    def unpatchify(self, x: Tensor, grid_h: int, grid_w: int) -> Tensor:
        """(N, T, p * p * C) -> (N, C, grid_h * p, grid_w * p)."""
        p, c = self.config.patch_size, self.config.out_channels
        x = x.reshape(x.shape[0], grid_h, grid_w, p, p, c)
        x = x.permute(0, 5, 1, 3, 2, 4)  # (N, C, grid_h, p, grid_w, p)
        return x.reshape(x.shape[0], c, grid_h * p, grid_w * p)

    def required_cond(self) -> list[str]:
        """Names of the Cond fields this network needs on every call."""
        return required_cond(self.config)

    def _check_inputs(self, x: Tensor, cond: Cond | None) -> Cond:
        return check_net_inputs(x, cond, self.config, multiple=self.config.patch_size, who="DiT")
