"""--parallel picard, --window, --tolerance: run the sampler by Picard iteration (ParaDiGMS),
and the :class:`~pixdiff.samplers.Picard` they build."""

from __future__ import annotations

from pixdiff.samplers import Picard


def add_parallel_flags(p) -> None:
    """The parallel sampling group; its values are checked by :class:`Picard`."""
    g = p.add_argument_group(
        "parallel sampling (see docs/concepts.md, Parallel sampling)",
        "Picard iteration over a sliding window of steps (ParaDiGMS, Shih et al. 2023): the "
        "window's network calls run as one batch, so the same steps take fewer sequential "
        "network rounds but MORE network evaluations (NFE). On a CPU, whose time grows with "
        "the batch, it cannot lower wall-clock time at equal quality (1.4-2.6x slower than "
        "sequential at batch 1-4, see BENCHMARKS.md); it pays only where a GPU has spare batch "
        "capacity (small batches). Needs a one-step sampler (ddim, euler, ddpm, ...).",
    )
    g.add_argument("--parallel", choices=["picard"], default=None, help="parallel sampling")
    g.add_argument(
        "--window",
        type=int,
        default=None,
        metavar="W",
        help=f"steps per Picard window, >= 1 (default {Picard().window})",
    )
    g.add_argument(
        "--tolerance",
        type=float,
        default=None,
        metavar="TAU",
        help="how far a state may still move, as a fraction of its step's noise std, > 0; "
        "smaller is closer to the sequential sample, in more rounds "
        f"(default {Picard().tolerance:g})",
    )


def picard(args) -> Picard | None:
    """--parallel picard with --window and --tolerance as a Picard that counts rounds into its
    ``stats``; None without --parallel (and for commands without these flags)."""
    window, tolerance = getattr(args, "window", None), getattr(args, "tolerance", None)
    if getattr(args, "parallel", None) is None:
        if window is not None or tolerance is not None:
            raise ValueError("--window and --tolerance need --parallel picard")
        return None
    if getattr(args, "trajectory", False):
        raise ValueError("--trajectory records sequential steps; it does not go with --parallel")
    given = {"window": window, "tolerance": tolerance}
    return Picard(**{k: v for k, v in given.items() if v is not None}, stats={})
