"""What every route of the web app shares: the catalog, its manager, the limits,
and the thread pool that keeps database and file work off the event loop."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

from aiohttp import web

from modelvault.database import DatabaseManager
from modelvault.migration.manager import MigrationManager

if TYPE_CHECKING:
    from modelvault.web.previews import Thumbnails

T = TypeVar("T")

MAX_PAGE = 500  # models or queue rows in one answer, at most
DEFAULT_PAGE = 100
MAX_BODY_BYTES = 256 * 1024  # a JSON request body, at most: notes and tag lists, not files
POOL_THREADS = 4


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

    async def run(self, work: Callable[..., T], /, *args: Any, **kwargs: Any) -> T:
        """``work(*args, **kwargs)`` in the pool: the event loop never waits on the catalog."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self.pool, functools.partial(work, *args, **kwargs))


CONTEXT = web.AppKey("modelvault", WebContext)


def context_of(request: web.Request) -> WebContext:
    return request.config_dict[CONTEXT]
