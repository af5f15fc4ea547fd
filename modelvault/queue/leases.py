"""Leases on staging rows: claim a batch, renew, hand back, count a failure, mark a
file missing, take over the rows of a worker that died.

Per backend (the statements are in ``statements``): on PostgreSQL the
candidates are selected ``FOR UPDATE SKIP LOCKED``, so workers on many hosts
claim disjoint rows without waiting for each other; on SQLite the write lock is
held from BEGIN (``connection``). Every change to a claimed row carries the one
lease guard, and its row count says whether the change happened.

``held``: the worker's own connection (``connection.HeldConnection``), if it
keeps one; without it each call takes a connection from the pool.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Collection, Iterable, Sequence
from dataclasses import dataclass

from sqlalchemy import Connection

from modelvault.database import DatabaseManager
from modelvault.errors import ModelVaultError
from modelvault.queue import states
from modelvault.queue.connection import HeldConnection, transaction, writing
from modelvault.queue.driver import json_list
from modelvault.queue.rows import ClaimedRow, claimed_row
from modelvault.queue.statements import statements_for

__all__ = [
    "CLAIM_BYTE_BUDGET",
    "Claim",
    "LeaseLost",
    "batch_bytes",
    "claim",
    "claim_batch",
    "mark_missing",
    "record_failure",
    "release",
    "renew",
    "take_over_orphans",
    "within_budget",
]

log = logging.getLogger(__name__)

# A batch stops growing once its files add up to this much, so a worker never
# sits on several multi-GB files that idle peers could be hashing. A row of
# unknown size counts as a full budget (it is most likely a big model file).
CLAIM_BYTE_BUDGET = 256 * 1024 * 1024


class LeaseLost(ModelVaultError):
    """The row was taken over by another worker; this one must let it go."""


def within_budget(
    candidates: Sequence[tuple[int, int | None]], budget: int, min_bytes: int = 0
) -> list[int]:
    """The ids of the first candidates whose sizes fit ``budget`` (always at least one),
    or none if they add up to less than ``min_bytes``. A row of unknown size counts as
    the whole budget (it is most likely a big model file)."""
    ids: list[int] = []
    total = 0
    for row_id, size in candidates:
        weight = budget if size is None else size
        if ids and total + weight > budget:
            break
        ids.append(row_id)
        total += weight
    return ids if total >= min_bytes else []


def batch_bytes(rows: Iterable[ClaimedRow], budget: int = CLAIM_BYTE_BUDGET) -> int:
    """What a batch weighs for ``within_budget``: staged sizes, unknown ones as ``budget``."""
    return sum(budget if row.size_bytes is None else row.size_bytes for row in rows)


@dataclass(frozen=True)
class Claim:
    """What to claim: up to ``limit`` rows, within ``byte_budget``, for ``lease_seconds``;
    nothing if the oldest claimable rows add up to less than ``min_bytes``."""

    limit: int
    lease_seconds: float
    byte_budget: int = CLAIM_BYTE_BUDGET
    min_bytes: int = 0


def claim_batch(
    db: DatabaseManager,
    owner: str,
    *,
    limit: int,
    lease_seconds: float,
    byte_budget: int = CLAIM_BYTE_BUDGET,
    min_bytes: int = 0,
    held: HeldConnection | None = None,
) -> list[ClaimedRow]:
    """Take up to ``limit`` claimable rows (oldest first) under a lease of ``owner``
    (none if they add up to less than ``min_bytes``: see ``Claim``)."""
    with writing(db, held) as conn:
        return claim(conn, owner, Claim(limit, lease_seconds, byte_budget, min_bytes))


def claim(conn: Connection, owner: str, wanted: Claim) -> list[ClaimedRow]:
    """``claim_batch`` inside the caller's transaction on ``conn``."""
    sql = statements_for(conn)
    clock = sql.clock(wanted.lease_seconds)
    candidates = sql.fetch(conn, sql.candidates, {**clock, "limit": wanted.limit})
    ids = within_budget([(r[0], r[1]) for r in candidates], wanted.byte_budget, wanted.min_bytes)
    if not ids:
        return []
    params = {**clock, "ids": json_list(ids), "owner": owner}
    claimed = [claimed_row(values) for values in sql.fetch(conn, sql.claim, params)]
    return sorted(claimed, key=lambda row: row.id)


