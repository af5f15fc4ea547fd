"""Hostile requests: DNS rebinding, cross-site writes, oversized bodies, the token,
and paths smuggled into preview names."""

from __future__ import annotations

import asyncio
import io
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("aiohttp", reason="the web extra (aiohttp) is not installed")

from aiohttp import web
from aiohttp.test_utils import TestClient
from support.webkit import first_with_previews, migrated_demo

from modelvault.database import DatabaseManager
from modelvault.web import build_app
from modelvault.web.context import CONTEXT, MAX_BODY_BYTES
from modelvault.web.guard import TOKEN_COOKIE
from modelvault.web.previews import THUMB_PIXELS

Client = TestClient[web.Request, web.Application]


@pytest.fixture
def demo_db(tmp_path: Path) -> Iterator[DatabaseManager]:
    with migrated_demo(tmp_path) as db:
        yield db


TOKEN = "s3cret-token-for-tests"


@pytest.fixture
async def client(aiohttp_client: Any, demo_db: DatabaseManager) -> Client:
    result: Client = await aiohttp_client(build_app(demo_db))
    return result


@pytest.fixture
async def token_client(aiohttp_client: Any, demo_db: DatabaseManager) -> Client:
    app = build_app(demo_db, host="192.0.2.7", token=TOKEN)
    result: Client = await aiohttp_client(app)
    return result


@pytest.mark.parametrize(
    "host", ["evil.example", "evil.example:80", "127.0.0.1.nip.io", "attacker.localhost.com"]
)
async def test_a_foreign_host_name_is_refused(client: Client, host: str) -> None:
    response = await client.get("/api/tags", headers={"Host": host})
    assert response.status == 403
    assert "is not this server's" in (await response.json())["error"]


@pytest.mark.parametrize("host", ["localhost:8765", "127.0.0.1", "[::1]:8765", "LOCALHOST"])
async def test_loopback_names_are_taken(client: Client, host: str) -> None:
    response = await client.get("/api/tags", headers={"Host": host})
    assert response.status == 200


@pytest.mark.parametrize(
    "content_type", ["application/x-www-form-urlencoded", "text/plain", "multipart/form-data"]
)
async def test_a_write_that_is_not_json_is_refused(client: Client, content_type: str) -> None:
    response = await client.post(
        "/api/tags", data='{"name": "x"}', headers={"Content-Type": content_type}
    )
    assert response.status == 415
    assert "as JSON" in (await response.json())["error"]
    no_body = await client.delete("/api/tags/favourite")
    assert no_body.status == 415


async def test_a_write_from_another_origin_is_refused(
    client: Client, demo_db: DatabaseManager
) -> None:
    cross = await client.delete(
        "/api/tags/favourite", json={}, headers={"Origin": "http://evil.example"}
    )
    assert cross.status == 403
    assert "another origin" in (await cross.json())["error"]
    site = await client.delete(
        "/api/tags/favourite", json={}, headers={"Sec-Fetch-Site": "cross-site"}
    )
    assert site.status == 403
    assert demo_db.get_tag("favourite") is not None
    origin = f"http://{client.host}:{client.port}"
    headers = {"Origin": origin, "Sec-Fetch-Site": "same-origin"}
    same = await client.post("/api/tags", json={"name": "mine"}, headers=headers)
    assert same.status == 201


