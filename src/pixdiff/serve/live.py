"""The live view of a job: x_t and the predicted x0 at every network evaluation, as small PNGs.

:class:`LivePreview` wraps a model's own denoiser (below any guidance wrapper), so the same
hook works for generation, cascades, img2img, inpainting and upscaling: the server runs each
pipeline on a shallow copy of the model whose ``denoiser`` is the wrapper (:func:`watched`).
Nothing is buffered: every call hands its tensors to a callback, which may also stop the run
(cancellation, timeout) by raising.
"""

from __future__ import annotations

import base64
import dataclasses
from collections.abc import Callable

import torch
from torch import Tensor, nn

from pixdiff.conditioning import Cond
from pixdiff.denoiser import Denoised
from pixdiff.guidance import DenoiserWrapper
from pixdiff.images import make_grid, png_bytes, to_pil

# on_call(x_t, x0): x_t scaled for display, x0 None for the starting point before the first call
OnCall = Callable[[Tensor, Tensor | None], None]
PREVIEW_IMAGES = 8  # at most this many images of a job in a preview frame


class LivePreview(DenoiserWrapper):
    """Wraps a denoiser and hands the first ``rows`` rows of (x_t, predicted x0) of every call to
    ``on_call``, once before the first call (x0 None: the starting noise, so the first frame
    reaches a viewer before any network evaluation) and after every call.

    Under classifier-free guidance the wrapped (inner) denoiser sees the conditional rows first,
    then the second branch's: the first ``rows`` rows are the conditional estimate.
    """

    def __init__(self, denoiser: nn.Module, *, rows: int, on_call: OnCall):
        super().__init__(denoiser)
        self.rows, self.on_call, self.calls = rows, on_call, 0

    def forward(self, x_t: Tensor, t, cond: Cond | None = None) -> Denoised:
        shown = display_x_t(self.schedule, x_t[: self.rows], t)
        if self.calls == 0:
            self.on_call(shown, None)
        out = self.denoiser(x_t, t, cond)
        self.calls += 1
        self.on_call(shown, out.x0[: self.rows].detach())
        return out


def watched(model, *, rows: int, on_call: OnCall):
    """A shallow copy of a loaded model (a dataclass sharing its network) whose denoiser is a
    :class:`LivePreview` of its own."""
    return dataclasses.replace(
        model, denoiser=LivePreview(model.denoiser, rows=rows, on_call=on_call)
    )


def display_x_t(schedule, x_t: Tensor, t) -> Tensor:
    """x_t / sqrt(alpha(t)^2 + sigma(t)^2): unit scale on every path (a VE or EDM x_t starts at
    sigma ~ 80), so the frame shows the image emerging from the noise rather than saturating."""
    t = torch.as_tensor(t, dtype=torch.float64, device=x_t.device)
    t = t.expand(x_t.shape[0]) if t.dim() == 0 else t[: x_t.shape[0]]
    c = schedule.coefs(t, x_t.dim())
    return (x_t.double() / (c.alpha**2 + c.sigma**2).sqrt()).float().detach()


def frame_png(x: Tensor) -> str:
    """The first PREVIEW_IMAGES images of x (N, C, H, W) in [-1, 1] as one base64 PNG row."""
    x = x[:PREVIEW_IMAGES].clamp(-1, 1).cpu()
    return b64_png(make_grid(x, nrow=len(x), pad=1))


def b64_png(image: Tensor) -> str:
    """A (C, H, W) image in [-1, 1] as base64 PNG text."""
    return base64.b64encode(png_bytes(to_pil(image.clamp(-1, 1)))).decode("ascii")
