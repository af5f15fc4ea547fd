"""What is left in the queue, the planner's statistics of it, and rows a person puts
back in it."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from modelvault.database import DatabaseManager
from modelvault.db.types import as_utc, utcnow
from modelvault.errors import CatalogError
from modelvault.queue import states
from modelvault.queue.connection import transaction
from modelvault.queue.driver import json_list
from modelvault.queue.statements import statements_for

__all__ = ["QueueState", "queue_state", "refresh_statistics", "retry_pending"]

log = logging.getLogger(__name__)


def refresh_statistics(db: DatabaseManager) -> None:
    """PostgreSQL: bring the planner's statistics of the queue up to date before a run.

    The queue is filled in bulk just before the workers start, faster than
    autovacuum notices: with statistics of an empty or much smaller table,
    PostgreSQL picks plans that sort every pending row on each claim. One
    ANALYZE (a sample, not a scan) fixes that for the run. Nothing to do on
    SQLite, whose planner goes by the indexes alone. A failure is only logged:
    the workers are right without it, merely slower.
    """
    if db.is_sqlite:
        return
    try:
        with db.translate_errors(), db.engine.connect() as conn:
            conn.exec_driver_sql(statements_for(conn).analyze)
            conn.commit()
    except CatalogError as exc:
        log.warning("could not refresh the catalog's statistics: %s", exc)


@dataclass(frozen=True)
class QueueState:
    """What is left for the workers, seen at one instant."""

    unfinished: int  # rows pending or claimed
    wait_seconds: float | None  # until the next row may become claimable; None if none
    retry_files: int = 0  # rows waiting out a retry back-off
    retry_seconds: float | None = None  # until the first of them is due (0: due now)


def queue_state(db: DatabaseManager) -> QueueState:
    """How many rows are unfinished and how long until one may become claimable.

    Rows in back-off and rows leased by other workers (alive or dead) count as
    unfinished: a pool waits for them rather than leaving them behind.
    """
    with db.translate_errors(), db.engine.connect() as conn:
        sql = statements_for(conn)
        ((count, ready, next_retry, next_expiry, retrying, *clock),) = sql.fetch(
            conn, sql.queue_state, {}
        )
    next_retry, next_expiry = as_utc(next_retry), as_utc(next_expiry)
    if not count:
        return QueueState(0, None)
    now: datetime = clock[0] if clock else utcnow()  # PostgreSQL: the server's
    retry = None if next_retry is None else max(0.0, (next_retry - now).total_seconds())
    due = [t for t in (next_retry, next_expiry) if t is not None]
    if ready or not due:
        return QueueState(count, 0.0, retrying, retry)
    return QueueState(count, max(0.0, (min(due) - now).total_seconds()), retrying, retry)


def retry_pending(db: DatabaseManager, statuses: Iterable[str] = ("failed", "missing")) -> int:
    """Put rows in the given final statuses back in the queue; returns how many.

    Attempts start again from zero, back-off and last error are cleared.
    """
    wanted = states.checked_final(statuses)
    if not wanted:
        return 0
    with transaction(db) as conn:
        sql = statements_for(conn)
        return sql.change(conn, sql.retry_final, {"statuses": json_list(wanted)})
