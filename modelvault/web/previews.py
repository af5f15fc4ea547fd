"""Preview images from the catalog's content-addressed store, and their thumbnails.

A request names an image by its stored name (``<sha256>.<ext>``), checked
against the store's own pattern before anything is opened: no path from a
request reaches the file system. The content never changes under a name, so
the hash is the ``ETag`` and caching is immutable.

Thumbnails (256 px WebP) are made by Pillow on first request, in the thread
pool, once even when many ask at the same time, and kept in ``.thumbs/``
inside the store (a folder, which the store's listings pass over).
"""

from __future__ import annotations

import asyncio
import io
import mimetypes
import os
import tempfile
from pathlib import Path

from aiohttp import web

from modelvault.images import is_stored_name
from modelvault.web.context import WebContext, context_of
from modelvault.web.guard import ApiError

THUMB_PIXELS = 256
THUMB_FOLDER = ".thumbs"
IMMUTABLE = "public, max-age=31536000, immutable"
MAX_IMAGE_BYTES = 64 * 1024 * 1024  # larger is not a preview image
MAX_IMAGE_PIXELS = 100_000_000  # Pillow refuses a decompression bomb above this

routes = web.RouteTableDef()


class Thumbnails:
    """Makes each thumbnail once: concurrent requests for one share its making."""

    def __init__(self) -> None:
        self.made = 0  # thumbnails written by this process (for tests and logs)
        self._making: dict[str, asyncio.Future[Path]] = {}

    async def path_for(self, context: WebContext, store: Path, name: str) -> Path:
        target = store / THUMB_FOLDER / str(THUMB_PIXELS) / (name.partition(".")[0] + ".webp")
        if await context.run(target.is_file):
            return target
        making = self._making.get(name)
        if making is None:
            making = asyncio.ensure_future(context.run(self._make, store / name, target))
            self._making[name] = making
            making.add_done_callback(lambda _: self._making.pop(name, None))
        return await asyncio.shield(making)

    def _make(self, source: Path, target: Path) -> Path:
        from PIL import Image

        Image.MAX_IMAGE_PIXELS = MAX_IMAGE_PIXELS
        try:
            with Image.open(source) as image:
                image.thumbnail((THUMB_PIXELS, THUMB_PIXELS))
                small = image.convert("RGBA" if "A" in image.getbands() else "RGB")
        except Image.DecompressionBombError as exc:
            raise OSError(str(exc)) from None
        data = io.BytesIO()
        small.save(data, "WEBP", quality=80)
        _write_atomically(target, data.getvalue())
        self.made += 1
        return target


def _write_atomically(target: Path, data: bytes) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=target.parent, prefix=".", suffix=".tmp")
    try:
        with os.fdopen(handle, "wb") as file:
            file.write(data)
        os.replace(temporary, target)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def _store_of(context: WebContext) -> Path:
    folder = context.db.images_dir
    if folder is None:
        raise ApiError(404, "this catalog has no image store, so it has no previews.")
    return folder


def _checked_name(request: web.Request) -> str:
    name = request.match_info["name"]
    if not is_stored_name(name):
        raise ApiError(404, "a preview is named by its SHA-256 and extension; this is not one.")
    return name


def _read_image(path: Path) -> bytes:
    try:
        with path.open("rb") as file:
            data = file.read(MAX_IMAGE_BYTES + 1)
    except FileNotFoundError:
        raise ApiError(404, f"the image store holds no {path.name}.") from None
    if len(data) > MAX_IMAGE_BYTES:
        raise ApiError(413, f"{path.name} is too large to be a preview.")
    return data


def _image_response(request: web.Request, etag: str, data: bytes, kind: str) -> web.Response:
    headers = {"ETag": f'"{etag}"', "Cache-Control": IMMUTABLE, "X-Content-Type-Options": "nosniff"}
    if request.headers.get("If-None-Match") == headers["ETag"]:
        return web.Response(status=304, headers=headers)
    return web.Response(body=data, content_type=kind, headers=headers)


def _content_type(name: str) -> str:
    kind = mimetypes.guess_type(name)[0] or "application/octet-stream"
    # Served from our own origin: never let an image be a page or a script.
    return kind if kind.startswith(("image/", "video/")) else "application/octet-stream"


@routes.get("/previews/{name}")
async def preview(request: web.Request) -> web.StreamResponse:
    context = context_of(request)
    name = _checked_name(request)
    etag = name.partition(".")[0]
    if request.headers.get("If-None-Match") == f'"{etag}"':
        return _image_response(request, etag, b"", "")
    data = await context.run(_read_image, _store_of(context) / name)
    return _image_response(request, etag, data, _content_type(name))


@routes.get("/thumbs/{name}")
async def thumbnail(request: web.Request) -> web.StreamResponse:
    context = context_of(request)
    name = _checked_name(request)
    etag = f"{name.partition('.')[0]}-{THUMB_PIXELS}"
    if request.headers.get("If-None-Match") == f'"{etag}"':
        return _image_response(request, etag, b"", "")
    store = _store_of(context)
    if not await context.run((store / name).is_file):
        raise ApiError(404, f"the image store holds no {name}.")
    try:
        path = await context.thumbnails.path_for(context, store, name)
    except OSError as exc:  # Pillow's "cannot identify image file" is an OSError
        raise ApiError(415, f"{name} cannot be made into a thumbnail: {exc}.") from None
    data = await context.run(_read_image, path)
    return _image_response(request, etag, data, "image/webp")
