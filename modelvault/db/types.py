"""Column types that behave the same on every backend."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from sqlalchemy import DateTime
from sqlalchemy.engine import Dialect
from sqlalchemy.types import TypeDecorator


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


def utc_text(value: datetime | None) -> str | None:
    """An aware datetime as ``UTCDateTime`` stores it on SQLite: naive UTC text."""
    if value is None:
        return None
    if value.tzinfo is not timezone.utc:
        value = value.astimezone(timezone.utc)
    # Less its "+00:00": quicker than a naive copy of the datetime, the same text.
    return value.isoformat(" ", "microseconds")[:-6]


def as_utc(value: Any) -> datetime | None:
    """A stored time (a datetime, or SQLite's text of one) as an aware UTC datetime."""
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    if not isinstance(value, datetime):
        return None
    if value.tzinfo is None:
        return value.replace(tzinfo=timezone.utc)
    return value.astimezone(timezone.utc)


class UTCDateTime(TypeDecorator[datetime]):
    """A timezone-aware UTC datetime on every backend.

    PostgreSQL keeps the zone itself; SQLite has no zone, so we store naive UTC
    text (which sorts and compares correctly) and put the zone back on reading.
    Naive datetimes are refused: guessing a zone is how timestamps drift.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if not isinstance(value, datetime) or value.tzinfo is None:
            raise ValueError(f"expected a timezone-aware datetime, got {value!r}")
        utc: datetime = value.astimezone(timezone.utc)
        return utc.replace(tzinfo=None) if dialect.name == "sqlite" else utc

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        return as_utc(value) if isinstance(value, datetime) else None
