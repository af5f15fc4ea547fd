"""Staging rows as a caller adds, lists and removes them, and the queue's counts:
each function one transaction (``DatabaseManager`` offers them as its methods).

These are the ORM's writes of ``pending_import``; the queue's own statements
(claims, leases, hand-backs) and its status machine live with the queue.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any

from sqlalchemy import delete, func, select

from modelvault.catalog.records import PendingRecord, QueueTotals
from modelvault.catalog.tags import TagSpec
from modelvault.catalog.values import columns_of, file_values, with_the_rest
from modelvault.db.access import CatalogAccess
from modelvault.db.keyed import same_file
from modelvault.db.models import PendingImport, PendingStatus
from modelvault.errors import AlreadyExistsError, ValidationError
from modelvault.normalize import normalize_sha256
from modelvault.queue.states import PENDING, WAITING

# The columns of ``pending_import`` a caller gives: all but the queue's own bookkeeping.
PENDING_FIELDS = columns_of(
    PendingImport,
    leaving_out=("id", "path_key", "not_before", "claimed_by", "lease_expires_at"),
)


def add_pending_import(db: CatalogAccess, data: Mapping[str, Any]) -> PendingRecord:
    """Stage a file to be hashed by the workers."""
    values = _pending_values(data)
    with db.session_scope(immediate=True) as session:
        staged = session.scalar(
            select(PendingImport.path).where(same_file(PendingImport, values["path"]))
        )
        if staged is not None:
            spelt = "" if staged == values["path"] else f" as {staged}"
            raise AlreadyExistsError(f"{values['path']} is staged already{spelt}.")
        row = PendingImport(**values)
        session.add(row)
        session.flush()
        return PendingRecord.of(row)


def get_pending_imports(
    db: CatalogAccess,
    status: str | Iterable[str] | None = None,
    *,
    limit: int | None = None,
    offset: int = 0,
) -> list[PendingRecord]:
    """Staging rows, oldest first, optionally only those in the given status(es)."""
    statuses = _statuses(status)
    query = select(PendingImport).order_by(PendingImport.id).offset(offset).limit(limit)
    if statuses is not None:
        query = query.where(PendingImport.status.in_(statuses))
    with db.session_scope() as session:
        return [PendingRecord.of(row) for row in session.scalars(query)]


def remove_pending_import(db: CatalogAccess, path: str) -> bool:
    """Delete the staging row of ``path``; returns whether there was one."""
    with db.session_scope(immediate=True) as session:
        result = session.execute(delete(PendingImport).where(PendingImport.path == path))
        return bool(result.rowcount)  # type: ignore[attr-defined]


def staging_counts(db: CatalogAccess) -> dict[str, int]:
    """How many staging rows are in each status (every status listed, zeros included)."""
    counts = {status.value: 0 for status in PendingStatus}
    with db.session_scope() as session:
        rows = session.execute(
            select(PendingImport.status, func.count()).group_by(PendingImport.status)
        )
        counts.update((str(row[0]), int(row[1])) for row in rows)
    return counts


def claimable_totals(db: CatalogAccess) -> QueueTotals:
    """Files still waiting to be hashed (pending or claimed rows), their known bytes,
    and how many have no known size."""
    size = PendingImport.size_bytes
    with db.session_scope() as session:
        row = session.execute(
            select(
                func.count(),
                func.coalesce(func.sum(size), 0),
                func.count().filter(size.is_(None)),
            ).where(PendingImport.status.in_(sorted(WAITING)))
        ).one()
        return QueueTotals(int(row[0] or 0), int(row[1] or 0), int(row[2] or 0))


def _statuses(status: str | Iterable[str] | None) -> list[str] | None:
    if status is None:
        return None
    names = [status] if isinstance(status, str) else list(status)
    valid = {s.value for s in PendingStatus}
    for name in names:
        if name not in valid:
            raise ValidationError(
                f"{name!r} is not a staging status: use one of {', '.join(sorted(valid))}."
            )
    return names


def _pending_values(data: Mapping[str, Any]) -> dict[str, Any]:
    unknown = set(data) - set(PENDING_FIELDS)
    if unknown:
        raise ValidationError(
            f"unknown staging field(s) {', '.join(sorted(unknown))}: "
            f"use {', '.join(PENDING_FIELDS)}."
        )
    values = file_values(data)
    values["tags"] = [TagSpec.parse(t).to_json() for t in data.get("tags") or ()]
    values["status"] = _statuses([data.get("status") or PENDING])[0]  # type: ignore[index]
    if data.get("sha256") is not None:
        values["sha256"] = normalize_sha256(data["sha256"])
    created_at = data.get("created_at")
    if created_at is not None:
        if not isinstance(created_at, datetime) or created_at.tzinfo is None:
            raise ValidationError(
                f"created_at {created_at!r} is not valid: give a timezone-aware datetime."
            )
        values["created_at"] = created_at
    for key in ("legacy_id", "attempts"):
        number = data.get(key)
        if number is not None:
            if isinstance(number, bool) or not isinstance(number, int) or number < 0:
                raise ValidationError(f"{key} {number!r} is not valid: give a whole number >= 0.")
            values[key] = number
    for key in ("source", "last_error"):
        text_value = data.get(key)
        if text_value is not None:
            if not isinstance(text_value, str):
                raise ValidationError(f"{key} {text_value!r} is not valid: give a text.")
            values[key] = text_value
    return with_the_rest(values, data, PENDING_FIELDS)
