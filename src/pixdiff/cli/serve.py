"""``pixdiff serve``: the web page and HTTP API over the shipped models and the runs given
(needs the ``serve`` extra: ``pip install 'pixdiff[serve]'``). See docs/serve.md."""

from __future__ import annotations

import ipaddress
import os
import warnings

import torch

from pixdiff.cli import flags
from pixdiff.serve.config import Caps, ServeConfig

TOKEN_ENV = "PIXDIFF_SERVE_TOKEN"
EXTRA_MODULES = ("fastapi", "fastapi_offline", "uvicorn", "starlette", "multipart", "pydantic")
MISSING_EXTRA = "pixdiff serve needs the serve extra: pip install 'pixdiff[serve]'"


def add_parser(sub) -> None:
    p = sub.add_parser(
        "serve",
        help="web page and HTTP API with the denoising shown live",
        description="Serve a web page and a JSON API (OpenAPI page at /docs) over the shipped "
        "models and the runs given. Models load once and stay in memory; a run that fails to "
        "load is listed as unavailable and the rest keep serving.",
    )
    p.add_argument(
        "runs", nargs="*", metavar="RUN",
        help="run directories or .safetensors checkpoints to serve beside the shipped models",
    )  # fmt: skip
    p.add_argument(
        "--host", default="127.0.0.1",
        help="address to bind; anything but loopback exposes the server (a warning is printed)",
    )  # fmt: skip
    p.add_argument("--port", type=flags.int_in(0, 65535), default=8000, help="TCP port")
    p.add_argument(
        "--root-path", default="",
        help="the path prefix a reverse proxy serves the app under (e.g. /pixdiff), when the "
        "proxy strips it",
    )  # fmt: skip
    p.add_argument(
        "--token", default=None,
        help=f"require 'Authorization: Bearer TOKEN' on the API; the page asks for it. Prefer "
        f"the environment variable {TOKEN_ENV}, which other users cannot see in ps",
    )  # fmt: skip
    add_cap_flags(p)
    flags.add_device_flag(p)
    p.add_argument(
        "--threads", type=flags.int_in(0), default=0,
        help="CPU threads per network pass (torch.set_num_threads); 0: torch's default",
    )  # fmt: skip
    p.set_defaults(func=run)


def add_cap_flags(p) -> None:
    """The per-request caps and the queue's limits (defaults: Caps and ServeConfig)."""
    caps, config = Caps(), ServeConfig()
    g = p.add_argument_group("caps and queue (see docs/serve.md)")
    for flag, kind, default, help_ in (
        ("--max-n", flags.positive, caps.max_n, "images per request"),
        ("--max-steps", flags.positive, caps.max_steps, "sampler steps per request"),
        ("--max-work", flags.positive, caps.max_work,
         "pixels x images x NFE per request, summed over a cascade's stages"),
        ("--queue", flags.positive, config.queue,
         "most jobs waiting; one more is answered 429 with Retry-After"),
        ("--concurrency", flags.positive, config.concurrency, "jobs (batches) run at once"),
        ("--timeout", flags.float_in(0.1), config.timeout,
         "seconds a job may run before it is stopped"),
        ("--batch-window", flags.float_in(0.0, 10.0), config.batch_window,
         "seconds a job waits for others with the same model and settings to share its pass"),
        ("--max-batch", flags.positive, config.max_batch, "most images in one batched pass"),
        ("--max-upload", flags.positive, config.max_upload,
         "bytes of a multipart upload (image and mask)"),
    ):  # fmt: skip
        g.add_argument(flag, type=kind, default=default, help=help_)


def is_loopback(host: str) -> bool:
    """Whether ``host`` names only this machine (localhost, 127.0.0.0/8, ::1)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def run(args) -> int:
    try:
        import uvicorn

        from pixdiff.serve.app import create_app
    except ModuleNotFoundError as e:
        if e.name and e.name.split(".")[0] in EXTRA_MODULES:
            raise ValueError(f"{MISSING_EXTRA} ({e.name} is missing)") from None
        raise
    from pixdiff.serve.models import SHIPPED, ModelPool

    token = args.token or os.environ.get(TOKEN_ENV) or None
    if not is_loopback(args.host):
        warnings.warn(
            f"binding to {args.host}: the server is reachable from other machines"
            + ("" if token else " and has no --token"),
            stacklevel=1,
        )
    config = ServeConfig(
        caps=Caps(max_n=args.max_n, max_steps=args.max_steps, max_work=args.max_work),
        token=token, queue=args.queue, concurrency=args.concurrency, timeout=args.timeout,
        batch_window=args.batch_window, max_batch=args.max_batch, max_upload=args.max_upload,
    )  # fmt: skip
    if args.threads:
        torch.set_num_threads(args.threads)
    pool = ModelPool([*SHIPPED, *args.runs], device=args.device)
    for entry in pool.entries.values():
        if entry.model is None:
            warnings.warn(f"model {entry.name!r} is unavailable: {entry.error}", stacklevel=1)
    print(f"pixdiff serve: {', '.join(pool.available())} on http://{args.host}:{args.port}/")
    uvicorn.run(
        create_app(pool, config), host=args.host, port=args.port, root_path=args.root_path,
        log_level="warning",
    )  # fmt: skip
    return 0
