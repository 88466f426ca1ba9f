"""The FastAPI app of ``pixdiff serve``: the page, the versioned JSON API, health and metrics.

    from pixdiff.serve.app import create_app
    from pixdiff.serve.models import ModelPool
    app = create_app(ModelPool(["fashion"]))  # then run it with uvicorn

Every error is ``{"detail": "one line"}`` with a 4xx status for anything a client can get wrong
(see docs/serve.md for the list); the OpenAPI page is at /docs, served offline.
"""

from __future__ import annotations

import hmac
from contextlib import asynccontextmanager
from importlib import resources
from typing import Annotated

from fastapi import (
    APIRouter,
    Depends,
    FastAPI,
    File,
    Form,
    HTTPException,
    Query,
    Request,
    UploadFile,
)
from fastapi.responses import FileResponse, JSONResponse, PlainTextResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from fastapi.staticfiles import StaticFiles
from fastapi_offline import FastAPIOffline
from starlette.concurrency import run_in_threadpool

from pixdiff import __version__
from pixdiff.samplers import SAMPLERS
from pixdiff.serve.build import build_edit, build_generate, build_inpaint, build_upscale
from pixdiff.serve.config import ServeConfig
from pixdiff.serve.errors import ERRORS, install_error_handlers
from pixdiff.serve.jobs import JobQueue
from pixdiff.serve.metrics import Metrics, prometheus
from pixdiff.serve.models import ModelPool
from pixdiff.serve.respond import answer
from pixdiff.serve.schemas import (
    EditForm,
    GenerateBody,
    InpaintForm,
    JobState,
    Result,
    UpscaleForm,
)
from pixdiff.serve.uploads import BodyLimit, Upload
from pixdiff.timesteps import SPACINGS

STATIC = resources.files("pixdiff.serve") / "static"
BEARER = HTTPBearer(auto_error=False, description="the server's --token, when it has one")
PNG = {200: {"content": {"image/png": {}}, "description": "the Result, or with Accept: image/png "
             "the grid; with ?stream=true, server-sent events"}}  # fmt: skip


def create_app(pool: ModelPool, config: ServeConfig | None = None) -> FastAPI:
    """The app over ``pool``'s models; its job workers start and stop with the app."""
    config = config or ServeConfig()
    metrics = Metrics()
    queue = JobQueue(config, metrics)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        queue.start()
        yield
        queue.stop()

    app = FastAPIOffline(
        title="pixdiff", version=__version__, lifespan=lifespan,
        description="Pixel-space diffusion models over HTTP: generate, edit, inpaint, upscale, "
        "with the denoising streamed live. See docs/serve.md.",
    )  # fmt: skip
    app.state.pool, app.state.queue, app.state.metrics, app.state.config = (
        pool, queue, metrics, config
    )  # fmt: skip
    app.add_middleware(BodyLimit, limit=config.max_body, upload_limit=config.max_upload)
    install_error_handlers(app)
    guard = [Depends(bearer(config.token))]
    app.include_router(api_routes(pool, queue, config), dependencies=guard)
    app.include_router(status_routes(queue, metrics), dependencies=guard)
    page_routes(app)
    return app


def bearer(token: str | None):
    """A dependency that requires ``Authorization: Bearer TOKEN`` when the server has a token
    (compared in constant time)."""

    async def check(credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(BEARER)]):
        if token is None:
            return
        given = credentials.credentials if credentials is not None else ""
        if not hmac.compare_digest(given.encode(), token.encode()):
            raise HTTPException(
                401, "missing or wrong bearer token: send 'Authorization: Bearer TOKEN'",
                headers={"WWW-Authenticate": "Bearer"},
            )  # fmt: skip

    return check


def api_routes(pool: ModelPool, queue: JobQueue, config: ServeConfig) -> APIRouter:
    """/v1: models, generate, the uploads (edit, inpaint, upscale) and jobs."""
    router = APIRouter(prefix="/v1", responses=ERRORS)
    caps = config.caps

    @router.get("/models")
    async def models() -> dict:
        """Every model (kind, image shape, classes, defaults, or why it is unavailable), the
        samplers with their NFE per step, the time grids and the server's caps."""
        return {
            "models": pool.info(),
            "samplers": {name: spec.nfe_per_step for name, spec in sorted(SAMPLERS.items())},
            "grids": list(SPACINGS),
            "caps": {
                "max_n": caps.max_n,
                "max_steps": caps.max_steps,
                "max_work": caps.max_work,
            },  # fmt: skip
            "max_upload_bytes": config.max_upload,
        }

    @router.post("/generate", response_model=Result, responses=PNG)
    async def generate(body: GenerateBody, request: Request, stream: bool = False):
        """Generate images from a class, a prompt or nothing."""
        task = await run_in_threadpool(build_generate, pool, body, caps)
        return await answer(request, queue, task, stream=stream)

    upload_routes(router, pool, queue, config)
    job_routes(router, queue)
    return router


