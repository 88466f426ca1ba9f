"""Every error as ``{"detail": "one line"}``: 4xx for what a client can get wrong, 429 with
Retry-After when the queue is full, and a one-line 500 (traceback in the server's log only)
for a bug."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from pixdiff.serve.jobs import QueueFull
from pixdiff.serve.models import ModelUnavailable, first_line
from pixdiff.serve.respond import JobFailed
from pixdiff.serve.schemas import Problem
from pixdiff.serve.uploads import UploadError

log = logging.getLogger("pixdiff.serve")
MALFORMED = ("json_invalid", "model_attributes_type", "dict_type", "model_type")
ERRORS = {
    status: {"model": Problem, "description": what}
    for status, what in {
        400: "malformed body",
        401: "missing or wrong bearer token",
        404: "unknown model or job",
        409: "the job was cancelled",
        413: "body or image over the server's limit",
        415: "an upload that is not a PNG, JPEG or WebP image",
        422: "an invalid value, or a request over a cap (the message names it)",
        429: "the job queue is full; see Retry-After",
        503: "the model failed to load, or the job ran past the server's timeout",
    }.items()
}


def problem(status: int, detail: str, headers: dict | None = None) -> JSONResponse:
    return JSONResponse({"detail": detail}, status_code=status, headers=headers)


def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
    """The first problem as one line, ``field: message``; 400 for a body that is not the JSON
    object (or form) expected, else 422."""
    errors = exc.errors()
    first = errors[0]
    where = ".".join(str(p) for p in first["loc"] if p != "body") or "body"
    message = first["msg"]
    if first["type"] == "json_invalid":
        where = "body"
        message = f"malformed JSON ({first.get('ctx', {}).get('error', 'cannot parse')})"
    malformed = first["type"] in MALFORMED or (first["type"] == "missing" and where == "body")
    more = f" (and {len(errors) - 1} more problem(s))" if len(errors) > 1 else ""
    return problem(400 if malformed else 422, f"{where}: {message}{more}")


def install_error_handlers(app: FastAPI) -> None:
    """The handlers for every error a request can cause (most specific type wins)."""

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError):
        return validation_error(request, exc)

    @app.exception_handler(ModelUnavailable)
    async def unavailable(request: Request, exc: ModelUnavailable):
        return problem(exc.status, str(exc))

    @app.exception_handler(UploadError)
    async def upload(request: Request, exc: UploadError):
        return problem(exc.status, str(exc))

    @app.exception_handler(QueueFull)
    async def full(request: Request, exc: QueueFull):
        return problem(429, str(exc), {"Retry-After": str(exc.retry_after)})

    @app.exception_handler(JobFailed)
    async def failed(request: Request, exc: JobFailed):
        return problem(exc.status, exc.detail)

    @app.exception_handler(ValueError)
    async def value(request: Request, exc: ValueError):
        return problem(422, first_line(exc))

    @app.exception_handler(Exception)
    async def bug(request: Request, exc: Exception):
        log.exception("%s %s failed", request.method, request.url.path)
        return problem(500, f"internal error: {type(exc).__name__}: {first_line(exc)}")
