"""Plain, immutable copies of catalog rows, safe to keep after their session closed.

The public API hands these out instead of ORM objects so an app can pass them
between threads and read them at any time without a live session.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any

from modelvault.db.models import Model, PendingImport, Tag


@dataclass(frozen=True)
class TagRecord:
    id: int
    name: str
    color: str | None
    created_at: datetime

    @classmethod
    def of(cls, tag: Tag) -> TagRecord:
        return cls(id=tag.id, name=tag.name, color=tag.color, created_at=tag.created_at)


@dataclass(frozen=True)
class ModelRecord:
    sha256: str
    path: str
    name: str
    type: str
    base: str | None
    size_bytes: int | None
    mtime_ns: int | None
    created_at: datetime
    updated_at: datetime
    meta: dict[str, Any]
    tags: tuple[TagRecord, ...]

    @classmethod
    def of(cls, model: Model) -> ModelRecord:
        return cls(
            sha256=model.sha256,
            path=model.path,
            name=model.name,
            type=model.type,
            base=model.base,
            size_bytes=model.size_bytes,
            mtime_ns=model.mtime_ns,
            created_at=model.created_at,
            updated_at=model.updated_at,
            meta=dict(model.meta or {}),
            tags=tuple(TagRecord.of(tag) for tag in model.tags),
        )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class PendingRecord:
    id: int
    path: str
    name: str
    type: str
    base: str | None
    size_bytes: int | None
    created_at: datetime
    meta: dict[str, Any]
    tags: list[dict[str, Any]]
    legacy_id: int | None
    source: str | None
    status: str
    attempts: int
    last_error: str | None
    not_before: datetime | None
    claimed_by: str | None
    lease_expires_at: datetime | None
    sha256: str | None

    @classmethod
    def of(cls, row: PendingImport) -> PendingRecord:
        return cls(
            id=row.id,
            path=row.path,
            name=row.name,
            type=row.type,
            base=row.base,
            size_bytes=row.size_bytes,
            created_at=row.created_at,
            meta=dict(row.meta or {}),
            tags=list(row.tags or []),
            legacy_id=row.legacy_id,
            source=row.source,
            status=row.status,
            attempts=row.attempts,
            last_error=row.last_error,
            not_before=row.not_before,
            claimed_by=row.claimed_by,
            lease_expires_at=row.lease_expires_at,
            sha256=row.sha256,
        )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class QueueTotals:
    """What is still to hash (pending or claimed rows): ``files`` in all, ``bytes``
    of those with a known size, and ``unsized`` files staged without one."""

    files: int
    bytes: int
    unsized: int
