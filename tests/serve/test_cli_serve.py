"""``pixdiff serve``: every flag in --help, the settings it builds, the warning for a
non-loopback address, the token from the environment, and the one-line error without the
serve extra."""

from __future__ import annotations

import sys

import pytest

from pixdiff.cli import serve as serve_cmd
from pixdiff.cli.main import build_parser, main
from pixdiff.serve import models

FLAGS = ("--host", "--port", "--token", "--max-n", "--max-steps", "--max-work", "--queue",
         "--concurrency", "--timeout", "--batch-window", "--max-batch", "--max-upload",
         "--device", "--threads", "--root-path")  # fmt: skip


def test_help_documents_every_flag(capsys):
    with pytest.raises(SystemExit):
        build_parser().parse_args(["serve", "--help"])
    text = capsys.readouterr().out
    for flag in (*FLAGS, "RUN"):
        assert flag in text


@pytest.mark.parametrize(("host", "loopback"), [
    ("127.0.0.1", True), ("127.3.4.5", True), ("localhost", True), ("::1", True),
    ("[::1]", True), ("0.0.0.0", False), ("192.168.1.10", False), ("example.org", False),
])  # fmt: skip
def test_is_loopback(host, loopback):
    assert serve_cmd.is_loopback(host) is loopback


@pytest.fixture
def started(monkeypatch, pool):
    """Run ``pixdiff serve`` with the test pool and without starting uvicorn; returns what
    uvicorn.run was given."""
    import uvicorn

    seen = {}
    monkeypatch.setattr(models, "ModelPool", lambda sources, device: seen.update(
        sources=sources, device=device) or pool)  # fmt: skip
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: seen.update(app=app, **kw))
    return seen


def test_serve_builds_the_app_with_the_flags(started, capsys, monkeypatch):
    monkeypatch.delenv(serve_cmd.TOKEN_ENV, raising=False)
    argv = ["serve", "run1", "--port", "8123", "--max-n", "3", "--max-work", "5000",
            "--queue", "7", "--timeout", "9", "--batch-window", "0.1"]  # fmt: skip
    with pytest.warns(UserWarning) as warned:
        assert main(argv) == 0
    messages = [str(w.message) for w in warned]
    assert any("model 'broken' is unavailable" in m for m in messages)
    assert not any("binding" in m for m in messages)
    config = started["app"].state.config
    assert (config.caps.max_n, config.caps.max_work, config.queue) == (3, 5000, 7)
    assert (config.timeout, config.batch_window, config.token) == (9.0, 0.1, None)
    assert started["sources"][-1] == "run1" and "fashion" in started["sources"]
    assert (started["host"], started["port"]) == ("127.0.0.1", 8123)
    assert "http://127.0.0.1:8123/" in capsys.readouterr().out


@pytest.mark.filterwarnings("ignore:model .broken. is unavailable")
def test_a_public_address_prints_a_warning(started, monkeypatch):
    monkeypatch.setenv(serve_cmd.TOKEN_ENV, "from-env")
    with pytest.warns(UserWarning, match="binding to 0.0.0.0: the server is reachable from other"):
        assert main(["serve", "--host", "0.0.0.0"]) == 0
    assert started["app"].state.config.token == "from-env"


def test_without_the_serve_extra_one_line_says_what_to_install(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "uvicorn", None)
    assert main(["serve"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "pip install 'pixdiff[serve]'" in err
