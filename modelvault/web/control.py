"""Runs from the browser: scan, migrate and hash start, pause, resume and stop;
the status as a snapshot and as a stream of Server-Sent Events fed by the
manager's subscription (one snapshot per change, the newest only)."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from aiohttp import web

from modelvault.errors import ScanError
from modelvault.migration.status import MigrationStatus
from modelvault.web.context import WebContext, context_of
from modelvault.web.guard import ApiError, json_body

routes = web.RouteTableDef()
HEARTBEAT_SECONDS = 15.0  # a comment line this often keeps proxies from closing the stream


def status_json(context: WebContext) -> dict[str, Any]:
    """The status after a change this app made: its staging counts read now."""
    return context.status(fresh=True)


async def _started(context: WebContext, started: bool) -> web.Response:
    if not started:
        raise ApiError(409, "a run is going already: pause, resume or stop it first.")
    return web.json_response(await context.run(status_json, context), status=202)


def _workers(body: dict[str, Any]) -> int | None:
    workers = body.get("workers")
    if workers is not None and (type(workers) is not int or not 1 <= workers <= 256):
        raise ApiError(400, "workers must be a whole number from 1 to 256.")
    return workers


@routes.get("/api/status")
async def status(request: web.Request) -> web.Response:
    context = context_of(request)
    return web.json_response(await context.run(context.status))


@routes.post("/api/run/migrate")
async def migrate(request: web.Request) -> web.Response:
    """``{"legacy": path}``: import that legacy catalog, then hash what it staged."""
    context = context_of(request)
    body = await json_body(request)
    legacy = body.get("legacy")
    if not isinstance(legacy, str) or not legacy:
        raise ApiError(400, 'give the legacy catalog\'s path as "legacy".')
    start = context.manager.start_full_migration
    return await _started(context, await context.run(start, legacy, workers=_workers(body)))


@routes.post("/api/run/scan")
async def scan(request: web.Request) -> web.Response:
    """``{"roots": [folder, ...]}``: scan those model folders, then hash what changed."""
    context = context_of(request)
    body = await json_body(request)
    roots = body.get("roots")
    if not isinstance(roots, list) or not roots or not all(isinstance(r, str) for r in roots):
        raise ApiError(400, 'give the folders to scan as "roots": a list of paths.')
    start = context.manager.start_scan
    try:
        started = await context.run(start, roots, workers=_workers(body))
    except ScanError as exc:  # a root that is no folder: said before anything starts
        raise ApiError(400, str(exc)) from None
    return await _started(context, started)


@routes.post("/api/run/process")
async def process(request: web.Request) -> web.Response:
    """Hash what is staged (the worker alone)."""
    context = context_of(request)
    body = await json_body(request)
    start = context.manager.start_processing
    return await _started(context, await context.run(start, workers=_workers(body)))


@routes.post("/api/run/{action:pause|resume|stop}")
async def control(request: web.Request) -> web.Response:
    context = context_of(request)
    await json_body(request)
    manager = context.manager
    action = {
        "pause": manager.pause_processing,
        "resume": manager.resume_processing,
        "stop": manager.stop,
    }[request.match_info["action"]]
    await context.run(action)
    return web.json_response(await context.run(status_json, context))


@routes.get("/api/events")
async def events(request: web.Request) -> web.StreamResponse:
    """The status as Server-Sent Events: the current one at once, then each change."""
    context = context_of(request)
    loop = asyncio.get_running_loop()
    newest: asyncio.Queue[bytes] = asyncio.Queue(maxsize=1)

    def offer(event: bytes) -> None:  # on the loop: keep only the newest
        if newest.full():
            newest.get_nowait()
        newest.put_nowait(event)

    def delivered(snapshot: MigrationStatus) -> None:  # in the manager's delivery thread
        loop.call_soon_threadsafe(offer, context.event_data(snapshot))

    response = web.StreamResponse(
        headers={"Content-Type": "text/event-stream", "Cache-Control": "no-store"}
    )
    await response.prepare(request)
    offer(f"data: {json.dumps(await context.run(context.status))}\n\n".encode())
    unsubscribe = context.manager.subscribe(delivered)
    task = asyncio.current_task()
    if task is not None:
        context.streams.add(task)
    try:
        await _send_events(response, newest)
    except (ConnectionError, asyncio.CancelledError):
        pass  # the browser went away, or the server is shutting down
    finally:
        unsubscribe()
        if task is not None:
            context.streams.discard(task)
    return response


async def _send_events(response: web.StreamResponse, newest: asyncio.Queue[bytes]) -> None:
    while True:
        try:
            event = await asyncio.wait_for(newest.get(), HEARTBEAT_SECONDS)
        except asyncio.TimeoutError:
            await response.write(b": still here\n\n")
            continue
        await response.write(event)


async def end_streams(app: web.Application) -> None:
    """On shutdown: end the open event streams, which would otherwise never end."""
    from modelvault.web.context import CONTEXT

    for task in list(app[CONTEXT].streams):
        task.cancel()
