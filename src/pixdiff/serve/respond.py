"""From a queued job to the HTTP answer: JSON with base64 PNGs, one grid PNG (``Accept:
image/png``), or a server-sent-event stream of the denoising (``?stream=true``).

A client that goes away cancels its job: a streamed one when its connection closes, a waiting
one when the server next looks (every quarter second).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.types import Receive, Scope, Send

from pixdiff.images import make_grid, png_bytes, to_pil
from pixdiff.serve.jobs import Job, JobQueue, Outcome
from pixdiff.serve.live import b64_png
from pixdiff.serve.tasks import Task

POLL_SECONDS = 0.25  # how often a waiting request checks that its client is still there
HEARTBEAT_SECONDS = 10.0  # an SSE comment line this often keeps proxies from closing the stream


class JobFailed(Exception):
    """A job that did not finish: its HTTP status and one-line reason."""

    def __init__(self, outcome: Outcome):
        super().__init__(outcome.detail)
        self.status, self.detail = outcome.status, outcome.detail


async def answer(request: Request, queue: JobQueue, task: Task, *, stream: bool) -> Response:
    """Queue the task (QueueFull propagates: 429) and answer as the client asked."""
    job = Job(task, asyncio.get_running_loop(), stream=stream)
    place = queue.submit(job)
    if stream:
        return JobStream(job, queue, place)
    outcome = await wait(job, request, queue)
    if outcome.state != "done":
        raise JobFailed(outcome)
    accept = request.headers.get("accept", "")
    if "image/png" in accept and "json" not in accept:
        return png_response(job, outcome)
    return JSONResponse(result(job, outcome))


async def wait(job: Job, request: Request, queue: JobQueue) -> Outcome:
    """The job's outcome; cancels the job if the client disconnects first."""
    while True:
        done, _ = await asyncio.wait({job.outcome}, timeout=POLL_SECONDS)
        if done:
            return job.outcome.result()
        if await request.is_disconnected():
            queue.cancel(job.id)
            return await job.outcome


def grid_of(outcome: Outcome):
    return make_grid(outcome.images, nrow=min(len(outcome.images), 8))


def result(job: Job, outcome: Outcome) -> dict:
    """The Result body: every image and their grid as base64 PNG, settings, NFE, command."""
    return {
        "id": job.id,
        "images": [b64_png(image) for image in outcome.images],
        "grid": b64_png(grid_of(outcome)),
        "settings": job.task.settings,
        "nfe": job.task.calls,
        "command": job.task.command,
        "seconds": round(outcome.seconds, 4),
    }


def png_response(job: Job, outcome: Outcome) -> Response:
    """The grid as image/png; settings and command in headers (ASCII-escaped JSON)."""
    headers = {
        "X-Pixdiff-Job": job.id,
        "X-Pixdiff-NFE": str(job.task.calls),
        "X-Pixdiff-Settings": json.dumps(job.task.settings, ensure_ascii=True),
        "X-Pixdiff-Command": json.dumps(job.task.command, ensure_ascii=True),
    }
    body = png_bytes(to_pil(grid_of(outcome).clamp(-1, 1)))
    return Response(body, media_type="image/png", headers=headers)


def sse(event: str, data: dict) -> str:
    return f"event: {event}\ndata: {json.dumps(data)}\n\n"


class JobStream(StreamingResponse):
    """Server-sent events of one job: ``queued``, ``started``, one ``step`` per network
    evaluation (x_t and the predicted x0 as base64 PNGs, step and total), then ``done`` (the
    Result) or ``error`` (status and detail). Closing the connection cancels the job."""

    def __init__(self, job: Job, queue: JobQueue, place: int):
        headers = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
        super().__init__(self.events(), media_type="text/event-stream", headers=headers)
        self.job, self.queue, self.place = job, queue, place

    async def events(self) -> AsyncIterator[str]:
        job = self.job
        yield sse("queued", {"id": job.id, "place": self.place, "total": job.task.calls})
        while True:
            try:
                event = await asyncio.wait_for(job.events.get(), HEARTBEAT_SECONDS)
            except asyncio.TimeoutError:
                yield ": still working\n\n"
                continue
            if event["type"] != "end":
                yield sse(event["type"], event)
                continue
            outcome = job.outcome.result()
            if outcome.state == "done":
                yield sse("done", result(job, outcome))
            else:
                error = {"id": job.id, "state": outcome.state, "status": outcome.status}
                yield sse("error", {**error, "detail": outcome.detail})
            return

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            if not self.job.outcome.done():  # the client went away mid-stream
                self.queue.cancel(self.job.id)
