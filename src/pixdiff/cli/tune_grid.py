"""``pixdiff tune-grid``: search a run's time grids for few-step sampling and store them in it."""

from __future__ import annotations

import time
from pathlib import Path

from pixdiff.cli import flags
from pixdiff.cli.bench import parse_list
from pixdiff.eval.grid_search import FIXED_GRIDS
from pixdiff.eval.grid_tuning import tune_all, warmup
from pixdiff.eval.sampler_sweep import check_samplers
from pixdiff.tuned_grids import TunedGrid, grids_path, read_grids, write_grid

DEFAULT_NFES = "4,5,6,8,10"


def add_parser(sub) -> None:
    p = sub.add_parser(
        "tune-grid",
        help="tune a run's time grids for few-step sampling (stored in the run)",
        description="For each NFE budget, find the time grid on which --sampler best follows "
        "the model's own high-accuracy ODE solution: a teacher solve (DPM-Solver++(2M), "
        "float64) on -n warm-up noises over --candidates times uniform in log-SNR, then "
        "dynamic programming over one-step costs (GITS, Chen et al. 2024), optionally refined "
        "by descent on the final error (--refine; LD3, Tong et al. 2025). A fixed grid that "
        "does better on the warm-up noises is kept instead. The grids go into "
        "RUN/tuned_grids.json (keyed by sampler and NFE); `pixdiff sample RUN --nfe N` then "
        "uses them by default, and `--grid tuned` asks for them. See docs/concepts.md, Tuned "
        "time grids.",
    )
    p.add_argument("run", metavar="RUN", help="run directory (the grids are written into it)")
    p.add_argument("--nfe", default=DEFAULT_NFES, help="comma-separated network-evaluation budgets")
    p.add_argument(
        "--sampler",
        default=None,
        metavar="NAME[,NAME...]",
        help="deterministic sampler(s) to tune for, comma-separated (one teacher solve serves "
        "them all); None: the run's sampler",
    )
    flags.add_num_flag(p, default=64, help="warm-up noises", type=flags.int_in(1, 4096), old_n=True)
    p.add_argument(
        "--reference-steps",
        type=flags.int_in(2),
        default=200,
        help="steps of the teacher's solve (rounded to whole steps per candidate interval)",
    )
    p.add_argument(
        "--candidates",
        type=flags.int_in(3, 2000),
        default=100,
        help="candidate times the grids are chosen from",
    )
    p.add_argument(
        "--refine",
        type=flags.int_in(1, 100),
        nargs="?",
        const=6,
        default=0,
        metavar="ITERS",
        help="refine each grid by ITERS descent steps on its final error (6 when given bare; "
        "each step runs the sampler 2 (steps - 1) + 1 or more times)",
    )
    p.add_argument(
        "--last-step",
        choices=("auto", "free", "denoise"),
        default="auto",
        help="free: the cheapest path of the search, whose last step may be a long one to t = 0 "
        "(its image is then the blurred posterior mean there: low RMSE, soft detail); denoise: "
        "the last evaluation is at nearly zero noise, as the uniform-t, log-SNR and Karras grids "
        "end (one NFE of the budget; sharper images); auto: free for DDIM, denoise for the "
        "rest, as measured on FD (BENCHMARKS.md, Tuned time grids)",
    )
    p.add_argument(
        "--guidance",
        type=flags.finite,
        default=None,
        help="classifier-free guidance w of the warm-up samples; None: the run's",
    )
    p.add_argument(
        "--seed", type=flags.seed, default=10_000, help="seed of the warm-up noises (seed + i)"
    )
    p.add_argument("--raw", action="store_true", help="use the raw (non-EMA) weights")
    flags.add_device_flag(p)
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def run(args) -> int:
    model = flags.load_model(args.run, ema=not args.raw, device=args.device)
    if model.sr is not None:
        raise ValueError(f"{model.path} is a super-resolution model; tune-grid tunes base models")
    own = model.config["train"]["sample"]["sampler"]
    samplers = parse_list(args.sampler or own, str, "--sampler")
    check_samplers(samplers)
    nfes = sorted({flags.nfe_budget(n) for n in parse_list(args.nfe, int, "--nfe")})
    if nfes[0] < 1:
        raise ValueError(f"--nfe budgets must be >= 1, got {args.nfe!r}")
    read_grids(model.path)  # a damaged tuned_grids.json stops here, before minutes of work
    start = time.perf_counter()
    warm = warmup(model, n=args.num, seed=args.seed, guidance=args.guidance, device=args.device)
    about = warm.about
    print(
        f"warm-up: {args.num} noises (seeds {args.seed}..{args.seed + args.num - 1}), "
        f"{about['conditioning']}, guidance {about['guidance']:g}; tuning "
        f"{', '.join(samplers)} at NFE {', '.join(map(str, nfes))}",
        flush=True,
    )
    print(
        f"{'sampler':<12}{'NFE':>4}{'steps':>6}{'tuned':>9}"
        + "".join(f"{g:>11}" for g in FIXED_GRIDS)
    )

    def store(grid: TunedGrid) -> None:
        write_grid(model.path, grid)
        fixed = "".join(  # "-": not a candidate (absent, or not ending denoised)
            f"{grid.fixed_rmse[g]:>11.4f}" if g in grid.fixed_rmse else f"{'-':>11}"
            for g in FIXED_GRIDS
        )
        row = f"{grid.sampler:<12}{grid.nfe:>4}{grid.steps:>6}{grid.rmse:>9.4f}{fixed}"
        print(f"{row}   ({grid.tuned_on['start']})", flush=True)

    tune_all(
        warm, samplers, nfes, candidates=args.candidates, reference_steps=args.reference_steps,
        refine=args.refine, last_step=args.last_step, sigma_data=model.denoiser.sigma_data,
        on_grid=store,
        progress=not args.no_progress,
    )  # fmt: skip
    seconds = time.perf_counter() - start
    print(f"RMSE to the teacher's endpoint on the warm-up noises; {seconds:.0f} s")
    print(f"wrote {grids_path(model.path)}; use: pixdiff sample {Path(args.run)} --nfe N")
    return 0
