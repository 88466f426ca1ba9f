"""Load test of ``pixdiff serve`` on loopback: throughput, latency, errors and memory under 1, 4
and 16 concurrent clients, against the same images drawn in one batch through the Python API.

It starts ``pixdiff serve`` as a subprocess on a free loopback port (127.0.0.1 only), warms it
up, then for each client count runs that many clients, each sending 10-NFE Fashion-MNIST
requests (one image, a class, the run's guidance) one after another, until --seconds pass or
--max-requests are sent. It reports requests, throughput, p50 and p99 latency, 5xx, other
errors and 429s, and the server's resident memory after warm-up and after each phase (from
/metrics). In the same run (before and after the load phases) it times the same images
generated in one batch of --batch images through the Python API
(``pixdiff.load("fashion").generate``), with the server's --threads, and the time from a job's
start to its first live preview against one sampler step (streamed requests, idle server).
Everything is bounded in count and time; the server is stopped at the end.

    .venv/bin/python bench/serve_load.py --seconds 30 30 300 --max-requests 600
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import torch

import pixdiff

HOST = "127.0.0.1"  # loopback only


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def start_server(port: int, args) -> subprocess.Popen:
    """``pixdiff serve`` on HOST:port; returns once /healthz answers."""
    cmd = [sys.executable, "-m", "pixdiff.cli.main", "serve", "--host", HOST, "--port",
           str(port), "--queue", "256", "--max-n", "16", "--max-batch", str(args.max_batch),
           "--batch-window", str(args.batch_window), "--threads", str(args.threads)]  # fmt: skip
    env = {k: v for k, v in os.environ.items() if k != "PIXDIFF_SERVE_TOKEN"}
    server = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL)
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://{HOST}:{port}/healthz", timeout=1).status_code == 200:
                return server
        except httpx.TransportError:
            time.sleep(0.5)
    server.kill()
    raise SystemExit("pixdiff serve did not start within 180 s")


def body(k: int) -> dict:
    """The k-th request: one 10-NFE Fashion-MNIST image of class k mod 10, seed k."""
    return {"model": "fashion", "class": k % 10, "nfe": 10, "seed": k, "n": 1}


def phase(url: str, clients: int, seconds: float, max_requests: int) -> dict:
    """``clients`` threads sending requests back to back until the time or count runs out."""
    results: list[tuple[int, float]] = []  # (status, latency)
    lock, sent = threading.Lock(), [0]
    stop = time.monotonic() + seconds

    def client() -> None:
        with httpx.Client(base_url=url, timeout=300) as http:
            while time.monotonic() < stop:
                with lock:
                    if sent[0] >= max_requests:
                        return
                    k = sent[0] = sent[0] + 1
                t = time.monotonic()
                try:
                    status = http.post("/v1/generate", json=body(k)).status_code
                except httpx.TransportError:
                    status = 0
                with lock:
                    results.append((status, time.monotonic() - t))

    start = time.monotonic()
    threads = [threading.Thread(target=client) for _ in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.monotonic() - start
    ok = sorted(lat for status, lat in results if status == 200)
    return {
        "clients": clients,
        "requests": len(results),
        "seconds": round(elapsed, 2),
        "images_per_second": round(len(ok) / elapsed, 3),
        "p50_seconds": round(quantile(ok, 0.5), 3) if ok else None,
        "p99_seconds": round(quantile(ok, 0.99), 3) if ok else None,
        "5xx": sum(500 <= s < 600 for s, _ in results),
        "429": sum(s == 429 for s, _ in results),
        "other_errors": sum(s != 200 and s != 429 and not 500 <= s < 600 for s, _ in results),
    }


def quantile(sorted_values: list[float], q: float) -> float:
    """Nearest-rank quantile of sorted values."""
    return sorted_values[min(len(sorted_values) - 1, max(0, round(q * len(sorted_values)) - 1))]


def server_metrics(url: str) -> dict:
    return httpx.get(f"{url}/metrics?format=json").json()


def memory(url: str) -> int:
    return server_metrics(url)["process_resident_memory_bytes"]


def first_preview(url: str, runs: int) -> dict:
    """Streamed requests on the idle server: time from the job's ``started`` event to its first
    frame (``step`` 0, before any network evaluation) and to the first frame with a predicted
    x0 (step 1), against the median time of one sampler step (between step events)."""
    to_frame, to_x0, steps = [], [], []
    with httpx.Client(base_url=url, timeout=300) as http:
        for k in range(runs):
            seen: dict[str, float] = {}
            stamps = []
            with http.stream("POST", "/v1/generate?stream=true", json=body(k)) as r:
                for line in r.iter_lines():
                    now = time.monotonic()
                    if line.startswith("event: started"):
                        seen["started"] = now
                    elif line.startswith("event: step"):
                        stamps.append(now)
            to_frame.append(stamps[0] - seen["started"])
            to_x0.append(stamps[1] - seen["started"])
            steps += [b - a for a, b in zip(stamps[1:], stamps[2:], strict=False)]
    return {
        "started_to_first_frame_ms": round(1000 * statistics.median(to_frame), 2),
        "started_to_first_x0_ms": round(1000 * statistics.median(to_x0), 2),
        "one_step_ms": round(1000 * statistics.median(steps), 2),
    }


def python_batch(images: int, repeats: int) -> dict:
    """The same requests' images (classes k mod 10, 10 NFE) in one batch through the Python API,
    the median of ``repeats``, and one at a time for reference. Run before and after the load
    phases, since other work on the machine changes its speed."""
    model = pixdiff.load("fashion")
    classes = [k % 10 for k in range(images)]
    model.generate(classes=classes, n=images, nfe=10, batch_size=images)  # warm-up
    batch = []
    for _ in range(repeats):
        t = time.monotonic()
        model.generate(classes=classes, n=images, nfe=10, batch_size=images)
        batch.append(time.monotonic() - t)
    t = time.monotonic()
    for k in range(4):
        model.generate(classes=k % 10, n=1, nfe=10, seed=k)
    single = (time.monotonic() - t) / 4
    return {
        "batch": images,
        "batch_images_per_second": round(images / statistics.median(batch), 3),
        "one_at_a_time_images_per_second": round(1 / single, 3),
    }


def report(results: dict) -> str:
    lines = [
        "| clients | requests | seconds | images/s | p50 s | p99 s | 5xx | 429 | other errors "
        "| jobs per pass | memory after (MiB) |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for p in results["phases"]:
        lines.append(
            f"| {p['clients']} | {p['requests']} | {p['seconds']} | {p['images_per_second']} | "
            f"{p['p50_seconds']} | {p['p99_seconds']} | {p['5xx']} | {p['429']} | "
            f"{p['other_errors']} | {p['jobs_per_batch']} | {p['memory_after'] / 2**20:.1f} |"
        )
    return "\n".join(lines)


def targets(results: dict) -> dict:
    """The issue's targets, checked on this run."""
    last = results["phases"][-1]
    warm = results["memory_after_warmup"]
    python = results["python"]
    ratio = last["images_per_second"] / python["batch_images_per_second"]
    spread = [last["images_per_second"] / python[k]["batch_images_per_second"]
              for k in ("before", "after")]  # fmt: skip
    preview = results["preview"]
    return {
        "zero_5xx_under_16_clients": last["5xx"] == 0,
        "at_least_500_requests_under_16_clients": last["requests"] >= 500,
        "memory_within_10_percent": abs(last["memory_after"] - warm) <= 0.1 * warm,
        "memory_change_percent": round(100 * (last["memory_after"] - warm) / warm, 2),
        "batching_vs_python_batch": round(ratio, 3),
        "batching_vs_python_batch_before_and_after": [round(r, 3) for r in spread],
        "batching_at_least_0.8x": ratio >= 0.8,
        "first_preview_within_one_step": (
            preview["started_to_first_frame_ms"] <= preview["one_step_ms"]
        ),
    }


