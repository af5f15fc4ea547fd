"""Runs from the browser's API: start, pause, resume, stop, and the status as
Server-Sent Events fed by the manager's subscription."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("aiohttp", reason="the web extra (aiohttp) is not installed")

from aiohttp import ClientResponse, web
from aiohttp.test_utils import TestClient
from support import statements_run
from support.webkit import demo_legacy

from modelvault.database import DatabaseManager
from modelvault.migration.manager import MigrationManager
from modelvault.web import build_app
from modelvault.web.context import COUNTS_EVERY_SECONDS

Client = TestClient[web.Request, web.Application]
DEADLINE = 120.0


@pytest.fixture
def legacy_demo(tmp_path: Path) -> Iterator[tuple[DatabaseManager, Path]]:
    db, legacy = demo_legacy(tmp_path)
    yield db, legacy
    MigrationManager.for_database(db).close(30)
    db.dispose()


@pytest.fixture
async def client(aiohttp_client: Any, legacy_demo: tuple[DatabaseManager, Path]) -> Client:
    result: Client = await aiohttp_client(build_app(legacy_demo[0]))
    return result


async def statuses(response: ClientResponse) -> AsyncIterator[dict[str, Any]]:
    """The snapshots of an event stream, each as it arrives."""
    while True:
        line = await asyncio.wait_for(response.content.readline(), DEADLINE)
        assert line, "the event stream ended"
        if line.startswith(b"data: "):
            yield json.loads(line[6:])


async def until(stream: AsyncIterator[dict[str, Any]], state: str) -> dict[str, Any]:
    async for status in stream:
        if status["state"] == state:
            return status
        ended = status["state"] in ("failed", "stopped")
        assert not ended or state in ("failed", "stopped"), status
    raise AssertionError("the event stream ended")


async def post(client: Client, path: str, body: Any, status: int = 200) -> Any:
    response = await client.post(path, json=body)
    assert response.status == status, await response.text()
    return await response.json()


async def test_a_migration_started_paused_and_resumed_streams_its_progress(
    client: Client, legacy_demo: tuple[DatabaseManager, Path]
) -> None:
    db, legacy = legacy_demo
    events = await client.get("/api/events")
    assert events.headers["Content-Type"] == "text/event-stream"
    stream = statuses(events)
    assert (await anext(stream))["state"] == "idle"
    await post(client, "/api/run/pause", {})  # a run started now holds until resumed
    started = await post(client, "/api/run/migrate", {"legacy": str(legacy)}, 202)
    assert started["state"] in ("importing", "paused")
    held = await until(stream, "paused")
    assert held["files_done"] == 0
    again = await post(client, "/api/run/process", {}, 409)
    assert "a run is going already" in again["error"]
    await post(client, "/api/run/resume", {})
    done = await until(stream, "done")
    assert done["files_done"] == done["files_total"] > 0
    assert done["fraction"] == 1.0
    assert len(db.find_models()) > 0
    events.close()


async def test_stop_ends_a_held_run_and_a_scan_finds_the_folder(
    client: Client, legacy_demo: tuple[DatabaseManager, Path]
) -> None:
    legacy = legacy_demo[1]
    stream = statuses(await client.get("/api/events"))
    await post(client, "/api/run/pause", {})
    await post(client, "/api/run/migrate", {"legacy": str(legacy), "workers": 1}, 202)
    await until(stream, "paused")
    await post(client, "/api/run/stop", {})
    await post(client, "/api/run/resume", {})  # a stopped run does not resume
    await until(stream, "stopped")
    models = legacy.parent.parent / "models"
    await post(client, "/api/run/scan", {"roots": [str(models)]}, 202)
    await until(stream, "done")
    assert (await (await client.get("/api/status")).json())["state"] == "done"
    await post(client, "/api/run/process", {}, 202)
    await until(stream, "done")


@pytest.mark.parametrize(
    ("path", "body", "words"),
    [
        ("/api/run/migrate", {}, "legacy catalog's path"),
        ("/api/run/scan", {"roots": "models"}, "list of paths"),
        ("/api/run/scan", {"roots": []}, "list of paths"),
        ("/api/run/process", {"workers": 0}, "from 1 to 256"),
        ("/api/run/process", {"workers": True}, "from 1 to 256"),
    ],
)
async def test_bad_run_requests_start_nothing(
    client: Client, path: str, body: Any, words: str
) -> None:
    answer = await post(client, path, body, 400)
    assert words in answer["error"]
    assert (await (await client.get("/api/status")).json())["state"] == "idle"


async def test_a_scan_of_no_folder_is_refused_at_once(client: Client, tmp_path: Path) -> None:
    answer = await post(client, "/api/run/scan", {"roots": [str(tmp_path / "absent")]}, 400)
    assert "absent" in answer["error"]


async def test_many_clients_asking_the_status_read_the_staging_counts_once_a_second(
    client: Client, legacy_demo: tuple[DatabaseManager, Path]
) -> None:
    db = legacy_demo[0]
    db.add_pending_import({"path": str(legacy_demo[1].parent / "staged.safetensors")})
    with statements_run(db) as statements:
        start = time.monotonic()
        answers = await asyncio.gather(*(client.get("/api/status") for _ in range(40)))
        seconds = time.monotonic() - start
    for answer in answers:
        assert answer.status == 200
        assert (await answer.json())["staging_counts"]["pending"] == 1
    reads = [s for s in statements if "FROM pending_import" in s]
    assert reads, "the status never read the staging counts"
    assert len(reads) <= 1 + seconds / COUNTS_EVERY_SECONDS  # at most one read a period
    assert len(reads) < len(answers) / 4  # whatever the machine's speed: answers share reads
