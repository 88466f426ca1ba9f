"""``pixdiff bench samplers``: quality against network evaluations for every sampler."""

from __future__ import annotations

import json
import time
from pathlib import Path

from pixdiff.cli import flags
from pixdiff.cli.flags import add_run_argument, load_model
from pixdiff.eval.features import load_extractor
from pixdiff.eval.reference import reference_stats
from pixdiff.eval.sampler_sweep import (
    DEFAULT_NFES,
    DEFAULT_SAMPLERS,
    SweepRequest,
    SweepRow,
    best_per_budget,
    check_samplers,
    fd_score,
    plot,
    reference,
    rmse_score,
    sweep,
    write_csv,
)
from pixdiff.files import atomic_write
from pixdiff.pipelines.steering import class_ids, class_names
from pixdiff.precision import NET_DTYPES
from pixdiff.timesteps import SPACINGS
from pixdiff.tuned_grids import TUNED, find_grid, missing_message


def add_parser(sub) -> None:
    bench = sub.add_parser(
        "bench",
        help="benchmarks on a trained model",
        description="Benchmarks on a trained model (see BENCHMARKS.md).",
    )
    kinds = bench.add_subparsers(dest="bench", required=True, metavar="BENCHMARK")
    p = kinds.add_parser(
        "samplers",
        help="sweep samplers against NFE: distance to a reference solution, or FD",
        description="Run every sampler at every NFE budget from the same noise, score each by "
        "its per-image RMSE (pixels in [-1, 1]) to a float64 reference solution of the same "
        "ODE (only deterministic samplers converge to it) or, with --metric fd, by the "
        "Frechet distance to the run's dataset (--metric rmse,fd: both, on the same images, "
        "and the reference's own FD); write sweep.csv, sweep.png and summary.json into --out "
        "and print the best sampler for each budget. A run with tuned time grids (`pixdiff "
        "tune-grid`) is swept on them beside its default grid. The reference is kept in "
        "--out/reference.safetensors and reused by a later run with the same model, "
        "reference and images.",
    )
    add_run_argument(p)
    p.add_argument(
        "--samplers",
        default=",".join(DEFAULT_SAMPLERS),
        help="comma-separated deterministic samplers to sweep",
    )
    p.add_argument(
        "--nfe",
        default=",".join(map(str, DEFAULT_NFES)),
        help="comma-separated NFE budgets (a method gets the most steps that fit)",
    )
    flags.add_num_flag(p, default=64, help="images per sampler and budget")
    p.add_argument(
        "--metric",
        default="rmse",
        help="rmse: per-image RMSE to a many-step reference solution from the same noise "
        "(deterministic samplers); fd: Frechet distance to the run's dataset (any sampler; "
        "-n at least 129 with the default extractor, thousands for a stable value); "
        "rmse,fd or fd,rmse: both on the same images, ranked by the first, and the FD of "
        "the reference solution itself",
    )
    p.add_argument(
        "--extractor",
        default="fashion-classifier",
        help="feature extractor for --metric fd: 'fashion-classifier', 'inception' (weights "
        "from $PIXDIFF_INCEPTION_WEIGHTS), a TorchScript file or a classifier dir",
    )
    flags.add_sampler_option_flag(p, sweep=True)
    p.add_argument(
        "--dtype",
        default="fp32",
        choices=NET_DTYPES,
        help=f"{flags.DTYPE_HELP}. The reference solution is drawn in fp32, so the scores "
        "include the error of the lower precision",
    )
    p.add_argument("--reference-sampler", default="dpmpp-2m", help="sampler of the reference")
    p.add_argument(
        "--reference-steps", type=flags.int_in(2), default=500, help="steps of the reference"
    )
    p.add_argument(
        "--class",
        dest="class_",
        default="all",
        metavar="NAME_OR_ID",
        help="class name or id, or 'all' to cycle through the classes (conditional models)",
    )
    p.add_argument("--guidance", type=flags.finite, default=1.0, help="classifier-free guidance w")
    p.add_argument(
        "--grid",
        default=None,
        help="comma-separated time grids to sweep, from: "
        f"{', '.join(SPACINGS)}, {TUNED} (the run's tuned grids, `pixdiff tune-grid`, "
        "where it has one for the sampler and budget); default: the schedule's grid, and "
        f"{TUNED} beside it where the run has tuned grids for the samplers and budgets",
    )
    p.add_argument("--seed", type=flags.seed, default=0, help="seed; image i uses seed + i")
    p.add_argument("--out", default="out/bench-samplers", help="output directory")
    p.add_argument("--batch-size", type=flags.positive, default=64, help="images per sampler batch")
    p.add_argument("--raw", action="store_true", help="use the raw (non-EMA) weights")
    flags.add_device_flag(p)
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run_samplers)