def run(args) -> dict:
    """Start the server, load it phase by phase, time the Python API before and after."""
    seconds = args.seconds * len(args.clients) if len(args.seconds) == 1 else args.seconds
    torch.set_num_threads(args.threads)
    port = free_port()
    url = f"http://{HOST}:{port}"
    server = start_server(port, args)
    try:
        phase(url, 16, 600, args.warmup)
        before = python_batch(args.batch, repeats=3)  # the server is idle meanwhile
        results = {"memory_after_warmup": memory(url), "phases": []}
        results["preview"] = first_preview(url, args.previews)
        for clients, limit in zip(args.clients, seconds, strict=True):
            start = server_metrics(url)
            result = phase(url, clients, limit, args.max_requests)
            end = server_metrics(url)
            batches = end["batches"] - start["batches"]
            result["jobs_per_batch"] = round((end["jobs_done"] - start["jobs_done"]) / batches, 2)
            result["memory_after"] = end["process_resident_memory_bytes"]
            results["phases"].append(result)
            print(json.dumps(result), flush=True)
        results["server_metrics"] = server_metrics(url)
    finally:
        server.terminate()
        server.wait(timeout=30)
    after = python_batch(args.batch, repeats=3)
    mean = (before["batch_images_per_second"] + after["batch_images_per_second"]) / 2
    results["python"] = {
        "before": before,
        "after": after,
        "batch_images_per_second": round(mean, 3),
    }
    results["targets"] = targets(results)
    results["machine"] = (
        f"{os.cpu_count()} CPU cores, {args.threads} thread(s), torch {torch.__version__}"
    )
    return results


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--clients", type=int, nargs="+", default=[1, 4, 16])
    p.add_argument("--seconds", type=float, nargs="+", default=[30.0, 30.0, 300.0],
                   help="time per phase (one value for all, or one per client count)")  # fmt: skip
    p.add_argument("--max-requests", type=int, default=600, help="most requests per phase")
    p.add_argument("--warmup", type=int, default=32, help="requests before measuring")
    p.add_argument("--previews", type=int, default=5, help="streamed requests timed")
    p.add_argument("--batch", type=int, default=16, help="images of the Python API batch")
    p.add_argument("--batch-window", type=float, default=0.02, help="server --batch-window")
    p.add_argument("--max-batch", type=int, default=64, help="server --max-batch")
    p.add_argument("--threads", type=int, default=1,
                   help="CPU threads of the server and of the Python API alike")  # fmt: skip
    p.add_argument("--out", default="out/bench-serve", help="output folder")
    args = p.parse_args()
    results = run(args)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    (out / "results.md").write_text(report(results) + "\n")
    print(report(results))
    print(json.dumps({k: results[k] for k in ("preview", "python", "targets")}, indent=2))


if __name__ == "__main__":
    main()
