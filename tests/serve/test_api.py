"""The API through the ASGI test client: every endpoint's answer, the settings and CLI command
that reproduce it, streaming, auth, health and metrics."""

from __future__ import annotations

import base64
import io
import json
import shlex

import numpy as np
import pytest
from PIL import Image
from serve_helpers import app_client, png

import pixdiff
from pixdiff.cli.main import build_parser

FAST = {"steps": 3, "n": 1}


def decode(b64: str) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(b64))))


def events(text: str) -> list[tuple[str, dict]]:
    """(event, data) of a server-sent-event stream."""
    out = []
    for block in text.strip().split("\n\n"):
        lines = dict(line.split(": ", 1) for line in block.splitlines() if not line.startswith(":"))
        out.append((lines["event"], json.loads(lines["data"])))
    return out


def test_models_lists_kinds_classes_defaults_and_the_unavailable_run(client):
    body = client.get("/v1/models").json()
    models = {m["name"]: m for m in body["models"]}
    assert models["fashion"]["kind"] == "class" and models["fashion"]["image_shape"] == [1, 28, 28]
    assert models["fashion"]["classes"][7] == "Sneaker"
    assert models["fashion"]["defaults"] == {"sampler": "ddim", "steps": 50, "guidance": 2.0}
    assert models["emoji"]["kind"] == "text" and models["emoji"]["classes"] is None
    assert models["emoji-sr"]["kind"] == "super-resolution"
    assert models["emoji-sr"]["low_res_size"] == 32
    assert models["emoji-cascade"]["kind"] == "cascade"
    assert models["emoji-cascade"]["stages"] == [[3, 32, 32], [3, 64, 64]]
    assert models["broken"]["available"] is False
    assert "failed to load" in models["broken"]["error"]
    assert "ddim" in body["samplers"] and "trailing" in body["grids"]
    assert body["caps"] == {"max_n": 4, "max_steps": 40, "max_work": 100_000}


def test_generate_returns_pngs_settings_nfe_and_a_command_the_cli_parses(client):
    r = client.post("/v1/generate", json={"model": "fashion", "class": "Sneaker", **FAST})
    assert r.status_code == 200
    result = r.json()
    assert len(result["images"]) == 1 and decode(result["images"][0]).shape == (28, 28)
    settings = result["settings"]
    assert settings["sampler"] == "ddim" and settings["steps"] == 3 and result["nfe"] == 3
    assert settings["guidance"] == 2.0 and settings["grid"] == "trailing"
    words = shlex.split(result["command"])
    args = build_parser().parse_args(words[1:])
    assert (args.class_, args.steps, args.seed, args.num) == ("Sneaker", 3, 0, 1)
    assert args.guidance == 2.0 and args.grid == "trailing" and args.run is None


def test_generate_matches_the_python_api_with_the_same_settings(client):
    """The server and the Python API (the CLI's pipeline) draw the same image."""
    r = client.post("/v1/generate", json={"class": "Bag", "seed": 5, "steps": 3, "n": 2})
    served = np.stack([decode(b) for b in r.json()["images"]])
    model = pixdiff.load("fashion")
    images = model.generate(classes="Bag", n=2, steps=3, seed=5)
    assert np.array_equal(served, np.stack([np.asarray(i) for i in images]))


def test_nfe_picks_the_steps_and_is_reported(client):
    result = client.post("/v1/generate", json={"sampler": "heun", "nfe": 5, "n": 1}).json()
    assert result["settings"]["steps"] == 3 and result["nfe"] == 5
    assert "--steps 3" in result["command"] and "--sampler heun" in result["command"]


def test_accept_png_gives_one_grid_png_with_settings_headers(client):
    r = client.post("/v1/generate", json={"class": "all", "steps": 2, "n": 3},
                    headers={"Accept": "image/png"})  # fmt: skip
    assert r.status_code == 200 and r.headers["content-type"] == "image/png"
    grid = Image.open(io.BytesIO(r.content))
    assert grid.size == (2 + 3 * 30, 32)  # pad 2 around and between 28x28 images
    assert json.loads(r.headers["x-pixdiff-settings"])["n"] == 3
    assert r.headers["x-pixdiff-nfe"] == "2"


def test_stream_sends_every_step_then_the_result(client):
    r = client.post("/v1/generate?stream=true", json={"class": 1, "steps": 4, "n": 2})
    assert r.headers["content-type"].startswith("text/event-stream")
    seen = events(r.text)
    kinds = [kind for kind, _ in seen]
    assert kinds[:2] == ["queued", "started"] and kinds[-1] == "done"
    steps = [data for kind, data in seen if kind == "step"]
    assert [s["step"] for s in steps] == [0, 1, 2, 3, 4] and steps[0]["x0"] is None
    assert all(s["total"] == 4 for s in steps)
    assert decode(steps[1]["x_t"]).shape == decode(steps[1]["x0"]).shape == (30, 59)
    assert len(seen[-1][1]["images"]) == 2


