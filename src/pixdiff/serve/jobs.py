"""The job queue: bounded, with a concurrency limit, a per-job timeout, cancellation and
dynamic batching.

Jobs wait in one FIFO queue (at most ``queue`` of them; one more is refused with
:class:`QueueFull`, answered 429). ``concurrency`` worker threads each take the oldest job and,
after waiting up to ``batch_window`` seconds from its arrival for more, every queued job whose
task has the same batch key (same model and settings) up to ``max_batch`` images, and run them
in one sampler pass. A job that is cancelled while queued leaves the queue at once; one that is
running stops its pass at the next network evaluation when no job of that pass is still wanted.
A pass running past ``timeout`` seconds is stopped the same way.

The HTTP side lives on the event loop: each :class:`Job` carries an asyncio future for its
outcome and, when streamed, a queue of events, both fed from the worker threads with
``call_soon_threadsafe``.
"""

from __future__ import annotations

import asyncio
import ctypes
import logging
import math
import threading
import time
import uuid
from collections import OrderedDict
from dataclasses import dataclass, field

import torch
from torch import Tensor

from pixdiff.serve.config import ServeConfig
from pixdiff.serve.live import frame_png
from pixdiff.serve.metrics import Metrics
from pixdiff.serve.models import first_line
from pixdiff.serve.tasks import Task

log = logging.getLogger("pixdiff.serve")

FINISHED_KEPT = 1000  # states of this many finished jobs are kept for GET /v1/jobs/{id}


class QueueFull(Exception):
    """The queue holds its maximum of jobs; retry after ``retry_after`` seconds."""

    def __init__(self, retry_after: int, size: int):
        super().__init__(f"the job queue is full ({size} jobs); retry in {retry_after} s")
        self.retry_after = retry_after


class JobStopped(Exception):
    """Raised inside a pass to stop it: ``state`` is "cancelled" or "timed out"."""

    def __init__(self, state: str):
        super().__init__(state)
        self.state = state


@dataclass
class Outcome:
    """How a job ended: its images (done), or an HTTP status and a one-line reason."""

    state: str
    images: Tensor | None = None
    status: int = 200
    detail: str = ""
    seconds: float = 0.0


@dataclass(eq=False)
class Job:
    """One request's work on its way through the queue."""

    task: Task
    loop: asyncio.AbstractEventLoop
    stream: bool = False
    id: str = field(default_factory=lambda: uuid.uuid4().hex[:16])
    state: str = "queued"
    submitted: float = field(default_factory=time.monotonic)
    wanted: bool = True  # False once cancelled
    outcome: asyncio.Future = field(init=False)
    events: asyncio.Queue = field(init=False, default_factory=asyncio.Queue)

    def __post_init__(self):
        self.outcome = self.loop.create_future()

    def post(self, event: dict) -> None:
        """Hand an event to the job's stream, from any thread."""
        if self.stream:
            self._call(self.events.put_nowait, event)

    def settle(self, outcome: Outcome) -> None:
        """Resolve the job's future (then end its stream), from any thread."""
        self.state = outcome.state
        self._call(self._resolve, outcome)
        self.post({"type": "end"})

    def _resolve(self, outcome: Outcome) -> None:
        if not self.outcome.done():
            self.outcome.set_result(outcome)

    def _call(self, fn, *args) -> None:
        try:
            self.loop.call_soon_threadsafe(fn, *args)
        except RuntimeError:  # the event loop has closed: nobody is waiting any more
            pass


