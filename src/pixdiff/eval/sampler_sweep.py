"""Sweep samplers against network evaluations (NFE) on a trained model.

Two scores, lower is better for both:
- ``rmse``: every sampler starts from the same noise (per-sample seeds), so its output can be
  compared image by image with a reference solution of the same probability-flow ODE: a
  deterministic sampler run with many steps in a float64 state. The score is the RMSE to that
  reference in [-1, 1] pixel units; its floor is the reference's own error, estimated as the
  distance between the reference and the same sampler with half its steps. Stochastic
  samplers do not converge to the ODE solution path by path, so they are refused.
- ``fd``: the Frechet distance of the samples to real data (pixdiff.eval.fid), for any sampler.

A sweep can score the same images by both (``sweep(scores=...)``), and the reference
solution itself by FD: the few-step rows then sit beside the many-step sampler's FD.
"""

from __future__ import annotations

import csv
import io
import itertools
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch
from torch import Tensor

from pixdiff.checkpoint import LoadedModel, read_tensors, save_tensors
from pixdiff.files import atomic_write
from pixdiff.pipelines.generate import generate
from pixdiff.pipelines.steering import Steering
from pixdiff.samplers import SAMPLERS, get_sampler
from pixdiff.sampling import Sampling, default_spacing
from pixdiff.tuned_grids import TUNED, find_grid

# the deterministic fixed-step samplers (ode-rk45 chooses its own steps)
DEFAULT_SAMPLERS = (
    "ddim",
    "euler",
    "heun",
    "lms",
    "plms",
    "pndm",
    "deis",
    "dpm-solver-2",
    "dpm-solver-3",
    "dpmpp-2s",
    "dpmpp-2m",
    "dpmpp-3m",
    "unipc-bh1",
    "unipc-bh2",
)
DEFAULT_NFES = (5, 10, 20, 50)


@dataclass(frozen=True)
class SweepRow:
    """One (sampler, budget) point; ``score``: the first metric's value (the mean per-image
    RMSE to the reference, or FD), which ranks the rows; ``scores``: every metric's value
    (metric -> value, the first one included).

    ``nfe`` is the evaluations the method's registry entry counts for ``steps``, at most
    ``budget``; ``grid`` the time grid's name ("tuned": the run's tuned grid).
    """

    sampler: str
    budget: int
    nfe: int
    steps: int
    score: float
    seconds: float
    grid: str = ""
    scores: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class SweepRequest:
    """What to sample: n images of the given classes (None: unconditional), guidance w; the
    swept samplers' own ``options`` (each must take them) and the network's precision
    ``net_dtype`` (the reference solution is drawn with neither: fp32 and its defaults)."""

    n: int = 64
    labels: Tensor | None = None
    guidance: float = 1.0
    seed: int = 0
    batch_size: int = 64
    device: str = "cpu"
    spacing: str | None = None
    options: Mapping | None = None
    net_dtype: str = "fp32"


def check_samplers(names: Sequence[str], *, pathwise: bool = True) -> None:
    """Refuse unknown and adaptive samplers, and stochastic ones when the score is pathwise."""
    for name in names:
        spec = get_sampler(name)  # unknown names raise with the list
        if spec.stochastic and pathwise:
            raise ValueError(
                f"{name!r} is stochastic: its samples do not converge to the reference path; "
                f"deterministic samplers: {', '.join(DEFAULT_SAMPLERS)} (or score with fd)"
            )
        if name == "ode-rk45":
            raise ValueError("ode-rk45 chooses its own steps; it has no fixed NFE budget")


def image_rmse(x: Tensor, ref: Tensor) -> Tensor:
    """Per-image root-mean-square difference of images clipped to [-1, 1]."""
    d = x.clamp(-1, 1).double() - ref.clamp(-1, 1).double()
    return d.flatten(1).pow(2).mean(1).sqrt()