def renew(
    db: DatabaseManager,
    owner: str,
    ids: Collection[int],
    lease_seconds: float,
    *,
    held: HeldConnection | None = None,
) -> set[int]:
    """Extend the leases still held; returns the ids that are (the rest are lost)."""
    if not ids:
        return set()
    with writing(db, held) as conn:
        sql = statements_for(conn)
        params = {**sql.clock(lease_seconds), "ids": json_list(list(ids)), "owner": owner}
        return {row_id for (row_id,) in sql.fetch(conn, sql.renew, params)}


def release(db: DatabaseManager, owner: str, ids: Collection[int]) -> set[int]:
    """Hand rows back to the queue untouched (attempts unchanged); returns the ids handed back.

    An expired lease nobody took over yet is still released: the row is ours
    until another claim says otherwise, and handing it back makes it claimable
    at once instead of at expiry. The ids missing from the answer were taken
    over by another worker.
    """
    if not ids:
        return set()
    with transaction(db) as conn:
        sql = statements_for(conn)
        params = {"ids": json_list(list(ids)), "owner": owner}
        return {row_id for (row_id,) in sql.fetch(conn, sql.release, params)}


def take_over_orphans(
    db: DatabaseManager, owner_prefix: str, is_dead: Callable[[str], bool]
) -> int:
    """Hand back the rows of owners (named ``owner_prefix...``) that ``is_dead``; returns how many.

    Their leases may run for long yet; a worker that provably died will never
    renew or release them. Only reads unless there is something to take over.
    """
    prefix = owner_prefix.replace("/", "//").replace("%", "/%").replace("_", "/_") + "%"
    with db.translate_errors(), db.engine.connect() as conn:
        sql = statements_for(conn)
        owners = [owner for (owner,) in sql.fetch(conn, sql.claimed_owners, {"prefix": prefix})]
    dead = [owner for owner in owners if owner is not None and is_dead(owner)]
    if not dead:
        return 0
    with transaction(db) as conn:
        sql = statements_for(conn)
        taken = sql.change(conn, sql.take_over, {"owners": json_list(dead)})
    log.info("handed back %d rows of %d workers that died: %s", taken, len(dead), dead)
    return taken


def record_failure(
    db: DatabaseManager,
    owner: str,
    row: ClaimedRow,
    message: str,
    *,
    max_attempts: int,
    backoff_seconds: float,
    final: bool = False,
    held: HeldConnection | None = None,
) -> str | None:
    """Count a failed attempt: back to ``pending`` after a back-off, or ``failed``.

    The back-off doubles with each attempt. ``final`` fails the row at once
    (for errors no retry can cure). Returns the new status, or None if the
    lease was lost (then the row is someone else's and nothing was written).
    """
    attempts = row.attempts + 1
    status = states.after_failure(attempts, max_attempts, final=final)
    delay = backoff_seconds * 2 ** (attempts - 1)
    changed = _close_failed(db, owner, row, status, message, delay, held)
    return status if changed else None


def mark_missing(
    db: DatabaseManager,
    owner: str,
    row: ClaimedRow,
    message: str,
    *,
    held: HeldConnection | None = None,
) -> bool:
    """The file is gone: keep the row (tags, notes) as ``missing``. False if the lease was lost."""
    return _close_failed(db, owner, row, states.MISSING, message, 0.0, held)


def _close_failed(
    db: DatabaseManager,
    owner: str,
    row: ClaimedRow,
    status: str,
    message: str,
    delay: float,
    held: HeldConnection | None,
) -> bool:
    """Write a failed attempt under the lease guard: back to ``pending`` after ``delay``
    seconds, or ``status`` for good; False if the lease was lost."""
    with writing(db, held) as conn:
        sql = statements_for(conn)
        params = {
            **sql.clock(delay_seconds=delay),
            "ids": json_list([row.id]),
            "owner": owner,
            "new_status": status,
            "new_attempts": row.attempts + 1,
            "new_error": message,
        }
        return sql.change(conn, sql.retry if status == states.PENDING else sql.fail, params) == 1