LABELS = {"rmse": "RMSE", "fd": "FD"}  # --metric values and their column heads


def parse_list(text: str, kind: type, what: str) -> list:
    try:
        items = [kind(s.strip()) for s in text.split(",") if s.strip()]
    except ValueError:
        raise ValueError(f"{what} must be a comma-separated list, got {text!r}") from None
    if not items:
        raise ValueError(f"{what} is empty")
    return items


def run_samplers(args) -> int:
    samplers = parse_list(args.samplers, str, "--samplers")
    nfes = [flags.nfe_budget(nfe) for nfe in parse_list(args.nfe, int, "--nfe")]
    metrics = _metrics(args.metric)
    check_samplers(samplers, pathwise="rmse" in metrics)
    check_samplers([args.reference_sampler])
    if args.num < 1 or args.reference_steps < 2:
        raise ValueError("-n must be >= 1 and --reference-steps >= 2")
    model = load_model(args.run, ema=not args.raw, device=args.device)
    labels = class_ids(args.class_, class_names(model), args.num) if model.num_classes else None
    grids = _grids(args.grid, model, samplers, nfes)
    options = [flags.sampler_options(args, s) for s in samplers]  # each must take them
    request = SweepRequest(
        options=options[0],
        net_dtype=args.dtype,
        n=args.num,
        labels=labels,
        guidance=args.guidance,
        seed=args.seed,
        batch_size=args.batch_size,
        device=args.device,
        spacing=next((g for g in grids if g not in (None, TUNED)), None),
    )
    out = Path(args.out)
    start = time.perf_counter()
    scores, floor, reference_info = _scorers(args, metrics, model, request, out)
    label = LABELS[metrics[0]]
    head = f"{'sampler':<16}{'grid':<11}{'budget':>7}{'NFE':>5}{'steps':>7}"
    print(head + "".join(f"{LABELS[m]:>11}" for m in metrics) + f"{'s':>8}", flush=True)

    def show(row: SweepRow) -> None:
        values = "".join(f"{row.scores[m]:>11.3e}" for m in metrics)
        print(
            f"{row.sampler:<16}{row.grid:<11}{row.budget:>7}{row.nfe:>5}{row.steps:>7}"
            f"{values}{row.seconds:>8.1f}",
            flush=True,
        )

    rows = sweep(
        model,
        request,
        scores,
        samplers=samplers,
        nfes=nfes,
        grids=grids,
        pathwise="rmse" in metrics,
        on_row=show,
    )
    write_csv(rows, out / "sweep.csv")
    ylabel = (
        "RMSE to the reference solution (lower is better)"
        if metrics[0] == "rmse"
        else f"FD to {reference_info['data']} (lower is better)"
    )
    floor_line = floor if metrics[0] == "rmse" else None  # the RMSE floor, not on an FD plot
    plot(
        rows, out / "sweep.png", floor=floor_line, title=args.run or "shipped model", ylabel=ylabel
    )
    best = best_per_budget(rows)
    summary = {
        "run": args.run or "shipped",
        "metric": args.metric,
        "reference": reference_info,
        "num": args.num,
        "guidance": args.guidance,
        "class": args.class_,
        "grid": args.grid,
        "sampler_options": options[0],
        "dtype": args.dtype,
        "seed": args.seed,
        "seconds": time.perf_counter() - start,
        "best": {
            str(b): {
                "sampler": r.sampler,
                "grid": r.grid,
                "nfe": r.nfe,
                "score": r.score,
                "scores": r.scores,
            }  # fmt: skip
            for b, r in best.items()
        },
    }
    atomic_write(out / "summary.json", (json.dumps(summary, indent=2) + "\n").encode())
    print("best per budget:")
    for budget, row in best.items():
        print(
            f"  NFE <= {budget:>3}: {row.sampler}, {row.grid} grid ({label} {row.score:.3e}, "
            f"{row.nfe} NFE)"
        )
    print(f"wrote {out / 'sweep.csv'}, {out / 'sweep.png'}, {out / 'summary.json'}")
    return 0


