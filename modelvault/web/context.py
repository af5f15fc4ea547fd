"""What every route of the web app shares: the catalog, its manager, the limits,
and the thread pool that keeps database and file work off the event loop."""

from __future__ import annotations

import asyncio
import functools
import json
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

from aiohttp import web

from modelvault.database import DatabaseManager
from modelvault.migration.manager import MigrationManager

if TYPE_CHECKING:
    from modelvault.migration.status import MigrationStatus
    from modelvault.web.previews import Thumbnails

T = TypeVar("T")

MAX_PAGE = 500  # models or queue rows in one answer, at most
DEFAULT_PAGE = 100
MAX_BODY_BYTES = 256 * 1024  # a JSON request body, at most: notes and tag lists, not files
POOL_THREADS = 4
# The staging counts in the status are read from the catalog at most this often, however
# many clients ask: each read is a query beside the workers' writes (the rest of the
# status is the manager's memory, always current).
COUNTS_EVERY_SECONDS = 1.0


@dataclass
class WebContext:
    """The state of one mounted web app (kept in the app under ``CONTEXT``)."""

    db: DatabaseManager
    manager: MigrationManager
    allowed_hosts: frozenset[str]
    thumbnails: Thumbnails
    token: str | None = None
    max_body_bytes: int = MAX_BODY_BYTES
    pool: ThreadPoolExecutor = field(
        default_factory=lambda: ThreadPoolExecutor(POOL_THREADS, thread_name_prefix="mv-web")
    )
    streams: set[asyncio.Task[Any]] = field(default_factory=set)
    counts_read_at: float = float("-inf")
    counts_lock: threading.Lock = field(default_factory=threading.Lock)
    # The newest status sent as an event and its encoding, made once for every stream.
    last_event: tuple[object, bytes] = (None, b"")

    async def run(self, work: Callable[..., T], /, *args: Any, **kwargs: Any) -> T:
        """``work(*args, **kwargs)`` in the pool: the event loop never waits on the catalog."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self.pool, functools.partial(work, *args, **kwargs))

    def status(self, *, fresh: bool = False) -> dict[str, Any]:
        """The manager's status; its staging counts re-read if ``fresh`` or due (one
        thread reads them, the others asking meanwhile wait for what it reads)."""
        with self.counts_lock:
            now = time.monotonic()
            if fresh or now - self.counts_read_at >= COUNTS_EVERY_SECONDS:
                self.manager.status(refresh=True)
                self.counts_read_at = now
        return self.manager.status(refresh=False).to_dict()

    def event_data(self, snapshot: MigrationStatus) -> bytes:
        """``snapshot`` as a Server-Sent Event (encoded once, however many streams send it)."""
        sent, data = self.last_event
        if sent is not snapshot:
            data = f"data: {json.dumps(snapshot.to_dict())}\n\n".encode()
            self.last_event = (snapshot, data)
        return data


CONTEXT = web.AppKey("modelvault", WebContext)


def context_of(request: web.Request) -> WebContext:
    return request.config_dict[CONTEXT]