def draw(
    model: LoadedModel,
    request: SweepRequest,
    sampler: str,
    steps: int,
    *,
    times: tuple[float, ...] | None = None,
    dtype=torch.float32,
    progress: bool = False,
) -> Tensor:
    """n images of ``sampler`` at ``steps`` from the request's seeds, on the request's grid
    or the explicit grid ``times``."""
    steering = Steering(classes=request.labels, guidance=request.guidance)
    sampling = Sampling(
        sampler, steps, request.spacing, request.options, times=times, net_dtype=request.net_dtype
    )
    return generate(
        model, steering, sampling, n=request.n, seed=request.seed,
        batch_size=request.batch_size, device=request.device, dtype=dtype, progress=progress,
    )  # fmt: skip


def reference(
    model: LoadedModel,
    request: SweepRequest,
    sampler: str,
    steps: int,
    *,
    cache: Path | None = None,
    key: str = "",
    progress: bool = False,
) -> tuple[Tensor, float]:
    """The reference solution (float64 state) and its floor: the RMSE between it and the same
    sampler with half the steps, an upper estimate of the reference's own error.

    With ``cache``, a reference saved there under the same ``key`` (which must describe the
    model and request) is reused, and a new one is saved.
    """
    check_samplers([sampler])
    key = f"{key}|{sampler}|{steps}|{request.n}|{request.seed}|{request.guidance}|{request.spacing}"
    if request.labels is not None:
        key += "|" + ",".join(map(str, request.labels.tolist()))
    if cache is not None and cache.exists():
        tensors, meta = read_tensors(cache)
        if meta.get("key") == key:
            return tensors["reference"], float(meta["floor"])
    request = replace(request, options=None, net_dtype="fp32")
    ref = draw(model, request, sampler, steps, dtype=torch.float64, progress=progress)
    half = draw(model, request, sampler, steps // 2, dtype=torch.float64, progress=progress)
    floor = image_rmse(half, ref).mean().item()
    if cache is not None:
        save_tensors(cache, {"reference": ref}, {"key": key, "floor": repr(floor)})
    return ref, floor


def sweep(
    model: LoadedModel,
    request: SweepRequest,
    scores: Mapping[str, Callable[[Tensor], float]],
    *,
    samplers: Sequence[str] = DEFAULT_SAMPLERS,
    nfes: Sequence[int] = DEFAULT_NFES,
    grids: Sequence[str | None] = (None,),
    pathwise: bool = True,
    on_row: Callable[[SweepRow], None] | None = None,
) -> list[SweepRow]:
    """Score every sampler at every budget it fits (budgets below its minimum are skipped), on
    each grid of ``grids``: a spacing, None (the request's) or "tuned" (the run's tuned grid
    for the sampler and budget, skipped where it has none).

    Args:
        scores: metric name -> score function, images (N, C, H, W) -> a number, lower is
            better (see ``rmse_score``, ``fd_score``); every row is scored by all of them,
            on the same images, and ranked by the first.
        pathwise: a score compares paths from the same noise (refuses stochastic samplers).
    """
    if not scores:
        raise ValueError("sweep needs at least one score")
    check_samplers(samplers, pathwise=pathwise)
    if any(b < 1 for b in nfes):
        raise ValueError(f"NFE budgets must be >= 1, got {list(nfes)}")
    rows = []
    for grid, name, budget in itertools.product(grids, samplers, nfes):
        spec = SAMPLERS[name]
        steps = spec.steps_for(budget, request.options)
        times = _tuned_times(model, name, budget, steps) if grid == TUNED else None
        if steps < spec.min_steps or (grid == TUNED and times is None):
            continue
        on = replace(request, spacing=request.spacing if grid in (None, TUNED) else grid)
        start = time.perf_counter()
        x = draw(model, on, name, steps, times=times)
        seconds = time.perf_counter() - start
        label = grid or request.spacing or default_spacing(model.denoiser.schedule)
        values = {metric: score(x) for metric, score in scores.items()}
        first = next(iter(values.values()))
        nfe = spec.total_nfe(steps, request.options)
        row = SweepRow(name, budget, nfe, steps, first, seconds, label, values)
        rows.append(row)
        if on_row is not None:
            on_row(row)
    return rows


def _tuned_times(model: LoadedModel, sampler: str, nfe: int, steps: int):
    """The run's tuned grid for ``sampler`` at ``nfe`` evaluations, or None."""
    found = find_grid(model.path, sampler, nfe=nfe)
    return found.times if found is not None and found.steps == steps else None


def rmse_score(ref: Tensor) -> Callable[[Tensor], float]:
    """The mean per-image RMSE to ``ref``."""
    return lambda x: image_rmse(x, ref).mean().item()


def fd_score(extractor, reference) -> Callable[[Tensor], float]:
    """The Frechet distance of the (clipped) images to the real ``reference`` statistics."""
    from pixdiff.eval.fid import FeatureStats, frechet_distance

    def score(x: Tensor) -> float:
        stats = FeatureStats.from_features(extractor.features(x.clamp(-1, 1)))
        return frechet_distance(stats, reference.stats)

    return score


def best_per_budget(rows: Sequence[SweepRow]) -> dict[int, SweepRow]:
    """The lowest-score row at each NFE budget."""
    best: dict[int, SweepRow] = {}
    for row in rows:
        if row.budget not in best or row.score < best[row.budget].score:
            best[row.budget] = row
    return dict(sorted(best.items()))


def write_csv(rows: Sequence[SweepRow], path: Path) -> None:
    """The sweep as CSV (one row per sampler, grid and budget), written atomically: the row's
    fields, then, where the rows have several metrics, one column per metric."""
    fields = [f for f in SweepRow.__dataclass_fields__ if f != "scores"]
    metrics = list(dict.fromkeys(m for row in rows for m in row.scores))
    metrics = metrics if len(metrics) > 1 else []
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=fields + metrics)
    w.writeheader()
    for row in rows:
        w.writerow(
            {**{f: getattr(row, f) for f in fields}, **{m: row.scores.get(m, "") for m in metrics}}
        )
    atomic_write(path, buf.getvalue().encode())