def _metrics(text: str) -> list[str]:
    """--metric as a list of distinct metrics, the ranking one first."""
    metrics = list(dict.fromkeys(parse_list(text, str, "--metric")))
    unknown = [m for m in metrics if m not in LABELS]
    if unknown:
        raise ValueError(f"unknown --metric {unknown}; valid: rmse, fd, rmse,fd")
    return metrics


def _grids(text: str | None, model, samplers: list[str], nfes: list[int]) -> list[str | None]:
    """--grid as a list (None: the schedule's default grid, and "tuned" beside it where the
    run has a tuned grid for a sampler and budget swept); an explicit "tuned" needs at least
    one such grid."""
    tuned = any(find_grid(model.path, s, nfe=b) is not None for s in samplers for b in nfes)
    if text is None:
        return [None, TUNED] if tuned else [None]
    grids = list(dict.fromkeys(parse_list(text, str, "--grid")))
    unknown = [g for g in grids if g not in (*SPACINGS, TUNED)]
    if unknown:
        raise ValueError(f"unknown --grid {unknown}; valid: {', '.join(SPACINGS)}, {TUNED}")
    if TUNED in grids and not tuned:
        raise ValueError(missing_message(model.path, samplers[0], nfes[0]))
    return grids


def _scorers(args, metrics: list[str], model, request, out: Path):
    """(metric -> score function, floor or None, what the scores compare with) for --metric;
    with both metrics, the reference solution's own FD goes into the last."""
    scores, info, floor, ref = {}, {}, None, None
    if "rmse" in metrics:
        ref, floor, info = _rmse_reference(args, model, request, out)
        scores["rmse"] = rmse_score(ref)
    if "fd" in metrics:
        extractor = load_extractor(args.extractor, batch_size=args.batch_size, device=args.device)
        data = model.config["train"]["data"]["name"]
        reference_stats_ = reference_stats(data, "test" if data == "fashion-mnist" else "train",
                                           extractor, image_shape=model.image_shape)  # fmt: skip
        print(f"score: FD to {data} through {args.extractor}", flush=True)
        scores["fd"] = fd_score(extractor, reference_stats_)
        info = {**info, "data": data, "extractor": args.extractor}
        if ref is not None:
            info["fd"] = scores["fd"](ref)
            print(f"reference FD: {info['fd']:.3e}", flush=True)
    return {m: scores[m] for m in metrics}, floor, info


def _rmse_reference(args, model, request, out: Path):
    """(reference solution, its floor, what it is) for --metric rmse."""
    print(
        f"reference: {args.reference_sampler}, {args.reference_steps} steps, float64, "
        f"{args.num} images",
        flush=True,
    )
    ref, floor = reference(
        model,
        request,
        args.reference_sampler,
        args.reference_steps,
        cache=out / "reference.safetensors",
        key=f"{Path(args.run).resolve() if args.run else 'shipped'}|raw={args.raw}",
        progress=not args.no_progress,
    )
    print(f"reference floor (RMSE to itself at half the steps): {floor:.2e}", flush=True)
    info = {"sampler": args.reference_sampler, "steps": args.reference_steps, "floor_rmse": floor}
    return ref, floor, info
