"""Server metrics for ``GET /metrics``: queue length, jobs done, images per second, latency
percentiles, batching and the process's memory."""

from __future__ import annotations

import math
import os
import resource
import threading
import time
from collections import Counter, deque

RATE_WINDOW = 60.0  # seconds over which images per second is measured
LATENCIES_KEPT = 2000  # the latency percentiles are over this many latest jobs


class Metrics:
    """Counters and recent latencies, safe to update from worker threads."""

    def __init__(self):
        self._lock = threading.Lock()
        self.started = time.monotonic()
        self.outcomes: Counter[str] = Counter()  # done, failed, cancelled, timed out, rejected
        self.images = 0
        self.batches = 0
        self.batched_jobs = 0
        self._latencies: deque[float] = deque(maxlen=LATENCIES_KEPT)
        self._finished: deque[tuple[float, int]] = deque()  # (time, images) in RATE_WINDOW

    def job(self, outcome: str, *, latency: float | None = None, images: int = 0) -> None:
        """Count a job's end (or a 429 refusal: outcome "rejected")."""
        now = time.monotonic()
        with self._lock:
            self.outcomes[outcome] += 1
            if outcome == "done":
                self.images += images
                self._latencies.append(latency)
                self._finished.append((now, images))

    def batch(self, jobs: int) -> None:
        with self._lock:
            self.batches += 1
            self.batched_jobs += jobs

    def latency(self, q: float) -> float | None:
        """The q-quantile (nearest rank) of recent jobs' latency in seconds, None before any."""
        with self._lock:
            values = sorted(self._latencies)
        if not values:
            return None
        return values[min(len(values) - 1, max(0, math.ceil(q * len(values)) - 1))]

    def images_per_second(self) -> float:
        """Images finished per second over the last RATE_WINDOW seconds (or since start)."""
        now = time.monotonic()
        with self._lock:
            while self._finished and self._finished[0][0] < now - RATE_WINDOW:
                self._finished.popleft()
            recent = sum(images for _, images in self._finished)
        return recent / max(1e-9, min(RATE_WINDOW, now - self.started))

    def snapshot(self, *, queued: int, running: int) -> dict:
        """Every metric as a flat dict of numbers (None where undefined)."""
        return {
            "queue_length": queued,
            "jobs_running": running,
            "jobs_done": self.outcomes["done"],
            "jobs_failed": self.outcomes["failed"],
            "jobs_cancelled": self.outcomes["cancelled"],
            "jobs_timed_out": self.outcomes["timed out"],
            "jobs_rejected": self.outcomes["rejected"],
            "images_done": self.images,
            "images_per_second": round(self.images_per_second(), 4),
            "latency_p50_seconds": self.latency(0.5),
            "latency_p99_seconds": self.latency(0.99),
            "batches": self.batches,
            "jobs_per_batch": round(self.batched_jobs / self.batches, 3) if self.batches else None,
            "uptime_seconds": round(time.monotonic() - self.started, 3),
            "process_resident_memory_bytes": resident_memory(),
        }


def resident_memory() -> int:
    """The process's resident set size in bytes (/proc on Linux, else the peak from rusage)."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def prometheus(snapshot: dict) -> str:
    """The snapshot in Prometheus' text format, each metric prefixed ``pixdiff_``."""
    lines = []
    for name, value in snapshot.items():
        if value is not None:
            lines.append(f"pixdiff_{name} {value}")
    return "\n".join(lines) + "\n"