LINESTYLES = ("-", "--", ":", "-.", (0, (5, 1)), (0, (3, 1, 1, 1, 1, 1)), (0, (1, 3)))
MARKERS = ("o", "s", "^", "D", "v", "P", "X")


def series_styles(rows: Sequence[SweepRow]) -> dict[tuple[str, str], dict]:
    """matplotlib styles of the plot's lines, keyed by (sampler, grid): a colour per sampler
    (tab10, tab20, or evenly spaced turbo colours for more), a linestyle and marker per grid,
    so no two lines look alike."""
    import matplotlib

    samplers = list(dict.fromkeys(r.sampler for r in rows))
    grids = list(dict.fromkeys(r.grid for r in rows))
    k = len(samplers)
    palette = "tab10" if k <= 10 else "tab20" if k <= 20 else "turbo"
    cmap = matplotlib.colormaps[palette]
    colours = [cmap(i) if k <= 20 else cmap(i / (k - 1)) for i in range(k)]
    dashes = [*LINESTYLES, *((0, (1 + j, 2)) for j in range(len(grids) - len(LINESTYLES)))]
    return {
        (r.sampler, r.grid): {
            "color": matplotlib.colors.to_hex(colours[samplers.index(r.sampler)], keep_alpha=True),
            "linestyle": dashes[grids.index(r.grid)],
            "marker": MARKERS[grids.index(r.grid) % len(MARKERS)],
        }
        for r in rows
    }


def plot(
    rows: Sequence[SweepRow],
    path: Path,
    *,
    floor: float | None = None,
    title: str = "",
    ylabel: str = "RMSE to the reference solution (lower is better)",
) -> None:
    """The score against NFE, log-log, one line per sampler and grid (PNG; styles:
    :func:`series_styles`)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.5, 5), dpi=120)
    styles = series_styles(rows)
    several = len({grid for _, grid in styles}) > 1
    for (name, grid), style in styles.items():
        pts = [(r.nfe, r.score) for r in rows if (r.sampler, r.grid) == (name, grid)]
        label = f"{name} ({grid})" if several else name
        ax.plot(*zip(*pts, strict=True), **style, ms=3, label=label)
    if floor is not None:
        ax.axhline(floor, color="grey", lw=0.8, ls=":", label="floor")
    ax.set(xscale="log", yscale="log", xlabel="network evaluations (NFE)", title=title)
    ax.set_ylabel(ylabel)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    atomic_write(path, buf.getvalue())
    plt.close(fig)
