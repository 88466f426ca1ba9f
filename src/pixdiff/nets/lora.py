"""Low-rank adapters (LoRA, Hu et al. 2021) on any pixdiff network, kept apart from its weights.

A frozen layer y = W x + b gains a trainable low-rank update (Hu et al. 2021, Eq. 3):

    h = W x + (alpha / r) * B A x,    A: (r, d_in), B: (d_out, r), B = 0 at the start,

so an untrained adapter adds exactly zero and the network's outputs are unchanged bit for bit.
For a convolution, A is a convolution of the layer's kernel size, stride and padding to r
channels and B a 1x1 convolution back (as LoRA's ``ConvLoRA`` and PEFT do). A's initialisation
is PyTorch's default for the layer (Kaiming-uniform, as loralib and PEFT), dropout acts on the
adapter's input only (PEFT's ``lora_dropout``).

A :class:`LoRASet` holds the adapters of one network and never becomes part of it: it adds its
updates through forward hooks (:meth:`LoRASet.applied`), so the network's state dict, and the
identity of its weights, stay the base's. Several sets can be applied at once (stacking), each
with its own strength (``scale``); :meth:`LoRASet.merge_into` folds one into the weights.

The fused self-attention projection ``qkv`` gets one adapter for q, k and v together (one A
shared, B's rows split by the projection); ``kv`` of cross-attention likewise.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import Tensor, nn

# named groups of module-name patterns (fnmatch) a target may name; the text encoder is never
# matched unless a pattern starts with "text_encoder"
PRESETS: dict[str, tuple[str, ...]] = {
    "attn": ("*attn.qkv", "*attn.proj", "*cross.q", "*cross.kv", "*cross.proj",
             "*cross_attn.q", "*cross_attn.kv", "*cross_attn.proj"),
    "mlp": ("*mlp.0", "*mlp.2"),
    "conv": ("*in_conv", "*out_conv"),
}  # fmt: skip
DEFAULT_TARGETS = ("attn",)
SEP = "__"  # stands for "." in the set's keys (a module name may not contain a dot)


class LoRAError(ValueError):
    """A LoRA that cannot be built: bad rank, a target that matches nothing, a wrong layer."""


@dataclass(frozen=True)
class LoRAConfig:
    """rank r, alpha (default r: scale 1), dropout on the adapter's input, and the targets:
    preset names (``PRESETS``) or fnmatch patterns over module names."""

    rank: int = 8
    alpha: float | None = None
    dropout: float = 0.0
    targets: tuple[str, ...] = DEFAULT_TARGETS

    @property
    def scaling(self) -> float:
        """alpha / r (Hu et al. 2021, Sec. 4.1)."""
        return (self.rank if self.alpha is None else self.alpha) / self.rank


class LoRALayer(nn.Module):
    """The update (alpha / r) B A x of one nn.Linear or nn.Conv2d (``base``, not stored)."""

    def __init__(self, base: nn.Module, config: LoRAConfig, name: str):
        super().__init__()
        r = config.rank
        width = _width(base, name)
        if not 1 <= r <= width:
            raise LoRAError(f"--lora-rank {r} for {name}: must be in [1, {width}] (its width)")
        if isinstance(base, nn.Linear):
            self.down = nn.Linear(base.in_features, r, bias=False)
            self.up = nn.Linear(r, base.out_features, bias=False)
        else:
            self.down = nn.Conv2d(
                base.in_channels, r, base.kernel_size, stride=base.stride,
                padding=base.padding, dilation=base.dilation, bias=False,
            )  # fmt: skip
            self.up = nn.Conv2d(r, base.out_channels, 1, bias=False)
        nn.init.zeros_(self.up.weight)
        self.dropout = nn.Dropout(config.dropout) if config.dropout else nn.Identity()
        self.scaling = config.scaling

    def forward(self, x: Tensor) -> Tensor:
        return self.up(self.down(self.dropout(x))) * self.scaling

    def weight_delta(self) -> Tensor:
        """(alpha / r) B A, shaped like the base layer's weight."""
        down, up = self.down.weight, self.up.weight
        delta = up.flatten(1) @ down.flatten(1)  # (d_out, d_in * kh * kw)
        return (delta * self.scaling).reshape(up.shape[0], *down.shape[1:])


