"""Tuned time grids stored in a run directory, and the rule of which grid a run samples with.

``tuned_grids.json`` lies beside config.json::

    {"format": "pixdiff-tuned-grids", "version": 1,
     "grids": {"SAMPLER": {"NFE": {"times": [t_0, ..., 0], "steps": K, "rmse": r,
                                    "fixed_rmse": {"trailing": ...}, "tuned_on": {...}}}}}

keyed by sampler and network-evaluation budget. ``pixdiff tune-grid`` searches the grids
(:mod:`pixdiff.eval.grid_tuning`) and writes them here, one entry at a time, atomically; a
:class:`~pixdiff.sampling.Sampling` takes one as its explicit ``times``. ``rmse`` is the tuned
grid's mean per-image RMSE to the teacher's endpoint on the warm-up noise, ``fixed_rmse`` the
same for the fixed grids, ``tuned_on`` how the grid was searched.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from pixdiff.checkpoint import CONFIG, CheckpointError, malformed, read_json, write_json
from pixdiff.formats.diffusers_import import run_spacing
from pixdiff.samplers import get_sampler
from pixdiff.sampling import Sampling, check_times

FILE = "tuned_grids.json"
FORMAT, VERSION = "pixdiff-tuned-grids", 1
TUNED = "tuned"  # the --grid value that asks for a run's tuned grid


@dataclass(frozen=True)
class TunedGrid:
    """One tuned grid: ``times`` (steps + 1 decreasing times ending at 0) for ``sampler`` at a
    budget of ``nfe`` network evaluations."""

    sampler: str
    nfe: int
    times: tuple[float, ...]
    rmse: float
    fixed_rmse: dict[str, float] = field(default_factory=dict)
    tuned_on: dict = field(default_factory=dict)

    def __post_init__(self):
        check_times(self.times, len(self.times) - 1)

    @property
    def steps(self) -> int:
        return len(self.times) - 1

    def to_dict(self) -> dict:
        return {
            "times": list(self.times),
            "steps": self.steps,
            "rmse": self.rmse,
            "fixed_rmse": dict(self.fixed_rmse),
            "tuned_on": dict(self.tuned_on),
        }


def grids_path(run: str | Path) -> Path:
    """``tuned_grids.json`` of a run directory (or beside a checkpoint file)."""
    run = Path(run)
    return run / FILE if run.is_dir() or not run.suffix else run.parent / FILE


def read_grids(run: str | Path) -> dict[str, dict[int, TunedGrid]]:
    """sampler -> NFE -> TunedGrid of a run; empty when it has no tuned grids. A damaged file
    raises one CheckpointError line naming the file and the entry."""
    path = grids_path(run)
    if not path.exists():
        return {}
    doc = read_json(path)
    if doc.get("format") != FORMAT or doc.get("version") != VERSION:
        raise CheckpointError(
            f"{path} is not a pixdiff tuned-grids file (format {FORMAT!r}, version {VERSION}); "
            f"move it aside and run `pixdiff tune-grid` again"
        )
    grids: dict[str, dict[int, TunedGrid]] = {}
    with malformed(path, "grids"):
        for sampler, budgets in doc["grids"].items():
            for nfe, entry in budgets.items():
                with malformed(path, f"grids.{sampler}.{nfe}"):
                    grids.setdefault(sampler, {})[int(nfe)] = _grid_from_dict(sampler, nfe, entry)
    return grids


def _grid_from_dict(sampler: str, nfe: str, entry: dict) -> TunedGrid:
    times = tuple(float(t) for t in entry["times"])
    if entry["steps"] != len(times) - 1:
        raise ValueError(f"steps {entry['steps']} but {len(times)} times")
    return TunedGrid(
        sampler, int(nfe), times, float(entry["rmse"]),
        {k: float(v) for k, v in entry.get("fixed_rmse", {}).items()},
        dict(entry.get("tuned_on", {})),
    )  # fmt: skip


def write_grid(run: str | Path, grid: TunedGrid) -> Path:
    """Add (or replace) one tuned grid in the run's file, atomically; the others are kept.
    Returns the file's path."""
    path = grids_path(run)
    if not (path.parent / CONFIG).exists():
        raise FileNotFoundError(f"{path.parent} is not a run directory (no {CONFIG})")
    grids = read_grids(run)  # a damaged file stops here, before anything is replaced
    grids.setdefault(grid.sampler, {})[grid.nfe] = grid
    doc = {
        "format": FORMAT,
        "version": VERSION,
        "grids": {
            name: {str(nfe): g.to_dict() for nfe, g in sorted(budgets.items())}
            for name, budgets in sorted(grids.items())
        },
    }
    write_json(path, doc)
    return path


def find_grid(
    run: str | Path, sampler: str, *, nfe: int | None = None, steps: int | None = None
) -> TunedGrid | None:
    """The run's tuned grid for ``sampler`` at a budget of ``nfe`` evaluations, or of ``steps``
    steps; None when it has none."""
    budgets = read_grids(run).get(sampler, {})
    if nfe is not None:
        return budgets.get(nfe)
    return next((g for _, g in sorted(budgets.items()) if g.steps == steps), None)


def missing_message(run: str | Path, sampler: str, nfe: int) -> str:
    """The one line for a tuned grid that is not there, saying how to make it."""
    return (
        f"no tuned grid for {sampler} at {nfe} NFE in {Path(run)}; make one with "
        f"`pixdiff tune-grid {Path(run)} --nfe {nfe} --sampler {sampler}`"
    )


def run_sampling(
    run: str | Path | None,
    sampler: str,
    steps: int,
    *,
    nfe: int | None = None,
    grid: str | None = None,
    options: dict | None = None,
) -> tuple[Sampling, TunedGrid | None]:
    """How a run samples ``steps`` steps of ``sampler`` (at a budget of ``nfe``, when given),
    and the tuned grid used, if any.

    ``grid`` a fixed spacing: that grid. ``"tuned"``: the run's tuned grid for the sampler and
    budget, which must exist (ValueError saying how to make it). None: the run's tuned grid
    where it has one, else the run's own spacing (an imported diffusers model's
    ``timestep_spacing``), else the schedule's default grid.
    """
    if grid not in (None, TUNED):
        return Sampling(sampler, steps, grid, options), None
    if run is None:
        if grid == TUNED:
            raise ValueError(
                "--grid tuned reads one run's tuned grids: use it with `pixdiff sample RUN` "
                "(not with --cascade or the editing commands)"
            )
        return Sampling(sampler, steps, None, options), None
    found = find_grid(run, sampler, nfe=nfe, steps=None if nfe is not None else steps)
    if found is not None and found.steps != steps:
        found = None  # tuned for another step count of this budget (other sampler options)
    if found is None and grid == TUNED:
        budget = nfe if nfe is not None else get_sampler(sampler).total_nfe(steps, options)
        raise ValueError(missing_message(run, sampler, budget))
    if found is None:
        return Sampling(sampler, steps, run_spacing(run), options), None
    return Sampling(sampler, steps, None, options, times=found.times), found