def test_prompt_to_the_text_model_and_the_cascade(client):
    result = client.post("/v1/generate", json={"model": "emoji", "prompt": "red apple", **FAST})
    assert result.status_code == 200, result.text
    assert decode(result.json()["images"][0]).shape == (32, 32, 3)
    assert shlex.split(result.json()["command"])[:4] == ["pixdiff", "sample", "--prompt",
                                                         "red apple"]  # fmt: skip
    r = client.post("/v1/generate", json={"model": "emoji-cascade", "prompt": "fire", "steps": 2})
    assert r.status_code == 200, r.text
    result = r.json()
    assert decode(result["images"][0]).shape == (64, 64, 3) and result["nfe"] == 4
    args = build_parser().parse_args(shlex.split(result["command"])[1:])
    assert args.cascade == [] and args.stage_steps == [2, 2] and args.prompt == ["fire"]


def test_edit_inpaint_and_upscale_take_uploads(client):
    image = ("in.png", png(28, color=90), "image/png")
    r = client.post("/v1/edit", data={"strength": "0.5", "steps": "4", "n": "2"},
                    files={"image": image})  # fmt: skip
    assert r.status_code == 200, r.text
    assert len(r.json()["images"]) == 2 and r.json()["nfe"] == 2
    assert "pixdiff edit" in r.json()["command"] and "--strength 0.5" in r.json()["command"]
    mask = ("mask.png", png(28, color=255), "image/png")
    r = client.post("/v1/inpaint", data={"steps": "3", "resample": "2", "class": "Bag"},
                    files={"image": image, "mask": mask})  # fmt: skip
    assert r.status_code == 200, r.text
    assert r.json()["nfe"] == 5 and "--resample 2" in r.json()["command"]
    low = ("low.png", png(32, "RGB", (200, 40, 40)), "image/png")
    r = client.post("/v1/upscale", data={"model": "emoji-sr", "steps": "2"}, files={"image": low})
    assert r.status_code == 200, r.text
    assert decode(r.json()["images"][0]).shape == (64, 64, 3)


def test_inpaint_keeps_the_known_region(client):
    """Black mask = keep: the result equals the input where nothing is filled."""
    image = png(28, color=200)
    r = client.post("/v1/inpaint", data={"steps": "2"},
                    files={"image": ("a.png", image, "image/png"),
                           "mask": ("m.png", png(28, color=0), "image/png")})  # fmt: skip
    assert np.abs(decode(r.json()["images"][0]).astype(int) - 200).max() <= 1


def test_jobs_and_job_state(client):
    assert client.get("/v1/jobs").json() == []
    job = client.post("/v1/generate", json=FAST).json()["id"]
    assert client.get(f"/v1/jobs/{job}").json() == {"id": job, "state": "done"}
    assert client.delete(f"/v1/jobs/{job}").json()["state"] == "done"
    assert client.get("/v1/jobs/nope").status_code == 404
    assert client.delete("/v1/jobs/nope").status_code == 404


def test_healthz_metrics_and_docs(client):
    client.post("/v1/generate", json=FAST)
    health = client.get("/healthz").json()
    assert health["status"] == "ok" and health["models"]["broken"] is False
    m = client.get("/metrics?format=json").json()
    assert m["jobs_done"] == 1 and m["images_done"] == 1 and m["queue_length"] == 0
    assert m["latency_p50_seconds"] > 0 and m["latency_p99_seconds"] >= m["latency_p50_seconds"]
    assert m["images_per_second"] > 0 and m["process_resident_memory_bytes"] > 0
    text = client.get("/metrics").text
    assert "pixdiff_jobs_done 1" in text and "pixdiff_latency_p99_seconds" in text
    assert client.get("/metrics?format=xml").status_code == 422
    assert "/v1/generate" in client.get("/openapi.json").json()["paths"]
    docs = client.get("/docs").text
    assert "swagger-ui-bundle.js" in docs and "cdn" not in docs.lower()
    assert client.get("/").status_code == 200 and "app.js" in client.get("/").text
    assert client.get("/static/app.js").status_code == 200


@pytest.mark.parametrize("header", [None, "Bearer wrong", "Basic c2VjcmV0", "Bearer secret2"])
def test_token_is_required_on_the_api(pool, header):
    with app_client(pool, token="secret") as c:
        headers = {"Authorization": header} if header else {}
        for method, path in (("get", "/v1/models"), ("post", "/v1/generate"),
                             ("get", "/metrics"), ("delete", "/v1/jobs/x")):  # fmt: skip
            r = getattr(c, method)(path, headers=headers)
            assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer"
            assert "bearer token" in r.json()["detail"]
        assert c.get("/").status_code == 200 and c.get("/healthz").status_code == 200
        good = {"Authorization": "Bearer secret"}
        assert c.get("/v1/models", headers=good).status_code == 200
        assert c.post("/v1/generate", json=FAST, headers=good).status_code == 200
