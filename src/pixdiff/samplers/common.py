"""Pieces every sampler shares: per-sample noise, the step loop, and its safety checks."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor
from tqdm.auto import tqdm

from pixdiff.conditioning import Cond
from pixdiff.denoiser import Denoised

Generators = torch.Generator | Sequence[torch.Generator] | None
# The denoiser contract samplers rely on: (x_t, t, cond) -> Denoised, plus a .schedule.
DenoiserFn = Callable[[Tensor, Tensor, Cond | None], Denoised]


class SamplingError(RuntimeError):
    """The sampler state went bad (NaN or inf); the message names the step."""


def per_sample_generators(seed: int | Sequence[int], n: int) -> list[torch.Generator]:
    """One CPU generator per sample, seeded seed + i, so sample i never depends on the batch size
    (per-sample seeding as in NVlabs/edm's generate.py)."""
    seeds = [seed + i for i in range(n)] if isinstance(seed, int) else list(seed)
    if len(seeds) != n:
        raise ValueError(f"got {len(seeds)} seeds for {n} samples")
    return [torch.Generator().manual_seed(int(s)) for s in seeds]


def randn(
    shape: Sequence[int],
    generator: Generators,
    *,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
) -> Tensor:
    """Standard normal noise; with a list of generators, row i is drawn from generator i.

    Per-sample (list) noise is drawn in float32 and cast, so a float64 run of the same seeds
    starts from, and adds, the same noise as a float32 one.
    """
    if generator is None or isinstance(generator, torch.Generator):
        gen_device = generator.device if generator is not None else device
        return torch.randn(tuple(shape), generator=generator, device=gen_device, dtype=dtype).to(
            device
        )
    if len(generator) != shape[0]:
        raise ValueError(f"{len(generator)} generators for a batch of {shape[0]}")
    rows = [torch.randn(tuple(shape[1:]), generator=g) for g in generator]
    return torch.stack(rows).to(device=device, dtype=dtype)


def randn_like(x: Tensor, generator: Generators) -> Tensor:
    return randn(x.shape, generator, device=x.device, dtype=x.dtype)


def run_steps(
    step: Callable[[Tensor, Tensor, Tensor, int], Tensor],
    x: Tensor,
    ts: Tensor,
    *,
    progress: bool = False,
    desc: str = "sampling",
) -> Tensor:
    """Apply ``step(x, t, s, i)`` over consecutive grid pairs (t > s), checking the state.

    Raises SamplingError naming the step at which x stopped being finite.
    """
    check_grid(ts)
    pairs = list(zip(ts[:-1], ts[1:], strict=True))
    for i, (t, s) in enumerate(tqdm(pairs, desc=desc, disable=not progress, leave=False)):
        x = step(x, t, s, i)
        if not torch.isfinite(x).all():
            raise SamplingError(
                f"sampler state became NaN/inf at step {i + 1} of {len(pairs)} "
                f"(t={t.item():.4g} -> {s.item():.4g})"
            )
    return x


def check_grid(ts: Tensor) -> None:
    if ts.dim() != 1 or ts.numel() < 2:
        raise ValueError(f"a time grid needs at least 2 times, got shape {tuple(ts.shape)}")
    if not bool((ts[1:] < ts[:-1]).all()):
        raise ValueError("a time grid must be strictly decreasing")
    if ts[0] > 1 or ts[-1] < 0:
        raise ValueError(f"grid times must lie in [0, 1], got [{ts[-1].item()}, {ts[0].item()}]")


def half_log_snr(schedule, t: Tensor) -> Tensor:
    """lambda = log(alpha / sigma) = log_snr / 2, the time variable of the exponential
    integrators (DPM-Solver, Lu et al. 2022, Sec. 3.1); +inf where sigma = 0 (t = 0 on VP, flow
    and EDM paths), -inf where alpha = 0 (t = 1 on flow and zero-terminal-SNR paths)."""
    return schedule.log_snr(t) / 2


# The largest drop of sigma~ = sigma / alpha across one step that a multi-stage step (Heun's
# trapezoid, singlestep DPM-Solver's intermediate stages, PNDM's pseudo Runge-Kutta) takes.
MAX_STAGE_RATIO = 100.0


def large_stage_ratio(edm_sigma_t: Tensor, edm_sigma_s: Tensor) -> bool:
    """Whether a step from sigma~_t down to sigma~_s shrinks sigma~ = sigma / alpha more than
    MAX_STAGE_RATIO-fold, where a multi-stage method takes its first-order step instead. This
    includes the steps to sigma~ = 0 and from sigma~ = inf.

    The stages extrapolate the change of the x0 estimate across the step (Heun's trapezoid adds
    (sigma~_t / sigma~_s) / 2 times it). Across a huge drop they amplify it hundreds of times and
    fall behind the first-order step: the first step of a trailing grid on the discrete cosine
    schedule falls from sigma~ ~2e4 to 6 (10 steps) or 16 (25 steps), 1,300 to 3,200-fold, and
    there DPM-Solver-2/3 measured 4x the error of DDIM on the shipped model. The bound lies above
    the drops of the grids these methods were designed for, which they take as published: at
    most 85-fold per step on EDM's 5-step Karras grid, 42-fold on 5-step log-SNR-uniform grids.
    """
    return bool(edm_sigma_t > MAX_STAGE_RATIO * edm_sigma_s)


def multistep_order(
    order: int, history: int, i: int, steps: int, s: Tensor, lower_order_final: bool
) -> int:
    """The order a multistep solver can use on step i (0-based) of ``steps``, going to time s.

    Lower orders warm up while the history is short. The step to t = 0 is first order: where
    sigma(0) = 0 its higher-order terms divide by an infinite step, and on clipped schedules
    (vp-cosine, VE) it is a long step in lambda over which extrapolating x0 overshoots (as
    diffusers' DPM-Solver++ with final_sigmas_type="zero"). With ``lower_order_final`` and
    fewer than 10 steps the last steps drop to orders ..., 2, 1 also on grids ending at t > 0
    (Lu et al. 2022b, official DPM-Solver code, ``steps < 10``).
    """
    k = min(order, history)
    if lower_order_final and steps < 10:
        k = min(k, steps - i)
    return 1 if s == 0 else k
