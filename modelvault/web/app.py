"""The web app: ``build_app`` for ``modelvault serve``, ``setup`` to mount it in an
existing aiohttp application (a ComfyUI extension's ``PromptServer.instance.app``)."""

from __future__ import annotations

from importlib import resources

from aiohttp import web

from modelvault.database import DatabaseManager
from modelvault.migration.manager import MigrationManager
from modelvault.web import api, control, previews
from modelvault.web.context import CONTEXT, MAX_BODY_BYTES, WebContext
from modelvault.web.guard import allowed_hosts, guard

DEFAULT_PREFIX = "/modelvault"
PAGE_FILES = {"app.js": "text/javascript", "style.css": "text/css"}
# The page loads nothing from elsewhere, and nothing may frame it.
PAGE_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; "
    "frame-ancestors 'none'; base-uri 'none'; form-action 'none'",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}


def build_app(
    catalog: DatabaseManager | MigrationManager,
    *,
    host: str | None = None,
    extra_hosts: tuple[str, ...] = (),
    token: str | None = None,
) -> web.Application:
    """The app at its root: the page at ``/``, the API under ``/api/``.

    ``catalog``: the catalog (its manager is ``MigrationManager.for_database``)
    or a manager. Requests must name ``host``, one of ``extra_hosts`` or a
    loopback name in ``Host``; with ``token``, every request must carry it.
    """
    if isinstance(catalog, MigrationManager):
        db, manager = catalog.db, catalog
    else:
        db, manager = catalog, MigrationManager.for_database(catalog)
    context = WebContext(
        db=db,
        manager=manager,
        thumbnails=previews.Thumbnails(),
        allowed_hosts=allowed_hosts(host, extra_hosts),
        token=token,
    )
    app = web.Application(middlewares=[guard], client_max_size=MAX_BODY_BYTES)
    app[CONTEXT] = context
    app.router.add_routes(api.routes)
    app.router.add_routes(control.routes)
    app.router.add_routes(previews.routes)
    app.router.add_get("/", page)
    app.router.add_get("/static/{file}", page_file)
    app.on_shutdown.append(control.end_streams)
    app.on_cleanup.append(_close_pool)
    return app


def setup(
    app: web.Application,
    catalog: DatabaseManager | MigrationManager,
    *,
    prefix: str = DEFAULT_PREFIX,
    hosts: tuple[str, ...] = (),
    token: str | None = None,
) -> web.Application:
    """Mount the page and the API under ``prefix`` in ``app`` (before it starts);
    returns the mounted sub-application. Its checks (``Host``, same-origin JSON
    writes, the token) apply to its own routes only, not to ``app``'s. ``hosts``:
    names besides the loopback ones that browsers may use to reach ``app``."""
    prefix = "/" + prefix.strip("/")
    if prefix == "/":
        raise ValueError("mount under a prefix such as /modelvault; serve it alone at /.")
    sub = build_app(catalog, extra_hosts=hosts, token=token)

    async def to_page(request: web.Request) -> web.StreamResponse:
        raise web.HTTPFound(prefix + "/")

    app.router.add_get(prefix, to_page)  # before the sub-app, which would take it first
    app.add_subapp(prefix, sub)
    return sub


async def page(request: web.Request) -> web.StreamResponse:
    return _packaged("index.html", "text/html")


async def page_file(request: web.Request) -> web.StreamResponse:
    name = request.match_info["file"]
    if name not in PAGE_FILES:
        raise web.HTTPNotFound()
    return _packaged(name, PAGE_FILES[name])


def _packaged(name: str, kind: str) -> web.Response:
    text = resources.files("modelvault.web").joinpath("static").joinpath(name).read_text("utf-8")
    return web.Response(text=text, content_type=kind, charset="utf-8", headers=PAGE_HEADERS)


async def _close_pool(app: web.Application) -> None:
    app[CONTEXT].pool.shutdown(wait=False, cancel_futures=True)
