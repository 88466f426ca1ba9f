"""pixdiff's U-Net as diffusers' ``UNet2DModel``: the config and the weights, both ways.

The two networks are the same DDPM / ADM U-Net (Ho et al. 2020, App. B; Dhariwal & Nichol
2021) when the pixdiff config has no cross-attention, pooled, low-resolution, guidance or
self-conditioning input, plain (not residual) resampling, a first level of ``model_channels``
(diffusers' sinusoidal embedding is as wide as its first level), full GroupNorm groups
everywhere and one attention head width: then every weight has a counterpart, the sinusoidal
embedding is diffusers' with ``flip_sin_to_cos=True, freq_shift=0`` (ADM's ``[cos, sin]``), and
``scale_shift_norm`` is ``resnet_time_scale_shift="scale_shift"``. A class-conditional
network's null label (the row ``num_classes`` of its table) is the last of diffusers'
``num_class_embeds``. Other networks raise :class:`NoCounterpart` naming the reason.

Pure format code: diffusers need not be installed.
"""

from __future__ import annotations

import torch
from torch import Tensor

from pixdiff.nets import UNet, UNetConfig
from pixdiff.nets.layers import GroupNorm

# pixdiff ResBlock parameter -> diffusers ResnetBlock2D parameter
RESBLOCK = {
    "in_norm": "norm1",
    "in_conv": "conv1",
    "emb_proj": "time_emb_proj",
    "out_norm": "norm2",
    "out_conv": "conv2",
    "skip": "conv_shortcut",
}
# the UNet2DModel options pixdiff's U-Net has no other value for
FIXED = {
    "center_input_sample": False,
    "time_embedding_type": "positional",
    "freq_shift": 0,
    "flip_sin_to_cos": True,
    "mid_block_type": "UNetMidBlock2D",
    "mid_block_scale_factor": 1,
    "downsample_padding": 1,
    "downsample_type": "conv",
    "upsample_type": "conv",
    "act_fn": "silu",
    "norm_eps": 1e-5,
    "add_attention": True,
    "class_embed_type": None,
}


class NoCounterpart(ValueError):
    """A network with no weight-for-weight counterpart in the other library."""


def _attended(c: UNetConfig) -> list[bool]:
    return [size in c.attention_resolutions for size in c.resolutions]