def _width(module: nn.Module, name: str) -> int:
    """min(fan-in, fan-out): the largest rank a low-rank update of ``module`` can have."""
    if isinstance(module, nn.Linear):
        return min(module.in_features, module.out_features)
    if isinstance(module, nn.Conv2d):
        if module.groups != 1 or module.padding_mode != "zeros":
            raise LoRAError(f"{name}: LoRA takes ungrouped, zero-padded convolutions")
        k = module.kernel_size[0] * module.kernel_size[1]
        return min(module.in_channels * k, module.out_channels)
    raise LoRAError(f"{name} is a {type(module).__name__}; LoRA adapts nn.Linear and nn.Conv2d")


def adaptable(net: nn.Module) -> list[str]:
    """Names of ``net``'s modules a LoRA can adapt (its Linear and Conv2d layers)."""
    return [n for n, m in net.named_modules() if isinstance(m, nn.Linear | nn.Conv2d)]


def resolve_targets(net: nn.Module, targets: Sequence[str]) -> list[str]:
    """The module names ``targets`` (presets or patterns) select, in network order; one line
    listing the valid names for a target that matches no adaptable module."""
    names = adaptable(net)
    chosen: set[str] = set()
    for target in targets:
        patterns = PRESETS.get(target, (target,))
        hits = {
            n for n in names for p in patterns
            if fnmatch.fnmatchcase(n, p)
            and (not n.startswith("text_encoder.") or p.startswith("text_encoder"))
        }  # fmt: skip
        if not hits:
            raise LoRAError(
                f"LoRA target {target!r} matches no Linear or Conv2d module; presets: "
                f"{', '.join(PRESETS)}; modules: {', '.join(names)}"
            )
        chosen |= hits
    return [n for n in names if n in chosen]


class LoRASet(nn.Module):
    """The adapters of one network: a :class:`LoRALayer` per adapted module, keyed by its name.

    ``scale`` multiplies every update (sampling's ``--lora-scale``); the set adds nothing until
    applied to the network it was built for (:meth:`applied` or :meth:`attach`).
    """

    def __init__(self, net: nn.Module, config: LoRAConfig, modules: Sequence[str] | None = None):
        super().__init__()
        self.config = config
        self.scale = 1.0
        self.enabled = True
        names = list(modules) if modules is not None else resolve_targets(net, config.targets)
        self.layers = nn.ModuleDict(
            {n.replace(".", SEP): LoRALayer(net.get_submodule(n), config, n) for n in names}
        )

    @property
    def module_names(self) -> list[str]:
        return [k.replace(SEP, ".") for k in self.layers]

    def _pairs(self, net: nn.Module) -> Iterator[tuple[nn.Module, LoRALayer]]:
        for key, layer in self.layers.items():
            yield net.get_submodule(key.replace(SEP, ".")), layer

    def attach(self, net: nn.Module) -> list[torch.utils.hooks.RemovableHandle]:
        """Add the updates to ``net``'s outputs (forward hooks); remove the returned handles to
        take them off again."""

        def hook_for(layer: LoRALayer):
            def hook(module, args, output):
                if not self.enabled:
                    return output
                return output + self.scale * layer(args[0]).to(output.dtype)

            return hook

        return [m.register_forward_hook(hook_for(layer)) for m, layer in self._pairs(net)]

    @contextmanager
    def applied(self, net: nn.Module) -> Iterator[nn.Module]:
        """``net`` with the updates added, for the duration of the block."""
        handles = self.attach(net)
        try:
            yield net
        finally:
            for h in handles:
                h.remove()

    @contextmanager
    def disabled(self) -> Iterator[None]:
        """Applied sets add nothing for the duration of the block (a frozen reference)."""
        self.enabled = False
        try:
            yield
        finally:
            self.enabled = True

    @torch.no_grad()
    def merge_into(self, net: nn.Module) -> None:
        """W <- W + scale (alpha / r) B A for every adapted layer of ``net`` (in place)."""
        for module, layer in self._pairs(net):
            delta = layer.weight_delta().to(module.weight.dtype, copy=False)
            module.weight.add_(self.scale * delta)

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())


__all__ = [
    "DEFAULT_TARGETS", "PRESETS", "LoRAConfig", "LoRAError", "LoRALayer", "LoRASet", "adaptable",
    "resolve_targets",
]  # fmt: skip
