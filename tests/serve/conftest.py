"""Fixtures of the server tests: one pool of the shipped models (and a run that fails to load)
shared by every test, and a client of an app over it with small caps."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient
from serve_helpers import CAPS

from pixdiff.serve.app import create_app
from pixdiff.serve.config import ServeConfig
from pixdiff.serve.models import ModelPool


@pytest.fixture(scope="session")
def broken_run(tmp_path_factory):
    """A run directory whose config.json is not JSON."""
    run = tmp_path_factory.mktemp("serve") / "broken"
    run.mkdir()
    (run / "config.json").write_text("{not json")
    (run / "ema.safetensors").write_bytes(b"\0" * 16)
    return run


@pytest.fixture(scope="session")
def pool(broken_run) -> ModelPool:
    """The shipped models and a broken run, loaded once for every server test."""
    return ModelPool(["fashion", "emoji", "emoji-sr", "emoji-cascade", str(broken_run)])


@pytest.fixture
def client(pool) -> Iterator[TestClient]:
    with TestClient(create_app(pool, ServeConfig(caps=CAPS, batch_window=0.0))) as c:
        yield c


@pytest.fixture(autouse=True, scope="module")
def _one_thread(one_thread):
    """Every module here runs single-threaded (``one_thread``, tests/conftest.py)."""