async def test_bodies_are_bounded_and_must_be_json_objects(client: Client) -> None:
    big = {"name": "x" * (MAX_BODY_BYTES + 1)}
    assert (await client.post("/api/tags", json=big)).status == 413

    async def chunks() -> Any:  # no Content-Length: the limit holds while reading
        for _ in range(MAX_BODY_BYTES // 1024 + 2):
            yield b" " * 1024

    streamed = await client.post(
        "/api/tags", data=chunks(), headers={"Content-Type": "application/json"}
    )
    assert streamed.status == 413
    broken = await client.post("/api/tags", data="{", headers={"Content-Type": "application/json"})
    assert (await broken.json())["error"] == "the request body is not valid JSON."
    listed = await client.post("/api/tags", json=["x"])
    assert listed.status == 400


async def test_the_token_is_needed_and_becomes_a_cookie(token_client: Client) -> None:
    assert (await token_client.get("/api/tags")).status == 401
    assert (await token_client.get("/api/tags?token=wrong")).status == 401
    bearer = await token_client.get("/api/tags", headers={"Authorization": f"Bearer {TOKEN}"})
    assert bearer.status == 200
    page = await token_client.get(f"/?token={TOKEN}")
    assert page.status == 200
    cookie = page.cookies[TOKEN_COOKIE]
    assert cookie.value == TOKEN
    assert cookie["httponly"]
    assert cookie["samesite"] == "Strict"
    # The session now carries the cookie: the page's own requests need nothing more.
    assert (await token_client.get("/api/tags")).status == 200
    foreign = await token_client.get("/api/tags", headers={"Host": "evil.example"})
    assert foreign.status == 403


async def test_bound_to_every_address_any_address_but_no_other_name_is_taken(
    aiohttp_client: Any, demo_db: DatabaseManager
) -> None:
    client: Client = await aiohttp_client(build_app(demo_db, host="0.0.0.0", token=TOKEN))
    auth = {"Authorization": f"Bearer {TOKEN}"}
    for host, status in [("192.168.1.5:8765", 200), ("[fe80::1]", 200), ("evil.example", 403)]:
        response = await client.get("/api/tags", headers={**auth, "Host": host})
        assert response.status == status, host


@pytest.mark.parametrize(
    "name",
    [
        "..%2Fcatalog.sqlite3",
        "%2Fetc%2Fpasswd",
        "catalog.sqlite3",
        "A" * 64 + ".png",  # upper case is not how the store names files
        "0" * 64 + ".png/..",
        "0" * 63 + ".png",
    ],
)
async def test_no_path_from_a_request_reaches_the_file_system(client: Client, name: str) -> None:
    for route in ("previews", "thumbs"):
        response = await client.get(f"/{route}/{name}")
        assert response.status == 404
        assert "error" in await response.json()


async def test_previews_by_hash_with_etag_and_immutable_caching(
    client: Client, demo_db: DatabaseManager
) -> None:
    _, preview = first_with_previews(demo_db)
    response = await client.get(f"/previews/{preview}")
    assert response.status == 200
    assert response.content_type == "image/png"
    assert response.headers["Cache-Control"] == "public, max-age=31536000, immutable"
    etag = response.headers["ETag"]
    assert etag == f'"{preview.partition(".")[0]}"'
    assert await response.read() == demo_db.preview_path(preview).read_bytes()
    again = await client.get(f"/previews/{preview}", headers={"If-None-Match": etag})
    assert again.status == 304
    absent = await client.get("/previews/" + "0" * 64 + ".png")
    assert absent.status == 404


async def test_a_stored_page_is_never_served_as_one(
    client: Client, demo_db: DatabaseManager
) -> None:
    store = demo_db.images_dir
    assert store is not None
    (store / ("1" * 64 + ".html")).write_text("<script>alert(1)</script>")
    response = await client.get("/previews/" + "1" * 64 + ".html")
    assert response.content_type == "application/octet-stream"
    assert response.headers["X-Content-Type-Options"] == "nosniff"


async def test_a_thumbnail_is_made_once_under_concurrent_requests(
    client: Client, demo_db: DatabaseManager
) -> None:
    from PIL import Image

    store = demo_db.images_dir
    assert store is not None
    big = "2" * 64 + ".png"
    Image.new("RGB", (1200, 600), (200, 40, 90)).save(store / big)
    answers = await asyncio.gather(*(client.get(f"/thumbs/{big}") for _ in range(20)))
    bodies = {await a.read() for a in answers}
    assert [a.status for a in answers] == [200] * 20
    assert len(bodies) == 1
    context = client.app[CONTEXT]
    assert context.thumbnails.made == 1
    with Image.open(io.BytesIO(bodies.pop())) as thumb:
        assert thumb.format == "WEBP"
        assert max(thumb.size) == THUMB_PIXELS
    assert answers[0].content_type == "image/webp"
    later = await client.get(f"/thumbs/{big}")
    assert later.status == 200
    assert context.thumbnails.made == 1  # from the cache beside the store
    assert list(Path(store, ".thumbs", str(THUMB_PIXELS)).iterdir()) == [
        Path(store, ".thumbs", str(THUMB_PIXELS), "2" * 64 + ".webp")
    ]


async def test_a_file_that_is_no_image_gets_no_thumbnail(
    client: Client, demo_db: DatabaseManager
) -> None:
    store = demo_db.images_dir
    assert store is not None
    (store / ("3" * 64 + ".png")).write_bytes(b"not a picture")
    response = await client.get("/thumbs/" + "3" * 64 + ".png")
    assert response.status == 415
    assert "cannot be made into a thumbnail" in (await response.json())["error"]


async def test_the_page_loads_nothing_from_elsewhere(client: Client) -> None:
    page = await client.get("/")
    policy = page.headers["Content-Security-Policy"]
    assert "default-src 'self'" in policy
    assert "frame-ancestors 'none'" in policy
    text = await page.text()
    assert "http://" not in text
    assert "https://" not in text


async def test_a_thumbnail_asked_again_by_its_etag_is_not_sent(
    client: Client, demo_db: DatabaseManager
) -> None:
    _, preview = first_with_previews(demo_db)
    first = await client.get(f"/thumbs/{preview}")
    assert first.status == 200
    again = await client.get(f"/thumbs/{preview}", headers={"If-None-Match": first.headers["ETag"]})
    assert again.status == 304
    absent = await client.get("/thumbs/" + "0" * 64 + ".png")
    assert absent.status == 404


def test_setup_needs_a_prefix(demo_db: DatabaseManager) -> None:
    from modelvault.web import setup

    with pytest.raises(ValueError, match="mount under a prefix"):
        setup(web.Application(), demo_db, prefix="/")
