"""A pixdiff network as a diffusers model (``ModelMixin``, ``ConfigMixin``).

``pixdiff export RUN --to diffusers DIR`` copies this file to ``DIR/pixdiff_model.py`` when the
run's network has no weight-for-weight ``UNet2DModel`` counterpart (a DiT, a text-conditioned
or super-resolution U-Net, a continuous-time schedule). It needs pixdiff and diffusers::

    import sys

    from diffusers import DDIMScheduler

    sys.path.insert(0, "DIR")
    from pixdiff_model import PixdiffModel

    unet = PixdiffModel.from_pretrained("DIR/unet")
    scheduler = DDIMScheduler.from_pretrained("DIR/scheduler")

``unet(sample, timestep, class_labels=None, input_ids=None, attention_mask=None).sample`` is the
network's prediction (the scheduler's ``prediction_type``) at diffusers' timestep index i,
which is pixdiff's time t = (i + 1) / T (docs/interop.md). A class-conditional network's
unconditional label is ``num_classes``; a text-conditioned one takes the token ids and mask
of :meth:`PixdiffModel.encode_prompt`, the empty prompt "" being the unconditional one.
Other conditions (``low_res``, ``low_res_noise``, ...) go in ``added_cond_kwargs`` under
their :class:`pixdiff.conditioning.Cond` names.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from diffusers import ConfigMixin, ModelMixin
from diffusers.configuration_utils import register_to_config
from diffusers.models.unets.unet_2d import UNet2DOutput
from torch import Tensor

from pixdiff.checkpoint import build_run_net
from pixdiff.conditioning import Cond, merge
from pixdiff.nets.prompts import Tokens
from pixdiff.nets.text import text_encoder_of
from pixdiff.schedule_registry import schedule_from_dict


class PixdiffModel(ModelMixin, ConfigMixin):
    """A pixdiff run's network, called like diffusers' ``UNet2DModel``.

    Args:
        run_config: the run's ``config.json`` (network, schedule, text encoder).
        num_train_timesteps: T of the scheduler's timestep indices.
    """

    @register_to_config
    def __init__(self, run_config: dict, num_train_timesteps: int = 1000):
        super().__init__()
        self.net = build_run_net(run_config, "unet/config.json")
        self.schedule = schedule_from_dict(run_config["train"]["diffusion"]["schedule"])

    def encode_prompt(self, prompts: Sequence[str]) -> tuple[Tensor, Tensor]:
        """(input_ids, attention_mask), each (N, L), of prompts for a text-conditioned net."""
        encoder = text_encoder_of(self.net)
        if encoder is None:
            raise ValueError("this network is not text-conditioned")
        ids, mask = encoder.tokenize(list(prompts))
        return ids.to(self.device), mask.to(self.device)

    def forward(
        self,
        sample: Tensor,
        timestep: Tensor | float,
        class_labels: Tensor | None = None,
        input_ids: Tensor | None = None,
        attention_mask: Tensor | None = None,
        added_cond_kwargs: dict[str, Tensor] | None = None,
        return_dict: bool = True,
    ) -> UNet2DOutput | tuple[Tensor]:
        """The network's output (N, C, H, W) for samples (N, C, H, W) at timestep indices."""
        index = torch.as_tensor(timestep, device=sample.device).double().expand(len(sample))
        c_noise = self.schedule.timestep((index + 1) / self.config.num_train_timesteps)
        cond = Cond(label=class_labels, **(added_cond_kwargs or {}))
        if input_ids is not None:
            tokens = Tokens(input_ids, attention_mask.bool())
            cond = merge(cond, text_encoder_of(self.net)(tokens))
        out = self.net(sample, c_noise.float(), cond if cond.present() else None)
        return UNet2DOutput(sample=out) if return_dict else (out,)