def upload_routes(router: APIRouter, pool: ModelPool, queue: JobQueue, config: ServeConfig):
    """/v1/edit, /v1/inpaint and /v1/upscale: multipart requests with image uploads."""
    caps = config.caps

    @router.post("/edit", response_model=Result, responses=PNG)
    async def edit(
        form: Annotated[EditForm, Form()], image: UploadFile, request: Request, stream: bool = False
    ):
        """SDEdit: re-imagine an uploaded image of the model's size."""
        upload = await read_upload(image, "image")
        task = await run_in_threadpool(build_edit, pool, form, upload, caps)
        return await answer(request, queue, task, stream=stream)

    @router.post("/inpaint", response_model=Result, responses=PNG)
    async def inpaint(
        form: Annotated[InpaintForm, Form()], image: UploadFile,
        mask: Annotated[UploadFile, File(description="white = fill, black = keep")],
        request: Request, stream: bool = False,
    ):  # fmt: skip
        """Fill the white region of the mask in an uploaded image."""
        image_, mask_ = await read_upload(image, "image"), await read_upload(mask, "mask")
        task = await run_in_threadpool(build_inpaint, pool, form, image_, mask_, caps)
        return await answer(request, queue, task, stream=stream)

    @router.post("/upscale", response_model=Result, responses=PNG)
    async def upscale(
        form: Annotated[UpscaleForm, Form()], image: UploadFile, request: Request,
        stream: bool = False,
    ):  # fmt: skip
        """Super-resolve an uploaded low-resolution image."""
        upload = await read_upload(image, "image")
        task = await run_in_threadpool(build_upscale, pool, form, upload, caps)
        return await answer(request, queue, task, stream=stream)


def job_routes(router: APIRouter, queue: JobQueue) -> None:
    """/v1/jobs: list, look up and cancel jobs."""

    @router.get("/jobs", response_model=list[JobState])
    async def jobs() -> list[dict]:
        """The queued and running jobs, oldest first."""
        return queue.listing()

    @router.get("/jobs/{job_id}", response_model=JobState)
    async def job_state(job_id: str) -> dict:
        """A queued, running or recently finished job's state."""
        return {"id": job_id, "state": _known(queue.state(job_id), job_id)}

    @router.delete("/jobs/{job_id}", response_model=JobState)
    async def cancel(job_id: str) -> dict:
        """Cancel a queued or running job: it leaves the queue, or its pass stops at the next
        network evaluation (a pass shared with other jobs goes on for them)."""
        return {"id": job_id, "state": _known(queue.cancel(job_id), job_id)}


def _known(state: str | None, job_id: str) -> str:
    if state is None:
        raise HTTPException(
            404, f"no job {job_id[:64]!r} (finished jobs are kept for a while only)"
        )
    return state


async def read_upload(file: UploadFile, field: str) -> Upload:
    """The uploaded bytes (the body size is already capped), named for messages."""
    label = f"{field} {file.filename!r}" if file.filename else field
    return Upload(await file.read(), label)


def status_routes(queue: JobQueue, metrics: Metrics) -> APIRouter:
    """/metrics, behind the token like the API."""
    router = APIRouter()

    @router.get("/metrics", response_class=PlainTextResponse)
    async def metrics_(fmt: Annotated[str, Query(alias="format")] = "prometheus"):
        """Queue length, jobs done, images per second, p50/p99 latency, memory (Prometheus
        text, or JSON with ?format=json)."""
        queued, running = queue.counts()
        snapshot = metrics.snapshot(queued=queued, running=running)
        if fmt == "json":
            return JSONResponse(snapshot)
        if fmt != "prometheus":
            raise HTTPException(422, f"format must be 'prometheus' or 'json', got {fmt!r}")
        return PlainTextResponse(prometheus(snapshot))

    return router


def page_routes(app: FastAPI) -> None:
    """The page (open without the token, so that it can ask for it) and /healthz."""
    app.mount("/static", StaticFiles(directory=str(STATIC)), name="static")

    @app.get("/", include_in_schema=False)
    async def page():
        return FileResponse(str(STATIC / "index.html"))

    @app.get("/healthz")
    async def healthz(request: Request) -> dict:
        """Liveness: ok, and which models are available (no token needed)."""
        pool = request.app.state.pool
        return {"status": "ok", "models": {e.name: e.model is not None
                                           for e in pool.entries.values()}}  # fmt: skip
