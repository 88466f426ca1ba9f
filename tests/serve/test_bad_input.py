"""Every invalid request gets a 4xx with a one-line reason naming the problem, and the server
keeps serving: unknown names, wrong kinds, caps, malformed bodies, oversized or damaged uploads,
decompression bombs, a wrong-size mask, a 100k-character prompt, a model that failed to load."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image
from serve_helpers import png

GOOD = {"steps": 2, "n": 1}


def bomb_png(width: int, height: int) -> bytes:
    """A few hundred bytes of PNG whose header declares width x height pixels."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    idat = zlib.compress(b"\0" * 1000)
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")
    )


def noise_png(size: int) -> bytes:
    """A PNG of random grey pixels (it barely compresses, so a cut one cannot be decoded)."""
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (size, size), np.uint8)).save(
        buf, "PNG"
    )
    return buf.getvalue()


def one_line(r, status: int, *fragments: str) -> None:
    assert r.status_code == status, r.text
    detail = r.json()["detail"]
    assert isinstance(detail, str) and "\n" not in detail and "Traceback" not in detail
    for fragment in fragments:
        assert fragment in detail, detail


JSON_CASES = [
    ({"model": "nope"}, 404, "unknown model 'nope'"),
    ({"model": "broken"}, 503, "model 'broken' is unavailable", "failed to load"),
    ({"model": "emoji-sr"}, 422, "super-resolution model", "/v1/upscale"),
    ({"sampler": "nope"}, 422, "unknown sampler 'nope'"),
    ({"class": "cat"}, 422, "unknown class 'cat'"),
    ({"class": 10}, 422, "ids must be in [0, 9]"),
    ({"negative_class": "dog", "class": 1}, 422, "unknown class 'dog'"),
    ({"prompt": "a cat"}, 422, "need(s) a text-conditioned model"),
    ({"model": "emoji", "class": "1"}, 422, "text-conditioned"),
    ({"guidance": 3}, 422, "steers towards a condition"),
    ({"eta": 0.5, "sampler": "heun"}, 422, "unknown sampler option(s) ['eta']"),
    ({"threshold_percentile": 0.9}, 422, "needs threshold 'dynamic'"),
    ({"guidance_interval": [0.8, 0.2], "class": 1}, 422, "guidance interval"),
    ({"grid": "sideways"}, 422, "grid"),
    ({"steps": "many"}, 422, "steps"),
    ({"steps": 0}, 422, "steps"),
    ({"nfe": 1, "sampler": "sde-pc"}, 422, "too small for 'sde-pc'"),
    ({"seed": -1}, 422, "seed"),
    ({"seed": 2**32 - 1, "n": 2}, 422, "seed + n - 1"),
    ({"clas": "Bag"}, 422, "clas: Extra inputs are not permitted"),
    ({"prompt": "x" * 600, "model": "emoji"}, 422, "prompt", "500 characters"),
    ({"n": 5}, 422, "over the cap --max-n 4"),
    ({"steps": 41}, 422, "over the cap --max-steps 40"),
    ({"nfe": 41}, 422, "over the cap --max-steps 40"),
    ({"steps": 40, "n": 4}, 422, "784 pixels x 4 images x 40 NFE = 125,440"),
    ({"model": "emoji", "steps": 40, "n": 4}, 422, "over the cap --max-work 100,000"),
]


@pytest.mark.parametrize(("body", "status", "fragments"), [
    (body, status, fragments) for body, status, *fragments in JSON_CASES
], ids=[str(case[0])[:40] for case in JSON_CASES])  # fmt: skip
def test_invalid_generate_requests(client, body, status, fragments):
    base = {"n": 1} if "nfe" in body else GOOD
    one_line(client.post("/v1/generate", json={**base, **body}), status, *fragments)


def test_a_cap_on_work_counts_every_stage_of_a_cascade(client):
    r = client.post("/v1/generate", json={"model": "emoji-cascade", "steps": 20})
    one_line(r, 422, "1024 pixels x 1 images x 20 NFE + 4096 pixels x 1 images x 20 NFE",
             "= 102,400")  # fmt: skip
    ok = client.post("/v1/generate", json={"model": "emoji-cascade", "steps": 2})
    assert ok.status_code == 200


@pytest.mark.parametrize(("raw", "fragment"), [
    (b"{bad json", "malformed JSON"),
    (b"[1, 2]", "valid dictionary"),
    (b"", "body: Field required"),
])  # fmt: skip
def test_malformed_bodies_are_400(client, raw, fragment):
    r = client.post("/v1/generate", content=raw, headers={"Content-Type": "application/json"})
    one_line(r, 400, fragment)


