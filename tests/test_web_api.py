"""The JSON API, mounted under a prefix in an app with routes and middlewares of its own."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("aiohttp", reason="the web extra (aiohttp) is not installed")

from aiohttp import web
from aiohttp.test_utils import TestClient
from support.webkit import first_with_previews, migrated_demo

from modelvault.database import DatabaseManager
from modelvault.web import setup
from modelvault.web.context import MAX_PAGE

Client = TestClient[web.Request, web.Application]


@pytest.fixture
def demo_db(tmp_path: Path) -> Iterator[DatabaseManager]:
    with migrated_demo(tmp_path) as db:
        yield db


@web.middleware
async def host_app_mark(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    response = await handler(request)
    response.headers["X-Host-App"] = "seen"
    return response


async def host_app_route(request: web.Request) -> web.Response:
    return web.json_response({"host": "app"})


@pytest.fixture
async def client(aiohttp_client: Any, demo_db: DatabaseManager) -> Client:
    """The API under /modelvault in an app shaped like ComfyUI's (a route and a middleware)."""
    app = web.Application(middlewares=[host_app_mark])
    app.router.add_get("/prompt", host_app_route)
    setup(app, demo_db, prefix="/modelvault")
    result: Client = await aiohttp_client(app)
    return result


async def get(client: Client, path: str, status: int = 200) -> Any:
    response = await client.get("/modelvault" + path)
    assert response.status == status, await response.text()
    return await response.json()


async def send(client: Client, method: str, path: str, body: Any, status: int = 200) -> Any:
    response = await client.request(method, "/modelvault" + path, json=body)
    assert response.status == status, await response.text()
    return await response.json()


async def test_mounted_beside_the_apps_own_routes_and_middlewares(client: Client) -> None:
    own = await client.get("/prompt")
    assert await own.json() == {"host": "app"}
    page = await client.get("/modelvault", allow_redirects=True)
    assert page.status == 200
    assert "<title>modelvault</title>" in await page.text()
    assert page.headers["X-Host-App"] == "seen"  # the host app's middleware still runs
    script = await client.get("/modelvault/static/app.js")
    assert script.content_type == "text/javascript"
    missing = await client.get("/modelvault/static/../../etc/passwd")
    assert missing.status == 404


async def test_models_filter_sort_and_page_with_a_total(
    client: Client, demo_db: DatabaseManager
) -> None:
    everything = await get(client, "/api/models?limit=3&sort=name")
    assert everything["total"] == len(demo_db.find_models())
    assert [m["name"] for m in everything["models"]] == [
        m.name for m in demo_db.find_models(limit=3)
    ]
    second = await get(client, "/api/models?limit=3&offset=3")
    assert second["offset"] == 3
    assert [m["name"] for m in second["models"]] == [
        m.name for m in demo_db.find_models(limit=3, offset=3)
    ]
    tag = (await get(client, "/api/tags"))[0]["name"]
    tagged = await get(client, f"/api/models?tag={tag}")
    assert tagged["total"] == len(demo_db.find_models(tags=[tag])) > 0
    assert all(tag in [t["name"] for t in m["tags"]] for m in tagged["models"])
    loras = await get(client, "/api/models?type=lora&search=STYLE")
    assert loras["total"] == len(demo_db.find_models(model_type="lora", search="style"))
    biggest = await get(client, "/api/models?sort=size&limit=1")
    assert biggest["models"][0]["sha256"] == demo_db.find_models(sort="size")[0].sha256


async def test_bad_paging_and_sorting_say_what_is_wrong(client: Client) -> None:
    too_many = await get(client, f"/api/models?limit={MAX_PAGE + 1}", 400)
    assert f"from 1 to {MAX_PAGE}" in too_many["error"]
    assert "whole number" in (await get(client, "/api/models?offset=-1", 400))["error"]
    assert "not an order of models" in (await get(client, "/api/models?sort=colour", 400))["error"]
    assert (await get(client, "/api/nothing", 404))["error"] == "there is nothing at this address."


