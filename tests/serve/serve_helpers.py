"""Helpers of the server tests: an app client with given settings, a real uvicorn server on a
free loopback port, a gate that holds a model's network inside a call, test images."""

from __future__ import annotations

import io
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

from fastapi.testclient import TestClient
from PIL import Image

from pixdiff.serve.app import create_app
from pixdiff.serve.config import Caps, ServeConfig
from pixdiff.serve.models import ModelPool

CAPS = Caps(max_n=4, max_steps=40, max_work=100_000)


@contextmanager
def app_client(pool: ModelPool, **config) -> Iterator[TestClient]:
    """A TestClient over an app with these ServeConfig settings (small caps by default)."""
    settings = ServeConfig(**{"caps": CAPS, "batch_window": 0.0, **config})
    with TestClient(create_app(pool, settings)) as c:
        yield c


@contextmanager
def serving(app) -> Iterator[str]:
    """Run ``app`` under uvicorn in a thread on a free loopback port; yields its base URL."""
    import uvicorn

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert time.monotonic() < deadline and thread.is_alive(), "uvicorn did not start"
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)
        sock.close()


@contextmanager
def held(model) -> Iterator[threading.Event]:
    """Hold ``model``'s network at the start of every call until the yielded event is set
    (and always on leaving), so a test can act while a job is surely running."""
    gate = threading.Event()
    handle = model.net.register_forward_pre_hook(lambda module, args: gate.wait(20) and None)
    try:
        yield gate
    finally:
        gate.set()
        handle.remove()


def until(condition, timeout: float = 20.0) -> None:
    """Wait until ``condition()`` holds."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out waiting"
        time.sleep(0.01)


def png(size: int, mode: str = "L", color=128, fmt: str = "PNG") -> bytes:
    buf = io.BytesIO()
    Image.new(mode, (size, size), color).save(buf, fmt)
    return buf.getvalue()