def test_non_finite_numbers_are_refused(client):
    r = client.post("/v1/generate", content=b'{"guidance": NaN, "class": 1}',
                    headers={"Content-Type": "application/json"})  # fmt: skip
    one_line(r, 422, "guidance")


def test_a_prompt_of_100k_characters(client):
    r = client.post("/v1/generate", json={"model": "emoji", "prompt": "a" * 100_000})
    one_line(r, 413, "over the server's limit of 65,536 bytes")
    image = ("in.png", png(32, "RGB"), "image/png")
    r = client.post("/v1/edit", data={"model": "emoji", "prompt": "a" * 100_000},
                    files={"image": image})  # fmt: skip
    one_line(r, 422, "prompt", "500 characters")


UPLOAD_CASES = [
    ("edit", {"image": ("a.png", png(64), "image/png")}, 422,
     "image 'a.png' is 64x64, but model 'fashion' takes 28x28 images", "not decoded"),
    ("edit", {"image": ("a.txt", b"just some text", "text/plain")}, 415, "is not an image"),
    ("edit", {"image": ("a.gif", png(28, fmt="GIF"), "image/gif")}, 415, "GIF"),
    ("edit", {"image": ("b.png", bomb_png(40_000, 40_000), "image/png")}, 413,
     "decompression bomb", "not decoded"),
    ("edit", {"image": ("big.png", bomb_png(28, 9000), "image/png")}, 422, "28x9000"),
    ("edit", {"image": ("cut.png", bomb_png(28, 28)[:40], "image/png")}, 415, "not an image"),
    ("edit", {"image": ("cut.png", noise_png(28)[:300], "image/png")}, 422,
     "cannot read image", "cut.png"),
    ("edit", {}, 422, "image: Field required"),
    ("inpaint", {"image": ("a.png", png(28), "image/png"), "mask": ("m.png", png(20), "image/png")},
     422, "mask 'm.png' is 20x20, but image 'a.png' is 28x28; they must match"),
    ("inpaint", {"image": ("a.png", png(28), "image/png")}, 422, "mask: Field required"),
    ("upscale", {"image": ("a.png", png(16, "RGB"), "image/png")}, 422,
     "super-resolution model 'emoji-sr' takes 32x32 images"),
]  # fmt: skip


@pytest.mark.parametrize(("path", "files", "status", "fragments"), [
    (path, files, status, fragments) for path, files, status, *fragments in UPLOAD_CASES
], ids=[f"{c[0]}-{c[3]}" for c in UPLOAD_CASES])  # fmt: skip
def test_invalid_uploads(client, path, files, status, fragments):
    data = {"model": "emoji-sr"} if path == "upscale" else {}
    one_line(client.post(f"/v1/{path}", data={**data, "steps": "2"}, files=files), status,
             *fragments)  # fmt: skip


def test_wrong_model_kinds_and_fields_for_uploads(client):
    image = {"image": ("a.png", png(28), "image/png")}
    one_line(client.post("/v1/edit", data={"model": "emoji-sr"}, files=image), 422, "cannot edit")
    one_line(client.post("/v1/upscale", data={"model": "fashion"}, files=image), 422,
             "not a super-resolution model")  # fmt: skip
    one_line(client.post("/v1/edit", data={"strenght": "0.5"}, files=image), 422, "strenght")
    one_line(client.post("/v1/edit", data={"strength": "2"}, files=image), 422, "strength")


def test_an_oversized_upload_is_refused_before_it_is_read(pool):
    from serve_helpers import app_client

    with app_client(pool, max_upload=10_000) as c:
        big = ("big.png", b"\0" * 20_000, "image/png")
        one_line(c.post("/v1/edit", files={"image": big}), 413, "20,", "limit of 10,000 bytes")

        def chunks():  # no Content-Length: counted as it arrives
            for _ in range(30):
                yield b" " * 10_000

        r = c.post("/v1/generate", content=chunks(), headers={"Content-Type": "application/json"})
        one_line(r, 413, "at least", "limit of 65,536 bytes")
        assert c.post("/v1/generate", json=GOOD).status_code == 200


def test_the_server_keeps_serving_after_bad_requests(client):
    for body in ({"model": "broken"}, {"n": 99}, {"sampler": "?"}):
        assert client.post("/v1/generate", json=body).status_code >= 400
    assert client.post("/v1/generate", json=GOOD).status_code == 200
    assert client.get("/healthz").json()["status"] == "ok"
