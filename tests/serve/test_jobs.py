"""The job queue through the API: dynamic batching into one network pass, 429 with Retry-After
when full, cancellation by DELETE and by a closed connection (the slot is freed), the per-job
timeout, and the cap arithmetic."""

from __future__ import annotations

import base64
import io
import threading

import httpx
import numpy as np
import pytest
from PIL import Image
from serve_helpers import app_client, held, serving, until

from pixdiff.serve.app import create_app
from pixdiff.serve.config import CapExceeded, Caps, ServeConfig

FAST = {"steps": 3, "n": 1}


def in_thread(fn, *args, **kwargs) -> tuple[threading.Thread, list]:
    """Start fn in a thread; the list receives its result."""
    out: list = []
    thread = threading.Thread(target=lambda: out.append(fn(*args, **kwargs)), daemon=True)
    thread.start()
    return thread, out


def image(b64: str) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(b64)))).astype(int)


def test_compatible_requests_share_one_network_pass(pool, client):
    """Two requests with the same model and settings (different classes and seeds) arriving
    within the batch window run as one batch: the network is called once per step, not twice,
    and each image is what the request draws alone."""
    net, calls = pool.get("fashion").net, []
    handle = net.register_forward_hook(lambda module, args, out: calls.append(args[0].shape[0]))
    bodies = [{"class": "Bag", "seed": 3, **FAST}, {"class": "Coat", "seed": 9, **FAST}]
    try:
        with app_client(pool, batch_window=0.5) as c:
            threads = [in_thread(c.post, "/v1/generate", json=b) for b in bodies]
            for thread, _ in threads:
                thread.join(60)
            together = [out[0].json() for _, out in threads]
            assert calls == [4, 4, 4]  # 3 steps of one pass: 2 images x 2 CFG branches
            metrics = c.get("/metrics?format=json").json()
            assert metrics["batches"] == 1 and metrics["jobs_per_batch"] == 2
        calls.clear()
        alone = [client.post("/v1/generate", json=b).json() for b in bodies]
        assert calls == [2, 2, 2] * 2
    finally:
        handle.remove()
    for a, b in zip(together, alone, strict=True):
        assert np.abs(image(a["images"][0]) - image(b["images"][0])).max() <= 1
        assert a["command"] == b["command"]


def test_requests_with_other_settings_are_not_batched(pool):
    with app_client(pool, batch_window=0.5) as c:
        bodies = [{"class": "Bag", **FAST}, {"class": "Bag", "steps": 2, "n": 1}]
        threads = [in_thread(c.post, "/v1/generate", json=b) for b in bodies]
        for thread, out in threads:
            thread.join(60)
            assert out[0].status_code == 200
        assert c.get("/metrics?format=json").json()["batches"] == 2


def test_a_full_queue_answers_429_with_retry_after(pool):
    model = pool.get("fashion")
    with app_client(pool, queue=1) as c, held(model) as gate:
        first = in_thread(c.post, "/v1/generate", json=FAST)
        until(lambda: c.get("/metrics?format=json").json()["jobs_running"] == 1)
        second = in_thread(c.post, "/v1/generate", json=FAST)
        until(lambda: c.get("/metrics?format=json").json()["queue_length"] == 1)
        r = c.post("/v1/generate", json=FAST)
        assert r.status_code == 429 and int(r.headers["retry-after"]) >= 1
        assert "queue is full" in r.json()["detail"]
        gate.set()
        for thread, out in (first, second):
            thread.join(60)
            assert out[0].status_code == 200
        assert c.get("/metrics?format=json").json()["jobs_rejected"] == 1


def test_delete_cancels_queued_and_running_jobs_and_frees_the_slot(pool):
    model = pool.get("fashion")
    with app_client(pool) as c, held(model) as gate:
        running = in_thread(c.post, "/v1/generate", json=FAST)
        until(lambda: c.get("/metrics?format=json").json()["jobs_running"] == 1)
        queued = in_thread(c.post, "/v1/generate", json=FAST)
        until(lambda: len(c.get("/v1/jobs").json()) == 2)
        (run_id, _), (queue_id, _) = [(j["id"], j["state"]) for j in c.get("/v1/jobs").json()]
        assert c.delete(f"/v1/jobs/{queue_id}").json() == {"id": queue_id, "state": "cancelled"}
        queued[0].join(20)
        assert queued[1][0].status_code == 409 and "cancelled" in queued[1][0].json()["detail"]
        assert c.delete(f"/v1/jobs/{run_id}").json()["state"] == "cancelled"
        running[0].join(20)
        assert running[1][0].status_code == 409
        gate.set()  # the pass stops at its next network evaluation; the slot is free again
        assert c.post("/v1/generate", json=FAST).status_code == 200
        metrics = c.get("/metrics?format=json").json()
        assert metrics["jobs_cancelled"] == 2 and metrics["jobs_done"] == 1
        assert c.get(f"/v1/jobs/{run_id}").json()["state"] == "cancelled"