def unet_to_diffusers_config(c: UNetConfig) -> dict:
    """The ``UNet2DModel`` config of a pixdiff U-Net; NoCounterpart when it has none."""
    extras = {
        "context_dim": c.context_dim, "pooled_dim": c.pooled_dim,
        "low_res_channels": c.low_res_channels, "guidance_embed": c.guidance_embed,
        "self_condition": c.self_condition, "resblock_updown": c.resblock_updown,
        "control_channels": getattr(c, "control_channels", 0),
    }  # fmt: skip
    used = [name for name, value in extras.items() if value]
    if used:
        raise NoCounterpart(f"UNet2DModel has no counterpart of {', '.join(used)}")
    if c.channel_mult[0] != 1:
        raise NoCounterpart("UNet2DModel embeds the timestep as wide as its first level")
    widths = [c.model_channels * m for m in c.channel_mult]
    attended = _attended(c)
    head_widths = {w // c.heads(w) for w, a in zip(widths, attended, strict=True) if a}
    head_widths.add(widths[-1] // c.heads(widths[-1]))  # the middle block's attention
    if len(head_widths) > 1:
        raise NoCounterpart(f"UNet2DModel has one attention head width, this net {head_widths}")
    with torch.device("meta"):  # the layout only, no weights
        norms = [m for m in UNet(c).modules() if isinstance(m, GroupNorm)]
    if any(m.num_groups != c.num_groups for m in norms):
        raise NoCounterpart(f"some GroupNorm widths do not divide into {c.num_groups} groups")
    return {
        "_class_name": "UNet2DModel",
        "sample_size": c.image_size,
        "in_channels": c.in_channels,
        "out_channels": c.total_out_channels,
        "block_out_channels": widths,
        "layers_per_block": c.num_res_blocks,
        "down_block_types": ["AttnDownBlock2D" if a else "DownBlock2D" for a in attended],
        "up_block_types": ["AttnUpBlock2D" if a else "UpBlock2D" for a in reversed(attended)],
        "attention_head_dim": head_widths.pop(),
        "norm_num_groups": c.num_groups,
        "attn_norm_num_groups": c.num_groups,
        "resnet_time_scale_shift": "scale_shift" if c.scale_shift_norm else "default",
        "dropout": c.dropout,
        "num_class_embeds": c.num_classes + 1 if c.num_classes else None,
        "time_embedding_dim": c.emb_dim,
        **FIXED,
    }


def unet_from_diffusers_config(d: dict, *, null_label: bool) -> UNetConfig:
    """The pixdiff U-Net config of a ``UNet2DModel`` config; NoCounterpart when it has none.

    Args:
        null_label: the last class embedding is the null label of classifier-free guidance
            (a folder pixdiff exported); otherwise a class-conditional UNet2DModel has none.
    """
    differ = [k for k, v in FIXED.items() if d.get(k, v) != v]
    if differ:
        raise NoCounterpart(f"UNet2DModel options {differ} differ from pixdiff's U-Net")
    widths, down, up = (list(d[k]) for k in ("block_out_channels", "down_block_types",
                                             "up_block_types"))  # fmt: skip
    attended = [t == "AttnDownBlock2D" for t in down]
    if any(t not in ("DownBlock2D", "AttnDownBlock2D") for t in down) or up != [
        "AttnUpBlock2D" if a else "UpBlock2D" for a in reversed(attended)
    ]:
        raise NoCounterpart(f"block types {down} / {up} are not the DDPM U-Net's")
    if d.get("num_class_embeds") and not null_label:
        raise NoCounterpart("its class embedding has no null label for guidance")
    groups, shift = d.get("norm_num_groups", 32), d.get("resnet_time_scale_shift", "default")
    attn_groups = d.get("attn_norm_num_groups") or (groups if shift == "default" else None)
    if shift not in ("default", "scale_shift") or attn_groups != groups:
        raise NoCounterpart(
            f"resnet_time_scale_shift={shift!r} with attn_norm_num_groups="
            f"{d.get('attn_norm_num_groups')} has no pixdiff counterpart"
        )
    size = d.get("sample_size")
    size = size[0] if isinstance(size, (list, tuple)) and len(set(size)) == 1 else size
    if not isinstance(size, int) or any(w % widths[0] for w in widths):
        raise NoCounterpart(f"sample_size {size} or block_out_channels {widths} do not fit")
    head = d.get("attention_head_dim", 8)
    config = UNetConfig(
        in_channels=d.get("in_channels", 3),
        out_channels=d.get("in_channels", 3),
        image_size=size,
        model_channels=widths[0],
        channel_mult=tuple(w // widths[0] for w in widths),
        num_res_blocks=d.get("layers_per_block", 2),
        attention_resolutions=tuple(size >> i for i, a in enumerate(attended) if a),
        num_heads=1 if head is None else 4,
        head_channels=head or 0,
        dropout=d.get("dropout", 0.0),
        scale_shift_norm=shift == "scale_shift",
        num_groups=groups,
        num_classes=d["num_class_embeds"] - 1 if d.get("num_class_embeds") else 0,
        learn_sigma=d.get("out_channels", 3) == 2 * d.get("in_channels", 3),
    )
    if config.total_out_channels != d.get("out_channels", 3):
        raise NoCounterpart(f"out_channels {d.get('out_channels')} is neither in_channels nor 2x")
    if d.get("time_embedding_dim") not in (None, config.emb_dim):
        raise NoCounterpart(f"time_embedding_dim {d['time_embedding_dim']} is not 4x the first")
    unet_to_diffusers_config(config)  # the same checks the other way (GroupNorm widths, heads)
    return config


# ----------------------------------------------------------------------------- weights


def _module_pairs(c: UNetConfig) -> list[tuple[str, str, str]]:
    """(pixdiff module, diffusers module, kind) for every module with weights; kind is plain
    (same parameter names), res (ResBlock) or attn (AttentionBlock)."""
    pairs = [
        ("embed.time.mlp.0", "time_embedding.linear_1", "plain"),
        ("embed.time.mlp.2", "time_embedding.linear_2", "plain"),
        ("input_blocks.0.0", "conv_in", "plain"),
    ]
    if c.num_classes:
        pairs.append(("embed.label.table", "class_embedding", "plain"))
    levels, attended, block = len(c.channel_mult), _attended(c), 1
    for level in range(levels):
        for j in range(c.num_res_blocks):
            pairs.append((f"input_blocks.{block}.0", f"down_blocks.{level}.resnets.{j}", "res"))
            if attended[level]:
                pairs.append((f"input_blocks.{block}.1", f"down_blocks.{level}.attentions.{j}",
                              "attn"))  # fmt: skip
            block += 1
        if level < levels - 1:
            pairs.append((f"input_blocks.{block}.0.conv",
                          f"down_blocks.{level}.downsamplers.0.conv", "plain"))  # fmt: skip
            block += 1
    pairs += [
        ("middle.0", "mid_block.resnets.0", "res"),
        ("middle.1", "mid_block.attentions.0", "attn"),
        ("middle.2", "mid_block.resnets.1", "res"),
    ]
    block = 0
    for up, level in enumerate(reversed(range(levels))):
        for j in range(c.num_res_blocks + 1):
            pairs.append((f"output_blocks.{block}.0", f"up_blocks.{up}.resnets.{j}", "res"))
            if attended[level]:
                pairs.append((f"output_blocks.{block}.1", f"up_blocks.{up}.attentions.{j}",
                              "attn"))  # fmt: skip
            if level > 0 and j == c.num_res_blocks:
                pairs.append((f"output_blocks.{block}.{1 + attended[level]}.conv",
                              f"up_blocks.{up}.upsamplers.0.conv", "plain"))  # fmt: skip
            block += 1
    return pairs + [("out.0", "conv_norm_out", "plain"), ("out.2", "conv_out", "plain")]


def key_pairs(c: UNetConfig) -> list[tuple[str, tuple[str, ...]]]:
    """(pixdiff key, diffusers keys) of every weight: one diffusers key, or three (to_q, to_k,
    to_v) for the rows of a fused qkv projection. ResBlock skips are listed whether or not a
    block has one."""
    keys = []
    for ours, theirs, kind in _module_pairs(c):
        if kind == "plain":
            names = [("", "")]
        elif kind == "res":
            names = [(f".{a}", f".{b}") for a, b in RESBLOCK.items()]
        else:
            names = [(".norm", ".group_norm"), (".attn.proj", ".to_out.0"), (".attn.qkv", "")]
        for a, b in names:
            for p in ("weight", "bias"):
                split = a == ".attn.qkv"
                target = tuple(f"{theirs}.{q}.{p}" for q in ("to_q", "to_k", "to_v"))
                keys.append((f"{ours}{a}.{p}", target if split else (f"{theirs}{b}.{p}",)))
    return keys


def unet_state_to_diffusers(state: dict[str, Tensor], c: UNetConfig) -> dict[str, Tensor]:
    """A pixdiff U-Net state dict renamed (qkv split) for the ``UNet2DModel`` of
    :func:`unet_to_diffusers_config`."""
    out = {}
    for ours, theirs in key_pairs(c):
        if ours in state:
            out.update(zip(theirs, state[ours].chunk(len(theirs)), strict=True))
    _check_all_used(state, {k for k, _ in key_pairs(c)}, "pixdiff U-Net")
    return out


def unet_state_from_diffusers(state: dict[str, Tensor], c: UNetConfig) -> dict[str, Tensor]:
    """A ``UNet2DModel`` state dict as the pixdiff U-Net of :func:`unet_from_diffusers_config`."""
    out = {}
    for ours, theirs in key_pairs(c):
        if all(k in state for k in theirs):
            out[ours] = torch.cat([state[k] for k in theirs])
    _check_all_used(state, {k for _, ks in key_pairs(c) for k in ks}, "UNet2DModel")
    return out


def _check_all_used(state: dict[str, Tensor], mapped: set[str], who: str) -> None:
    left = sorted(set(state) - mapped)
    if left:
        raise NoCounterpart(f"{who} weights {left[:3]} have no counterpart")