async def test_one_model_every_field_and_its_previews(
    client: Client, demo_db: DatabaseManager
) -> None:
    sha, preview = first_with_previews(demo_db)
    model = await get(client, f"/api/models/{sha}")
    record = demo_db.get_model(sha)
    assert record is not None
    assert model["path"] == record.path
    assert model["meta"] == record.meta
    assert preview in model["previews"]
    assert (await get(client, f"/api/models/{sha[:10]}"))["sha256"] == sha  # AutoV2 prefix
    unknown = await get(client, "/api/models/" + "0" * 64, 404)
    assert "no model in the catalog" in unknown["error"]


async def test_note_and_fields_edited_and_kept(client: Client, demo_db: DatabaseManager) -> None:
    sha, _ = first_with_previews(demo_db)
    edited = await send(client, "PATCH", f"/api/models/{sha}", {"note": "sharp", "base": "SDXL"})
    assert edited["note"] == "sharp"
    record = demo_db.get_model(sha)
    assert record is not None
    assert record.meta["description"] == "sharp"
    assert record.base == "SDXL"
    assert "SDXL" in await get(client, "/api/bases")
    refused = await send(client, "PATCH", f"/api/models/{sha}", {"path": "/etc"}, 400)
    assert "path cannot be edited" in refused["error"]
    bad_name = await send(client, "PATCH", f"/api/models/{sha}", {"name": ""}, 400)
    assert "is not a model name" in bad_name["error"]


async def test_tag_untag_rename_recolour_and_delete(
    client: Client, demo_db: DatabaseManager
) -> None:
    sha, _ = first_with_previews(demo_db)
    tagged = await send(client, "POST", f"/api/models/{sha}/tags", {"names": ["Night"]})
    assert "night" in [t["name"] for t in tagged["tags"]]
    created = await send(client, "POST", "/api/tags", {"name": "spare", "color": "#00ff00"}, 201)
    assert created == {"name": "spare", "color": "#00ff00"}
    renamed = await send(client, "PATCH", "/api/tags/night", {"name": "dark", "color": "#112233"})
    assert renamed == {"name": "dark", "color": "#112233"}
    assert [t.name for t in demo_db.get_tags_for_model(sha)].count("dark") == 1
    clash = await send(client, "PATCH", "/api/tags/dark", {"name": "spare"}, 409)
    assert "merge" in clash["error"]
    bad_colour = await send(client, "PATCH", "/api/tags/dark", {"color": "reddish"}, 400)
    assert "reddish" in bad_colour["error"]
    untagged = await send(client, "DELETE", f"/api/models/{sha}/tags/dark", {})
    assert "dark" not in [t["name"] for t in untagged["tags"]]
    deleted = await send(client, "DELETE", "/api/tags/spare", {})
    assert deleted["deleted"] == "spare"
    assert demo_db.get_tag("spare") is None
    assert "spare" not in [t["name"] for t in await get(client, "/api/tags")]
    await send(client, "DELETE", "/api/tags/spare", {}, 404)


async def test_types_bases_queue_and_deleting_an_entry(
    client: Client, demo_db: DatabaseManager
) -> None:
    types = await get(client, "/api/types")
    assert sum(types.values()) == len(demo_db.find_models())
    queue = await get(client, "/api/queue")
    assert queue["counts"] == demo_db.staging_counts()
    assert len(queue["rows"]) == len(demo_db.get_pending_imports())
    missing = await get(client, "/api/queue?status=missing")
    assert {r["status"] for r in missing["rows"]} <= {"missing"}
    assert "not a staging status" in (await get(client, "/api/queue?status=odd", 400))["error"]
    sha, _ = first_with_previews(demo_db)
    assert (await send(client, "DELETE", f"/api/models/{sha}", {}))["deleted"] == sha
    assert demo_db.get_model(sha) is None
    await get(client, f"/api/models/{sha}", 404)
