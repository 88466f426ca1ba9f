"""Uploaded images and masks, refused before decoding when they are not what the model takes.

The request body is capped in size before it is read (:class:`BodyLimit`); an upload is then
checked from its header alone (format, width and height against the model's size, Pillow's
decompression-bomb guard), and only an image of exactly the model's size is decoded, by the same
:func:`pixdiff.images.read_image` / :func:`~pixdiff.images.read_mask` the CLI uses (whose
``open_image`` also refuses anything over pixdiff's pixel limit from the header).
"""

from __future__ import annotations

import io
import warnings

from PIL import Image, UnidentifiedImageError
from starlette.exceptions import HTTPException
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from torch import Tensor

from pixdiff.images import read_image, read_mask
from pixdiff.serve.models import first_line

FORMATS = ("PNG", "JPEG", "WEBP")


class UploadError(ValueError):
    """An upload refused with an HTTP status (413 too large, 415 not an image, 422 wrong size)."""

    def __init__(self, message: str, *, status: int):
        super().__init__(message)
        self.status = status


class Upload(io.BytesIO):
    """An uploaded file's bytes, named as the form field (and file name) in error messages."""

    def __init__(self, data: bytes, label: str):
        super().__init__(data)
        self.label = label

    def __str__(self) -> str:
        return self.label


def check_header(upload: Upload, *, size: int, needed: str) -> None:
    """Refuse ``upload`` unless its header says PNG, JPEG or WebP of size x size pixels
    (``needed`` says why, in the message); nothing is decoded."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(upload) as image:  # lazy: reads the header only
                width, height, fmt = image.width, image.height, image.format
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise UploadError(
            f"{upload} declares too many pixels (a decompression bomb); it was not decoded",
            status=413,
        ) from None
    except UnidentifiedImageError:
        raise UploadError(
            f"{upload} is not an image (send PNG, JPEG or WebP)", status=415
        ) from None
    except (OSError, SyntaxError, ValueError, EOFError) as e:
        raise UploadError(f"{upload} is a damaged image: {first_line(e)}", status=415) from None
    finally:
        upload.seek(0)
    if fmt not in FORMATS:
        raise UploadError(f"{upload} is a {fmt} image; send PNG, JPEG or WebP", status=415)
    if (width, height) != (size, size):
        raise UploadError(
            f"{upload} is {width}x{height}, but {needed}; it was not decoded", status=422
        )


def image_input(upload: Upload, *, size: int, channels: int, who: str) -> Tensor:
    """(1, channels, size, size) in [-1, 1] from an upload, checked before decoding."""
    check_header(upload, size=size, needed=f"{who} takes {size}x{size} images (resize it)")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a mode conversion (RGBA -> RGB) is expected here
        return read_image(upload, size=size, channels=channels, who=who)


def mask_input(upload: Upload, *, size: int, image: str) -> Tensor:
    """(1, 1, size, size) ``known`` (1 = keep) from a mask upload: white marks the region to
    fill. Its size must be the image's (``image`` names it)."""
    check_header(upload, size=size, needed=f"{image} is {size}x{size}; they must match")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return read_mask(upload, size=size, image=image)


class BodyLimit:
    """ASGI middleware: refuse a request body over ``limit`` bytes (``upload_limit`` for
    multipart uploads) with 413 before it is read, from Content-Length, or once a chunked body
    passes the limit."""

    def __init__(self, app: ASGIApp, *, limit: int, upload_limit: int):
        self.app, self.limit, self.upload_limit = app, limit, upload_limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = dict(scope["headers"])
        multipart = headers.get(b"content-type", b"").startswith(b"multipart/")
        limit = self.upload_limit if multipart else self.limit
        declared = headers.get(b"content-length", b"")
        if declared.isdigit() and int(declared) > limit:
            response = JSONResponse({"detail": too_large(int(declared), limit)}, status_code=413)
            return await response(scope, receive, send)
        seen = 0

        async def counted() -> Message:
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > limit:
                raise HTTPException(413, too_large(seen, limit, at_least=True))
            return message

        await self.app(scope, counted, send)


def too_large(size: int, limit: int, *, at_least: bool = False) -> str:
    what = f"at least {size:,}" if at_least else f"{size:,}"
    return f"request body of {what} bytes is over the server's limit of {limit:,} bytes"
