"""A ControlNet adapter (Zhang et al. 2023) that steers a frozen pixdiff U-Net by a spatial map.

The adapter is a trainable copy of the base U-Net's timestep/condition embedding, encoder and
middle block, initialised from the base's weights. The map enters it through a small hint
encoder whose last conv starts at zero, added after the copy's input conv; every skip
connection and the middle block's output of the copy pass through a 1x1 conv that starts at
zero and are added to the base's own before its decoder (Zhang et al. 2023, Eq. 2 and Sec. 3.2):

    y = F(x; theta) + Z(F(x + Z(c; theta_z1); theta_c); theta_z2)

So an untrained adapter adds exact zeros and the base's output is unchanged, bit for bit. The
adapter's outputs are multiplied by a control scale (the strength, set at sampling time), and
rows whose map is the null map (all zeros, :class:`pixdiff.conditioning.Cond`) get none: for
them the controlled network is the base itself, which is the map-less branch of multi-modal
guidance (:mod:`pixdiff.multimodal_guidance`).
"""

from __future__ import annotations

from dataclasses import replace

from torch import Tensor, nn

from pixdiff.conditioning import Cond
from pixdiff.nets.checks import broadcast_c_noise, check_net_inputs
from pixdiff.nets.layers import network_input, zero_module
from pixdiff.nets.text import TextConditionedNet
from pixdiff.nets.unet import UNet, UNetConfig, encode

HINT_CHANNELS = 16  # width of the hint encoder (ControlNet's is 16-32-96-256 for 512 -> 64 px)


def unet_of(net: nn.Module) -> UNet:
    """The U-Net of a network (a text-conditioned one holds it as ``.net``); a one-line
    ValueError for any other network, which no ControlNet adapter can steer."""
    unet = net.net if isinstance(net, TextConditionedNet) else net
    if not isinstance(unet, UNet):
        raise ValueError(
            f"a ControlNet adapter needs a U-Net base model, this one is a {type(unet).__name__}"
        )
    return unet


class ControlAdapter(nn.Module):
    """The trainable copy of a U-Net's encoder that reads a control map (Zhang et al. 2023).

    ``adapter(x_t, c_noise, cond, control) -> (skip residuals, middle residual)``, shaped like
    the base's skip connections and middle output, for :meth:`UNet.forward`'s ``residuals``.

    Args:
        config: the base U-Net's config (the copy has the same encoder).
        control_channels: channels of the map (1 for edges, sketch and mask; 3 for a layout).
    """

    def __init__(self, config: UNetConfig, *, control_channels: int):
        super().__init__()
        if control_channels < 1:
            raise ValueError(f"control_channels must be >= 1, got {control_channels}")
        self.config, self.control_channels = config, control_channels
        copy = UNet(config)  # the decoder is built and dropped: the copy is the encoder only
        self.embed, self.input_blocks, self.middle = copy.embed, copy.input_blocks, copy.middle
        first = copy.skip_channels[0]
        self.hint = nn.Sequential(
            nn.Conv2d(control_channels, HINT_CHANNELS, 3, padding=1),
            nn.SiLU(),
            nn.Conv2d(HINT_CHANNELS, HINT_CHANNELS, 3, padding=1),
            nn.SiLU(),
            zero_module(nn.Conv2d(HINT_CHANNELS, first, 3, padding=1)),
        )
        self.zero_skips = nn.ModuleList(
            zero_module(nn.Conv2d(ch, ch, 1)) for ch in copy.skip_channels
        )
        top = config.model_channels * config.channel_mult[-1]
        self.zero_middle = zero_module(nn.Conv2d(top, top, 1))

    @classmethod
    def from_base(cls, base: nn.Module, *, control_channels: int) -> ControlAdapter:
        """An adapter whose copied encoder starts from the base network's weights."""
        unet = unet_of(base)
        adapter = cls(unet.config, control_channels=control_channels)
        for name in ("embed", "input_blocks", "middle"):
            getattr(adapter, name).load_state_dict(getattr(unet, name).state_dict())
        return adapter.to(next(unet.parameters()).device)

    def forward(
        self, x: Tensor, c_noise: Tensor, cond: Cond | None, control: Tensor
    ) -> tuple[list[Tensor], Tensor]:
        """x (N, C, H, W), c_noise (N,), the base's Cond, control (N, C', H, W) in [-1, 1]."""
        c_noise = broadcast_c_noise(c_noise, x.shape[0], x.device)
        multiple = 2 ** (len(self.config.channel_mult) - 1)
        cond = check_net_inputs(x, cond, self.config, multiple=multiple, who="ControlNet adapter")
        args = (self.embed(c_noise, cond), cond.context, cond.context_mask)
        hint = self.hint(control.to(x.dtype))
        skips, h = encode(
            self.input_blocks, self.middle, network_input(x, cond, self.config), args, hint
        )
        return [z(s) for z, s in zip(self.zero_skips, skips, strict=True)], self.zero_middle(h)


class ControlledNet(nn.Module):
    """A base network (a U-Net, or a text-conditioned one) steered by a ControlNet adapter:
    called like the base, ``(x_t, c_noise, cond)``, with the map in ``cond.control``.

    Args:
        net: the frozen base network (its state-dict keys stay ``net.*``).
        adapter: the :class:`ControlAdapter` (keys ``adapter.*``, saved on their own).
        scale: the control strength multiplying the adapter's outputs (1: as trained, 0: the
            base model).
    """

    def __init__(self, net: nn.Module, adapter: ControlAdapter, *, scale: float = 1.0):
        super().__init__()
        unet_of(net)  # refuses a base that is no U-Net
        self.net, self.adapter, self.scale = net, adapter, float(scale)

    @property
    def unet(self) -> UNet:
        return unet_of(self.net)

    @property
    def config(self) -> UNetConfig:
        """The base network's config (the map is the adapter's input, not the base's)."""
        return self.unet.config

    def at_scale(self, scale: float) -> ControlledNet:
        """The same base and adapter (shared, not copied) at another control strength."""
        return ControlledNet(self.net, self.adapter, scale=scale)

    def required_cond(self) -> list[str]:
        return [*self.unet.required_cond(), "control"]

    def forward(self, x: Tensor, c_noise: Tensor, cond: Cond | None = None) -> Tensor:
        if cond is None or cond.control is None:
            raise ValueError("a ControlNet-steered network needs the control map (cond.control)")
        rest = replace(cond, control=None)
        rest = rest if rest.present() else None
        present = cond.control.flatten(1).ne(0).any(dim=1)  # (N,) rows that have a map
        if self.scale == 0 or not bool(present.any()):
            return self.unet(x, c_noise, rest)
        skips, middle = self.adapter(x, c_noise, rest, cond.control)
        weight = (self.scale * present).to(middle.dtype)[:, None, None, None]  # (N, 1, 1, 1)
        residuals = ([r * weight for r in skips], middle * weight)
        return self.unet(x, c_noise, rest, residuals=residuals)

    def encode(self, prompts, *, warn: bool = True) -> Cond:
        """The base's prompt encoding (a text-conditioned base only)."""
        return self.net.encode(prompts, warn=warn)
