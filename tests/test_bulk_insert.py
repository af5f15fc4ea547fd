"""The importer's bulk inserts on SQLite: multi-row statements of a few fixed sizes."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, cast

import pytest
from sqlalchemy import Table, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session
from support import statements_run

from modelvault import DatabaseManager
from modelvault.config import sqlite_url
from modelvault.db.models import Tag
from modelvault.migration import bulk
from modelvault.migration.bulk import ValuesInsert, _statement_sizes, bulk_insert

TAGS = cast(Table, Tag.__table__)
COLUMNS = ("name", "color", "created_at")


@pytest.mark.parametrize(
    ("rows", "most", "sizes"),
    [
        (0, 10, []),
        (1, 10, [1]),
        (9, 10, [8, 1]),
        (10, 10, [10]),
        (25, 10, [10, 10, 4, 1]),
        (10_000, 409, [409] * 24 + [128, 32, 16, 8]),
    ],
)
def test_rows_go_in_statements_of_the_largest_size_then_powers_of_two(
    rows: int, most: int, sizes: list[int]
) -> None:
    assert list(_statement_sizes(rows, most)) == sizes


@pytest.fixture
def db(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[DatabaseManager]:
    monkeypatch.setattr(bulk, "VALUES_PER_STATEMENT", 12)  # 4 tags of 3 values a statement
    manager = DatabaseManager(sqlite_url(tmp_path / "catalog.sqlite3"))
    manager.init_db()
    yield manager
    manager.dispose()


def tag_rows(n: int) -> list[tuple[Any, ...]]:
    start = datetime(2024, 1, 1, tzinfo=timezone.utc)
    return [
        (f"t{i:03d}", "#00ff00" if i % 2 else None, start + timedelta(seconds=i)) for i in range(n)
    ]


@pytest.mark.parametrize("n", [1, 4, 11, 37])
def test_every_row_is_written_once_with_its_values(db: DatabaseManager, n: int) -> None:
    insert = bulk_insert(TAGS, COLUMNS, db.engine.dialect)
    assert isinstance(insert, ValuesInsert)
    with statements_run(db) as statements, db.session_scope() as session:
        insert.execute(session, tag_rows(n))
    rows_per_insert = [sql.count("(?") for sql in statements if sql.startswith("INSERT")]
    assert rows_per_insert == list(_statement_sizes(n, 4))
    with db.session_scope() as session:
        stored = session.execute(select(Tag.name, Tag.color, Tag.created_at).order_by(Tag.name))
        assert [tuple(row) for row in stored] == tag_rows(n)


def test_a_row_that_breaks_a_key_fails_its_batch(db: DatabaseManager) -> None:
    rows = tag_rows(9)
    rows[6] = rows[1]  # the same name twice, in another statement of the batch
    insert = bulk_insert(TAGS, COLUMNS, db.engine.dialect)
    with pytest.raises(IntegrityError), Session(db.engine) as session, session.begin():
        insert.execute(session, rows)
    with db.session_scope() as session:
        assert session.scalars(select(Tag.name)).all() == []
