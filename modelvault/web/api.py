"""The JSON API of the catalog: models, tags, types, bases, the queue, and the edits.

Every call to the catalog runs in the app's thread pool (``WebContext.run``).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from aiohttp import web
from sqlalchemy import func, select

from modelvault.catalog import curation
from modelvault.catalog.records import ModelRecord, PendingRecord
from modelvault.database import DatabaseManager
from modelvault.db.models import Model
from modelvault.images import is_stored_name
from modelvault.web.context import DEFAULT_PAGE, MAX_PAGE, context_of
from modelvault.web.guard import ApiError, json_body

routes = web.RouteTableDef()
EDITABLE = ("name", "type", "base", "note", "meta")


def model_json(model: ModelRecord) -> dict[str, Any]:
    """A model as the API gives it: every field, tags with colours, preview file names."""
    previews = model.meta.get("previews")
    files = [p.get("file") for p in previews if isinstance(p, Mapping)] if previews else []
    return {
        "sha256": model.sha256,
        "path": model.path,
        "name": model.name,
        "type": model.type,
        "base": model.base,
        "size_bytes": model.size_bytes,
        "mtime_ns": model.mtime_ns,
        "created_at": model.created_at.isoformat(),
        "updated_at": model.updated_at.isoformat(),
        "note": model.meta.get(curation.NOTE),
        "meta": model.meta,
        "tags": [{"name": t.name, "color": t.color} for t in model.tags],
        "previews": [f for f in files if is_stored_name(f)],
    }


def pending_json(row: PendingRecord) -> dict[str, Any]:
    data = row.to_dict()
    return {k: v.isoformat() if isinstance(v, datetime) else v for k, v in data.items()}


def page_bounds(request: web.Request) -> tuple[int, int]:
    """``limit`` (1..MAX_PAGE) and ``offset`` (0 or more) from the query."""
    limit = _whole(request, "limit", DEFAULT_PAGE)
    offset = _whole(request, "offset", 0)
    if not 1 <= limit <= MAX_PAGE:
        raise ApiError(400, f"limit must be from 1 to {MAX_PAGE}, not {limit}.")
    return limit, offset


def _whole(request: web.Request, name: str, default: int) -> int:
    text = request.query.get(name)
    if text is None or text == "":
        return default
    if not text.isdigit() or len(text) > 12:
        raise ApiError(400, f"{name} must be a whole number, not {text!r}.")
    return int(text)


def model_filters(request: web.Request) -> dict[str, Any]:
    """The filters of ``find_models`` that the query names."""
    query = request.query
    return {
        "tags": query.getall("tag", []),
        "model_type": query.get("type") or None,
        "base": query.get("base") or None,
        "search": query.get("search") or None,
        "untagged": query.get("untagged") in ("1", "true"),
    }


def models_page(
    db: DatabaseManager, filters: dict[str, Any], sort: str, limit: int, offset: int
) -> dict[str, Any]:
    """One page of models and the total the filters match, as JSON."""
    models = db.find_models(**filters, sort=sort, limit=limit, offset=offset)
    total = db.count_models(**filters)
    return {
        "total": total,
        "offset": offset,
        "limit": limit,
        "models": [model_json(m) for m in models],
    }


def known_bases(db: DatabaseManager) -> dict[str, int]:
    """The base models in use, each with how many models have it."""
    query = (
        select(Model.base, func.count())
        .where(Model.base.is_not(None))
        .group_by(Model.base)
        .order_by(Model.base)
    )
    with db.session_scope() as session:
        return {str(base): int(count) for base, count in session.execute(query)}


def tags_json(db: DatabaseManager) -> list[dict[str, Any]]:
    return [{"name": t.name, "color": t.color, "models": n} for t, n in db.list_tags()]


@routes.get("/api/models")
async def list_models(request: web.Request) -> web.Response:
    context = context_of(request)
    limit, offset = page_bounds(request)
    sort = request.query.get("sort", "name")
    page = await context.run(models_page, context.db, model_filters(request), sort, limit, offset)
    return web.json_response(page)


@routes.get("/api/models/{key}")
async def one_model(request: web.Request) -> web.Response:
    context = context_of(request)
    model = await context.run(context.db.find_model, request.match_info["key"])
    return web.json_response(model_json(model))


@routes.patch("/api/models/{key}")
async def edit_model(request: web.Request) -> web.Response:
    context = context_of(request)
    body = await json_body(request)
    unknown = sorted(set(body) - set(EDITABLE))
    if unknown:
        raise ApiError(400, f"{', '.join(unknown)} cannot be edited: use {', '.join(EDITABLE)}.")
    model = await context.run(context.db.update_model, request.match_info["key"], **body)
    return web.json_response(model_json(model))


@routes.delete("/api/models/{key}")
async def delete_model(request: web.Request) -> web.Response:
    context = context_of(request)
    model = await context.run(context.db.delete_model, request.match_info["key"])
    return web.json_response({"deleted": model.sha256})


@routes.post("/api/models/{key}/tags")
async def tag_model(request: web.Request) -> web.Response:
    context = context_of(request)
    body = await json_body(request)
    names, color = _names(body), body.get("color")
    if color is not None and not isinstance(color, str):
        raise ApiError(400, "color must be a text such as #ff8800.")
    model = await context.run(context.db.add_tags, request.match_info["key"], names, color)
    return web.json_response(model_json(model))


@routes.delete("/api/models/{key}/tags/{tag}")
async def untag_model(request: web.Request) -> web.Response:
    context = context_of(request)
    key, tag = request.match_info["key"], request.match_info["tag"]
    model = await context.run(context.db.remove_tags, key, [tag])
    return web.json_response(model_json(model))


@routes.get("/api/tags")
async def list_tags(request: web.Request) -> web.Response:
    context = context_of(request)
    return web.json_response(await context.run(tags_json, context.db))


@routes.post("/api/tags")
async def create_tag(request: web.Request) -> web.Response:
    context = context_of(request)
    body = await json_body(request)
    name, color = body.get("name"), body.get("color")
    if not isinstance(name, str) or (color is not None and not isinstance(color, str)):
        raise ApiError(400, "give the tag's name as a text, and its color as #rrggbb or null.")
    tag = await context.run(context.db.ensure_tag, name, color)
    return web.json_response({"name": tag.name, "color": tag.color}, status=201)


@routes.patch("/api/tags/{name}")
async def change_tag(request: web.Request) -> web.Response:
    """``{"name": new}`` renames (``"merge": true`` into an existing tag);
    ``{"color": "#rrggbb" | null}`` recolours; both may be given."""
    context = context_of(request)
    body = await json_body(request)
    name = request.match_info["name"]
    if "name" not in body and "color" not in body:
        raise ApiError(400, "give a new name, a color, or both.")
    if "name" in body:
        new = body["name"]
        if not isinstance(new, str):
            raise ApiError(400, "the new name must be a text.")
        change = await context.run(context.db.rename_tag, name, new, merge=bool(body.get("merge")))
        name = change.tag.name
    if "color" in body:
        color = body["color"]
        if color is not None and not isinstance(color, str):
            raise ApiError(400, "color must be a text such as #ff8800, or null.")
        await context.run(context.db.set_tag_color, name, color)
    tag = await context.run(context.db.get_tag, name)
    return web.json_response({"name": name, "color": None if tag is None else tag.color})


@routes.delete("/api/tags/{name}")
async def delete_tag(request: web.Request) -> web.Response:
    context = context_of(request)
    change = await context.run(context.db.delete_tag, request.match_info["name"])
    return web.json_response({"deleted": change.tag.name, "models": change.models})


@routes.get("/api/types")
async def list_types(request: web.Request) -> web.Response:
    context = context_of(request)
    return web.json_response(await context.run(curation.known_types, context.db))


@routes.get("/api/bases")
async def list_bases(request: web.Request) -> web.Response:
    context = context_of(request)
    return web.json_response(await context.run(known_bases, context.db))


@routes.get("/api/queue")
async def queue(request: web.Request) -> web.Response:
    context = context_of(request)
    limit, offset = page_bounds(request)
    status = request.query.getall("status", []) or None
    rows = await context.run(context.db.get_pending_imports, status, limit=limit, offset=offset)
    counts = await context.run(context.db.staging_counts)
    return web.json_response({"counts": counts, "rows": [pending_json(r) for r in rows]})


def _names(body: Mapping[str, Any]) -> list[str]:
    names = body.get("names")
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise ApiError(400, 'give the tags as "names": a list of texts.')
    return names