def test_a_job_past_the_timeout_is_stopped(pool):
    model = pool.get("fashion")
    with app_client(pool, timeout=0.3) as c, held(model) as gate:
        slow = in_thread(c.post, "/v1/generate", json=FAST)
        until(lambda: c.get("/metrics?format=json").json()["jobs_running"] == 1)
        threading.Timer(0.6, gate.set).start()
        slow[0].join(30)
        r = slow[1][0]
        assert r.status_code == 503 and "--timeout" in r.json()["detail"]
        assert c.get("/metrics?format=json").json()["jobs_timed_out"] == 1
        assert c.post("/v1/generate", json=FAST).status_code == 200


def test_closing_the_stream_mid_way_cancels_the_job(pool):
    """A real server: the client reads the first frames of a long job and hangs up."""
    app = create_app(pool, ServeConfig(batch_window=0.0))
    with serving(app) as url, httpx.Client(base_url=url, timeout=30) as http:
        body = {"class": "Bag", "steps": 200, "n": 1}
        with http.stream("POST", "/v1/generate?stream=true", json=body) as r:
            job = None
            for line in r.iter_lines():
                if line.startswith("data:") and '"step": 2' in line:
                    break
                if line.startswith("data:") and job is None:
                    job = line.split('"id": "')[1].split('"')[0]
        until(lambda: http.get(f"/v1/jobs/{job}").json()["state"] == "cancelled", timeout=10)
        until(lambda: http.get("/metrics?format=json").json()["jobs_running"] == 0, timeout=10)
        assert http.post("/v1/generate", json=FAST).status_code == 200
        assert http.get("/healthz").json()["status"] == "ok"


def test_a_client_that_stops_waiting_cancels_its_job(pool):
    model = pool.get("fashion")
    app = create_app(pool, ServeConfig(batch_window=0.0))
    with serving(app) as url, httpx.Client(base_url=url, timeout=30) as http, held(model) as gate:
        with pytest.raises(httpx.ReadTimeout):
            http.post("/v1/generate", json=FAST, timeout=0.5)
        until(lambda: http.get("/metrics?format=json").json()["jobs_cancelled"] == 1, timeout=10)
        gate.set()
        until(lambda: http.get("/metrics?format=json").json()["jobs_running"] == 0, timeout=10)


def test_the_first_frame_comes_before_the_first_network_evaluation(pool):
    model = pool.get("fashion")
    app = create_app(pool, ServeConfig(batch_window=0.0))
    with serving(app) as url, httpx.Client(base_url=url, timeout=30) as http, held(model) as gate:
        with http.stream("POST", "/v1/generate?stream=true", json=FAST) as r:
            lines = r.iter_lines()
            for line in lines:
                if line.startswith("event: step"):
                    break
            assert not gate.is_set()  # the network has not run yet: the frame is the noise
            gate.set()
            assert any(line.startswith("event: done") for line in lines)


def test_cap_arithmetic():
    caps = Caps(max_n=8, max_steps=100, max_work=1_000_000)
    assert caps.check(n=8, steps=100, stages=[(784, 100)]) == 627_200
    assert caps.check(n=2, steps=50, stages=[(1024, 50), (4096, 50)]) == 512_000
    with pytest.raises(CapExceeded, match="n = 9 is over the cap --max-n 8"):
        caps.check(n=9, steps=1, stages=[(1, 1)])
    with pytest.raises(CapExceeded, match="101 steps is over the cap --max-steps 100"):
        caps.check(n=1, steps=101, stages=[(1, 101)])
    with pytest.raises(CapExceeded, match=r"4096 pixels x 3 images x 100 NFE = 1,228,800"):
        caps.check(n=3, steps=50, stages=[(4096, 100)])
    assert caps.check(n=1, steps=100, stages=[(10_000, 100)]) == 1_000_000  # at the cap: allowed
