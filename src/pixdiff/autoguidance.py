"""Autoguidance (Karras et al. 2024, "Guiding a Diffusion Model with a Bad Version of Itself"):
guide a model with a weaker version of itself instead of its unconditional branch.

    D_w(x_t; t, c) = D_guide(x_t; t, c) + w (D_main(x_t; t, c) - D_guide(x_t; t, c))

is classifier-free guidance's extrapolation (Ho & Salimans 2022, Eq. 6; Karras et al. 2024,
Eq. 1) with the unconditional model replaced by a guide conditioned the same way: a smaller or
shorter-trained model of the same task, data, schedule and conditioning (Sec. 3). The two
models make errors of a similar kind in the same places, the weaker one more of them, so the
extrapolation pushes away from them without narrowing the distribution towards the class as
CFG does; it needs no condition, so unconditional models can be guided too. Both estimates are
mixed in x0 and eps with the same weights (``guidance.guided_rows``), so w = 1 is the main
model exactly, and the guidance interval and CFG-rescale apply as they do to CFG.
"""

from __future__ import annotations

from torch import Tensor, nn

from pixdiff.conditioning import Cond
from pixdiff.denoiser import Denoised
from pixdiff.guidance import (
    DenoiserWrapper,
    check_interval,
    check_rescale,
    guided_rows,
    interval_rows,
    per_sample_t,
)


class Autoguidance(DenoiserWrapper):
    """Autoguidance of ``denoiser`` by ``guide`` with scale w (Karras et al. 2024, Sec. 3).

    Args:
        denoiser: the main model, (x_t, t, cond) -> Denoised, with ``.schedule`` and ``.coefs``.
        guide: the weaker model on the same schedule, called with the same (x_t, t, cond).
        scale: w; 1 returns the main model's estimate unchanged (no guide pass).
        interval: (t_lo, t_hi): guide only there (Kynkaanniemi et al. 2024); elsewhere the
            main model's estimate, without the guide's pass.
        rescale: CFG-rescale phi in [0, 1] (Lin et al. 2023, Sec. 3.4); 0 is off.

    The returned ``var_output`` and ``raw`` are the main model's.
    """

    def __init__(
        self,
        denoiser: nn.Module,
        guide: nn.Module,
        *,
        scale: float,
        interval: tuple[float, float] | None = None,
        rescale: float = 0.0,
    ):
        super().__init__(denoiser)
        check_interval(interval)
        check_rescale(rescale)
        self.guide, self.scale, self.interval, self.rescale = guide, scale, interval, rescale

    @property
    def self_condition(self) -> bool:
        """Whether either model takes its previous x0 estimate (each drops it if it does not)."""
        return any(getattr(d, "self_condition", False) for d in (self.denoiser, self.guide))

    def forward(self, x_t: Tensor, t: Tensor | float, cond: Cond | None = None) -> Denoised:
        main = self.denoiser(x_t, t, cond)
        if self.scale == 1:
            return main
        t_n = per_sample_t(t, x_t)
        rows = interval_rows(t_n, self.interval)
        if rows.numel() == 0:
            return main
        other = self.guide(x_t[rows], t_n[rows], None if cond is None else cond.index(rows))
        return guided_rows(
            x_t, t_n, rows, main, other, scale=self.scale, rescale=self.rescale, coefs=self.coefs
        )
