"""Classifier-free guidance with two conditions, each with its own scale (InstructPix2Pix,
Brooks et al. 2023, Eq. 3): a spatial map c_I and a text prompt or class c_T.

    e~(x_t, c_I, c_T) = e(x_t, 0, 0) + s_I (e(x_t, c_I, 0) - e(x_t, 0, 0))
                                     + s_T (e(x_t, c_I, c_T) - e(x_t, c_I, 0))

where 0 is the dropped condition (the null map, the empty prompt or the null label). The order
matters: the map is guided against nothing, then the text given the map. x0 and eps are mixed
with the same weights, as in single-condition CFG (:mod:`pixdiff.guidance`), so the result stays
on the path. Written as weights on the three branches, e~ = (1 - s_I) e_00 + (s_I - s_T) e_I0 +
s_T e_IT: a branch whose weight is 0 is not computed (s_I = 1 is text CFG given the map, s_I =
s_T is CFG on both conditions together), and the others go through the network in ONE batched
call. The guidance interval applies as in CFG (outside it the conditional estimate, without
the other branches) and CFG-rescale to the composed x0.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

from pixdiff.conditioning import Cond
from pixdiff.denoiser import Denoised
from pixdiff.guidance import (
    DenoiserWrapper,
    cfg_mix,
    cfg_rescale,
    check_interval,
    check_rescale,
    interval_rows,
    per_sample_t,
)
from pixdiff.prediction import eps_from_x0


def compose(e_00: Tensor | None, e_i0: Tensor | None, e_it: Tensor, s_i: float, s_t: float):
    """Brooks et al. 2023, Eq. 3 from the branches it needs (None where the weight is 0):
    e_00 + s_I (e_I0 - e_00) + s_T (e_IT - e_I0)."""
    if e_00 is None:  # s_I = 1: classifier-free guidance of the text, given the map
        return cfg_mix(e_i0, e_it, s_t)
    if e_i0 is None:  # s_I = s_T: both conditions guided together
        return cfg_mix(e_00, e_it, s_t)
    return cfg_mix(e_00, e_i0, s_i) + s_t * (e_it - e_i0)


class MultiModalGuidance(DenoiserWrapper):
    """Two-condition classifier-free guidance (Brooks et al. 2023, Eq. 3) of ``denoiser``.

    Args:
        map_scale: s_I, the scale of the map c_I.
        text_scale: s_T, the scale of the text or class c_T given the map.
        drop_map: the Cond with the map dropped (the null map), other fields kept.
        drop_text: the Cond with the text or class dropped (the empty prompt, the null label),
            the map kept.
        interval: (t_lo, t_hi): guide only there (Kynkaanniemi et al. 2024).
        rescale: CFG-rescale phi of the composed x0 (Lin et al. 2023, Sec. 3.4).
    """

    def __init__(
        self,
        denoiser: nn.Module,
        *,
        map_scale: float,
        text_scale: float,
        drop_map: Callable[[Cond], Cond],
        drop_text: Callable[[Cond], Cond],
        interval: tuple[float, float] | None = None,
        rescale: float = 0.0,
    ):
        super().__init__(denoiser)
        check_interval(interval)
        check_rescale(rescale)
        self.map_scale, self.text_scale = map_scale, text_scale
        self.drop_map, self.drop_text = drop_map, drop_text
        self.interval, self.rescale = interval, rescale

    def branches(self, cond: Cond) -> dict[str, Cond]:
        """The Conds of the branches whose weight is not 0: "i0" (map, no text), "00"."""
        out = {}
        if self.map_scale != self.text_scale:
            out["i0"] = self.drop_text(cond)
        if self.map_scale != 1:
            out["00"] = self.drop_map(self.drop_text(cond))
        return out

    def forward(self, x_t: Tensor, t: Tensor | float, cond: Cond | None = None) -> Denoised:
        if cond is None:
            raise ValueError("multi-modal guidance needs a condition (a map and a prompt)")
        t_n = per_sample_t(t, x_t)
        rows = interval_rows(t_n, self.interval)
        others = self.branches(cond.index(rows))
        if rows.numel() == 0 or (not others and self.text_scale == 1):
            return self.denoiser(x_t, t, cond)
        n, k = x_t.shape[0], len(others)
        out = self.denoiser(
            torch.cat([x_t, *[x_t[rows]] * k]),
            torch.cat([t_n, *[t_n[rows]] * k]),
            Cond.cat([cond, *others.values()]),
        )
        main = Denoised(*(None if v is None else v[:n] for v in out))
        m = rows.numel()
        part = {name: n + i * m for i, name in enumerate(others)}

        def mix(values: Tensor) -> Tensor:
            pick = {name: values[at : at + m] for name, at in part.items()}
            e_it = values[:n][rows]
            return compose(pick.get("00"), pick.get("i0"), e_it, self.map_scale, self.text_scale)

        x0, eps = mix(out.x0), mix(out.eps)
        if self.rescale:
            x0 = cfg_rescale(x0, main.x0[rows], self.rescale)
            eps = eps_from_x0(x_t[rows].to(x0.dtype), x0, self.coefs(t_n[rows], x_t[rows]))
        return Denoised(
            main.x0.index_copy(0, rows, x0), main.eps.index_copy(0, rows, eps), main.var_output,
            main.raw,
        )  # fmt: skip
