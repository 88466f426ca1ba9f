"""Parallel (Picard, ParaDiGMS) against sequential sampling on the shipped Fashion-MNIST model.

For each batch size it draws the same seeds with 100-step DDIM sequentially and by Picard
iteration at each tolerance, and reports the sequential network rounds, the NFE, the RMSE to
the sequential samples (images in [-1, 1]) and the wall-clock time of both, measured in the
same run with the contenders interleaved (medians of --repeats). It first times one network
call against the batch size: where that time grows with the batch (a CPU), batching the window
cannot pay. The issue's accuracy target: 100 steps in <= 25 rounds at RMSE <= 1e-3.

    .venv/bin/python bench/parallel_sampling.py --out out/bench-parallel
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from functools import partial
from pathlib import Path

import torch

from pixdiff.checkpoint import load
from pixdiff.conditioning import Cond
from pixdiff.pipelines.generate import generate
from pixdiff.samplers import Picard
from pixdiff.sampling import Sampling
from pixdiff.shipped import shipped_run

TARGET_ROUNDS, TARGET_RMSE = 25, 1e-3


def timed(fn, device: str) -> tuple[float, float, object]:
    """(wall seconds, CPU seconds of this process, result) of fn(), synchronizing a GPU around
    it. With one thread, CPU time is the wall-clock time of an idle machine; on a shared one it
    leaves out the time other processes held the cores."""
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    start, cpu = time.perf_counter(), time.process_time()
    result = fn()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return time.perf_counter() - start, time.process_time() - cpu, result


def call_times(model, sizes: list[int], device: str, repeats: int) -> dict[int, float]:
    """Median seconds of one denoiser call at each batch size (the network's batch scaling;
    CPU seconds on a CPU), unconditional as the runs below (the null label of a
    class-conditional model)."""
    out = {}
    with torch.no_grad():
        for n in sizes:
            x = torch.randn(n, *model.image_shape, device=device)
            t = torch.full((n,), 0.5, dtype=torch.float64, device=device)
            label = torch.full((n,), model.num_classes, device=device)
            cond = Cond(label=label) if model.num_classes else None
            model.denoiser(x, t, cond)  # warm-up
            call = partial(model.denoiser, x, t, cond)
            runs = [timed(call, device)[1 if device == "cpu" else 0] for _ in range(repeats)]
            out[n] = statistics.median(runs)
    return out


def compare(model, batch: int, args) -> list[dict]:
    """Sequential and Picard rows for one batch size, timings interleaved over the repeats."""
    settings = [None] + [(args.window, tol) for tol in args.tolerances]
    times: dict = {s: [] for s in settings}
    cpu_times: dict = {s: [] for s in settings}
    results, stats = {}, {}
    for _ in range(args.repeats):
        for s in settings:
            st: dict = {}
            parallel = None if s is None else Picard(window=s[0], tolerance=s[1], stats=st)
            run = Sampling("ddim", args.steps, parallel=parallel)
            draw = partial(generate, model, None, run, n=batch, seed=args.seed,
                           batch_size=batch, device=args.device)  # fmt: skip
            seconds, cpu, x = timed(draw, args.device)
            times[s].append(seconds)
            cpu_times[s].append(cpu)
            results[s], stats[s] = x, st
    seq_time, seq_cpu = statistics.median(times[None]), statistics.median(cpu_times[None])
    rows = [{"batch": batch, "mode": "sequential", "rounds": args.steps, "nfe": args.steps,
             "rmse": 0.0, "seconds": seq_time, "ratio": 1.0, "cpu": seq_cpu,
             "cpu_ratio": 1.0}]  # fmt: skip
    for s in settings[1:]:
        rmse = (results[s] - results[None]).square().mean().sqrt().item()
        seconds, cpu = statistics.median(times[s]), statistics.median(cpu_times[s])
        rows.append({
            "batch": batch, "mode": f"picard w={s[0]} tol={s[1]:g}", "rounds": stats[s]["rounds"],
            "nfe": stats[s]["nfe"], "rmse": rmse, "seconds": seconds, "ratio": seconds / seq_time,
            "cpu": cpu, "cpu_ratio": cpu / seq_cpu,
        })  # fmt: skip
    return rows


def table(rows: list[dict]) -> str:
    lines = [
        "| batch | mode | rounds | NFE | RMSE to sequential | wall s | wall vs sequential "
        "| CPU s | CPU vs sequential |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['batch']} | {r['mode']} | {r['rounds']} | {r['nfe']} | {r['rmse']:.1e} | "
            f"{r['seconds']:.2f} | {r['ratio']:.2f}x | {r['cpu']:.2f} | {r['cpu_ratio']:.2f}x |"
        )
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--batches", type=int, nargs="+", default=[1, 2, 4], help="batch sizes")
    p.add_argument("--steps", type=int, default=100, help="DDIM steps")
    p.add_argument("--window", type=int, default=Picard().window, help="Picard window")
    p.add_argument(
        "--tolerances", type=float, nargs="+", default=[1e-1, 1e-2, 1e-3, 1e-4], help="taus"
    )
    p.add_argument("--repeats", type=int, default=3, help="interleaved timing repeats")
    p.add_argument("--seed", type=int, default=0, help="seed; sample i uses seed + i")
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--threads", type=int, default=None, help="CPU threads (default: torch's)")
    p.add_argument("--out", default=None, help="folder for results.json and results.md")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    model = load(shipped_run("fashion"), device=args.device)
    sizes = sorted({1, 2, 4, 8, 16, 32, 64, *(b * args.window for b in args.batches)})
    per_call = call_times(model, sizes, args.device, args.repeats)
    print(
        "one network call:", ", ".join(f"batch {n}: {s * 1e3:.1f} ms" for n, s in per_call.items())
    )
    rows = [row for batch in args.batches for row in compare(model, batch, args)]
    met = [
        r for r in rows
        if r["mode"] != "sequential" and r["rounds"] <= TARGET_ROUNDS and r["rmse"] <= TARGET_RMSE
    ]  # fmt: skip
    summary = f"target (<= {TARGET_ROUNDS} rounds at RMSE <= {TARGET_RMSE:g}) met by: " + (
        "; ".join(f"batch {r['batch']} {r['mode']}" for r in met) or "none"
    )
    print(table(rows), summary, sep="\n\n")
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        record = {"args": vars(args), "per_call_seconds": per_call, "rows": rows}
        (out / "results.json").write_text(json.dumps(record, indent=2))
        (out / "results.md").write_text(table(rows) + "\n\n" + summary + "\n")


if __name__ == "__main__":
    main()