class JobQueue:
    """See the module docstring."""

    def __init__(self, config: ServeConfig, metrics: Metrics):
        self.config, self.metrics = config, metrics
        self._pending: list[Job] = []
        self._active: dict[str, Job] = {}  # queued and running
        self._finished: OrderedDict[str, str] = OrderedDict()  # id -> final state
        self._cond = threading.Condition()
        self._running = 0
        self._stopping = False
        self._threads: list[threading.Thread] = []

    def start(self) -> None:
        self._stopping = False
        for k in range(self.config.concurrency):
            thread = threading.Thread(target=self._work, name=f"pixdiff-job-{k}", daemon=True)
            thread.start()
            self._threads.append(thread)

    def stop(self) -> None:
        """Cancel what is queued, stop running passes, wait for the workers."""
        with self._cond:
            self._stopping = True
            for job in [*self._active.values()]:
                self._cancel(job)
            self._cond.notify_all()
        for thread in self._threads:
            thread.join(timeout=30)
        self._threads.clear()

    def submit(self, job: Job) -> int:
        """Queue a job; returns its place in the queue (1 = next). QueueFull when full."""
        with self._cond:
            if len(self._pending) >= self.config.queue:
                self.metrics.job("rejected")
                raise QueueFull(self.retry_after(), self.config.queue)
            self._pending.append(job)
            self._active[job.id] = job
            self._cond.notify_all()
            return len(self._pending)

    def cancel(self, job_id: str) -> str | None:
        """Cancel a queued or running job; returns its state afterwards (None: unknown id)."""
        with self._cond:
            job = self._active.get(job_id)
            if job is None:
                return self._finished.get(job_id)
            self._cancel(job)
            return job.state

    def listing(self) -> list[dict]:
        """The queued and running jobs, oldest first."""
        with self._cond:
            return [{"id": job.id, "state": job.state} for job in self._active.values()]

    def state(self, job_id: str) -> str | None:
        with self._cond:
            job = self._active.get(job_id)
            return job.state if job is not None else self._finished.get(job_id)

    def counts(self) -> tuple[int, int]:
        """(queued, running) jobs."""
        with self._cond:
            return len(self._pending), self._running

    def retry_after(self) -> int:
        """Seconds until a place is likely free: about one job's median latency."""
        p50 = self.metrics.latency(0.5) or 1.0
        return int(min(60, max(1, math.ceil(p50))))

    # ------------------------------------------------------------------ with the lock held

    def _cancel(self, job: Job) -> None:
        job.wanted = False
        if job in self._pending:
            self._pending.remove(job)
        self._finish(job, Outcome("cancelled", status=409, detail=f"job {job.id} was cancelled"))

    def _finish(self, job: Job, outcome: Outcome) -> None:
        """Settle a job once; the first outcome stands (a cancel beats its pass's result)."""
        if self._active.pop(job.id, None) is None:
            return
        outcome.seconds = time.monotonic() - job.submitted
        self._finished[job.id] = outcome.state
        while len(self._finished) > FINISHED_KEPT:
            self._finished.popitem(last=False)
        images = 0 if outcome.images is None else len(outcome.images)
        self.metrics.job(outcome.state, latency=outcome.seconds, images=images)
        job.settle(outcome)

    def _next_batch(self) -> list[Job] | None:
        """Wait for the oldest job and its batch (None when stopping)."""
        with self._cond:
            while not self._stopping:
                if not self._pending:
                    self._cond.wait()
                    continue
                head = self._pending[0]
                batch = self._mates(head)
                wait = head.submitted + self.config.batch_window - time.monotonic()
                if wait > 0 and sum(j.task.n for j in batch) < self.config.max_batch:
                    self._cond.wait(wait)
                    continue
                for job in batch:
                    self._pending.remove(job)
                    job.state = "running"
                self._running += len(batch)
                return batch
            return None

    def _mates(self, head: Job) -> list[Job]:
        """``head`` and the queued jobs that can share its pass, up to max_batch images."""
        key = head.task.key
        batch, images = [head], head.task.n
        if key is None:
            return batch
        for job in self._pending[1:]:
            fits = images + job.task.n <= self.config.max_batch
            if fits and type(job.task) is type(head.task) and job.task.key == key:
                batch.append(job)
                images += job.task.n
        return batch

    # ------------------------------------------------------------------ worker threads

    def _work(self) -> None:
        while (batch := self._next_batch()) is not None:
            outcomes = self._run(batch)
            release_free_memory()
            with self._cond:
                self._running -= len(batch)
                for job, outcome in zip(batch, outcomes, strict=True):
                    self._finish(job, outcome)

    def _run(self, batch: list[Job]) -> list[Outcome]:
        """Run one pass; an Outcome per job."""
        watch = Watch(batch, timeout=self.config.timeout)
        for job in batch:
            job.post({"type": "started", "id": job.id, "total": job.task.calls,
                      "batch": len(batch)})  # fmt: skip
        self.metrics.batch(len(batch))
        try:
            with torch.no_grad():
                images = type(batch[0].task).run_together([j.task for j in batch], watch.on_call)
        except JobStopped as stop:  # every job of a cancelled pass is settled already
            detail = f"stopped after {self.config.timeout:g} s, the server's --timeout"
            return [Outcome(stop.state, status=503, detail=detail) for _ in batch]
        except ValueError as e:  # a request the checks let through but the pipeline refused
            return [Outcome("failed", status=422, detail=first_line(e)) for _ in batch]
        except Exception as e:
            log.exception("job %s failed", batch[0].id)
            detail = f"internal error: {type(e).__name__}: {first_line(e)}"
            return [Outcome("failed", status=500, detail=detail) for _ in batch]
        return [Outcome("done", images=x.clamp(-1, 1).cpu()) for x in images]


def _glibc() -> ctypes.CDLL | None:
    """The C library when it is glibc (it has ``malloc_trim``), else None."""
    try:
        libc = ctypes.CDLL(None)
    except (OSError, TypeError):  # no C library to open by that name (Windows)
        return None
    return libc if hasattr(libc, "malloc_trim") else None


_LIBC = _glibc()


def release_free_memory() -> None:
    """Return the C heap's free pages to the system after a pass (glibc's ``malloc_trim``).

    Passes of changing batch sizes free and reallocate activations of many sizes; glibc keeps
    the freed memory in its per-thread heaps, so the resident size creeps up with
    fragmentation although nothing stays live. Elsewhere than glibc this does nothing."""
    if _LIBC is not None:
        _LIBC.malloc_trim(0)


class Watch:
    """The callback of a pass's live preview: stops the pass when no job of it is wanted or it
    runs past the timeout, counts the steps and posts each streamed job's frames."""

    def __init__(self, batch: list[Job], *, timeout: float):
        self.batch, self.deadline, self.step = batch, time.monotonic() + timeout, 0
        self.total = batch[0].task.calls

    def on_call(self, x_t: Tensor, x0: Tensor | None) -> None:
        if not any(job.wanted for job in self.batch):
            raise JobStopped("cancelled")
        if time.monotonic() > self.deadline:
            raise JobStopped("timed out")
        self.step += x0 is not None
        start = 0
        for job in self.batch:
            rows = slice(start, start + job.task.n)
            start += job.task.n
            if job.stream and job.wanted:
                job.post({
                    "type": "step", "step": self.step, "total": self.total,
                    "x_t": frame_png(x_t[rows]),
                    "x0": None if x0 is None else frame_png(x0[rows]),
                })  # fmt: skip
