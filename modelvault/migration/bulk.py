"""The importer's bulk reads and writes: what the catalog holds for a batch, and
the batch's new rows written in a few statements.

Nothing here decides anything (``placement.place`` does); everything here is
about doing the database work of a batch with as little per-row cost as the
driver allows:

- ``CatalogState``: what the catalog holds at a batch's paths (by their keys)
  and for its hashes, read with three look-ups per batch (``KeyLookup``) run through the driver.
- ``bulk_insert``: one table's new rows, given as tuples in the table's column
  order and turned into the driver's values once (each column type's bind
  processor, SQLAlchemy's own). SQLite: multi-row ``INSERT ... VALUES``
  statements of a few thousand values each. PostgreSQL: one ``COPY`` into the
  table, within the batch's transaction, which checks every key and foreign
  key as it goes. Either way a row that breaks one fails its statement and the
  whole batch.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from itertools import chain
from typing import Any, NamedTuple, Protocol, cast

from sqlalchemy import JSON, Column, Table, insert, select
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import Session

from modelvault.db.batches import chunked
from modelvault.db.models import Model, PendingImport
from modelvault.db.types import UTCDateTime, utc_text
from modelvault.legacy.placement import NO_MARKS, NOTHING_HELD, Held, Marks, marks_of
from modelvault.queue.driver import driver_errors, json_list, json_rows

MODELS = cast(Table, Model.__table__)
PENDING = cast(Table, PendingImport.__table__)


class Keyed(Protocol):
    @property
    def path(self) -> str: ...
    @property
    def key(self) -> str: ...  # the identity key of its path (modelvault.pathkey)
    @property
    def stored_key(self) -> str | None: ...  # its path_key: None for a POSIX path
    @property
    def sha256(self) -> str | None: ...


class ModelAt(NamedTuple):
    sha256: str
    path: str  # as the model spells it
    marks: Marks


@dataclass
class CatalogState:
    """What the catalog already holds for the paths and hashes of one batch.

    A model is found by the key of a row's path (the same file, however spelt);
    a staging row by the row's very path (the row staged by an earlier run).
    """

    model_at: dict[str, ModelAt]  # path key -> the model of that file
    model_of: dict[str, tuple[str, Marks]]  # sha256 -> (path, its marks)
    staged: dict[str, str | None]  # path -> source

    def held(self, row: Keyed, new_in_batch: bool) -> Held:
        """What it holds for one row (``NOTHING_HELD``, shared, for most rows)."""
        at = self.model_at.get(row.key)
        sha256 = row.sha256
        of = None if sha256 is None else self.model_of.get(sha256)
        staged = row.path in self.staged
        if at is None and of is None and not staged and not new_in_batch:
            return NOTHING_HELD
        return Held(
            staged=staged,
            staged_source=self.staged.get(row.path),
            at_path=None if at is None else at.marks,
            at_other_spelling=at is not None and at.path != row.path,
            of_hash=None if of is None else of[1],
            new_in_batch=new_in_batch,
        )


@dataclass(frozen=True)
class Lookups:
    model_by_path: KeyLookup = field(
        default_factory=lambda: KeyLookup(
            [MODELS.c.path, MODELS.c.sha256, MODELS.c.path], MODELS.c.path
        )
    )
    model_by_key: KeyLookup = field(
        default_factory=lambda: KeyLookup(
            [MODELS.c.path_key, MODELS.c.sha256, MODELS.c.path], MODELS.c.path_key
        )
    )
    model_by_sha: KeyLookup = field(
        default_factory=lambda: KeyLookup([MODELS.c.sha256, MODELS.c.path], MODELS.c.sha256)
    )
    staged_by_path: KeyLookup = field(
        default_factory=lambda: KeyLookup([PENDING.c.path, PENDING.c.source], PENDING.c.path)
    )

    def state(self, session: Session, rows: Sequence[Keyed]) -> CatalogState:
        """What the catalog holds for these rows' paths and hashes: three look-ups
        (four in a batch with both POSIX and Windows paths)."""
        paths = _keys([row.path for row in rows])
        own_keys = paths  # the keys of POSIX paths are the paths: no other list
        keys = _keys([row.stored_key for row in rows if row.stored_key is not None])
        if keys is not None:
            own_keys = _keys([row.path for row in rows if row.stored_key is None])
        hashes = _keys([row.sha256 for row in rows if row.sha256 is not None])
        with _probing_indexes(session):
            model_at = {
                key: (sha, path)
                for lookup, wanted in ((self.model_by_path, own_keys), (self.model_by_key, keys))
                for key, sha, path in lookup.fetch(session, wanted)
            }
            model_of = dict(self.model_by_sha.fetch(session, hashes))  # sha256 -> path
            staged = dict(self.staged_by_path.fetch(session, paths))  # path -> source
        # Only models met already need their meta (none on a first import). It is read
        # whole: PostgreSQL's JSON operators fail on a document holding "\u0000".
        marks: dict[str, Marks] = {}
        for chunk in chunked(sorted({sha for sha, _ in model_at.values()} | model_of.keys())):
            found = session.execute(select(Model.sha256, Model.meta).where(Model.sha256.in_(chunk)))
            marks.update((sha, marks_of(meta)) for sha, meta in found)
        return CatalogState(
            model_at={
                key: ModelAt(sha, path, marks.get(sha, NO_MARKS))
                for key, (sha, path) in model_at.items()
            },
            model_of={sha: (path, marks.get(sha, NO_MARKS)) for sha, path in model_of.items()},
            staged=staged,
        )


@contextmanager
def _probing_indexes(session: Session) -> Iterator[None]:
    """PostgreSQL: the look-ups probe the indexes, whatever the planner guesses.

    A batch's keys are a few thousand among rows that grow to millions: probes
    cost per key, a scan per row of the table. For a long array the planner
    picks the scan, and each look-up would then grow with the catalog. Set for
    the look-ups only (``SET LOCAL``: the transaction's, undone even on error).
    """
    conn = session.connection()
    if conn.dialect.name != "postgresql":
        yield
        return
    conn.exec_driver_sql("SET LOCAL enable_seqscan = off")
    yield
    conn.exec_driver_sql("SET LOCAL enable_seqscan TO DEFAULT")


class KeyLookup:
    """``SELECT a, b FROM t WHERE key IN (the keys)``: one statement for a whole
    batch, whatever its size, run through the driver directly.

    The keys go in as one value, in order (each index page is read once): a JSON
    array joined to the table (SQLite's ``json_each``, whose rows probe the
    index one by one, where ``IN (SELECT ...)`` would first build and sort a
    temporary index of them; PostgreSQL's ``json_array_elements_text``: psycopg
    builds an array parameter element by element in Python, which cost more
    than the look-ups). An IN list of bound parameters would need a statement
    per thousand keys, and Core's per-parameter handling of an expanding IN
    cost more than the look-ups too.
    """

    def __init__(self, columns: Sequence[Column[Any]], key: Column[Any]) -> None:
        table = key.table.name
        self.sqlite = (
            f"SELECT {', '.join('t.' + column.name for column in columns)} "
            f"FROM {json_rows('?', postgresql=False)} JOIN {table} AS t ON t.{key.name} = k.value"
        )
        self.postgresql = (
            f"SELECT {', '.join('t.' + column.name for column in columns)} "
            f"FROM {json_rows('%s', postgresql=True)} JOIN {table} AS t ON t.{key.name} = k.value"
        )

    def fetch(self, session: Session, keys: str | None) -> list[tuple[Any, ...]]:
        """The rows for ``keys``, as ``_keys`` gives them (None: no keys)."""
        if keys is None:
            return []
        conn = session.connection()
        sql = self.postgresql if conn.dialect.name == "postgresql" else self.sqlite
        return [tuple(row) for row in conn.exec_driver_sql(sql, (keys,))]


def _keys(keys: Iterable[Any]) -> str | None:
    """Look-up keys as ``KeyLookup`` takes them: a JSON array, in order, no repeats
    (made once for the look-ups that share them); None when there are none."""
    ordered = sorted(set(keys))
    return json_list(ordered) if ordered else None


class BulkInsert:
    """One table's rows inserted with ``executemany``, as values in the driver's form.

    SQLAlchemy compiles the statement and supplies each column type's bind
    processor (JSON, UTC datetimes), but the rows skip Core's per-row parameter
    handling, which took a third of the import's time (bench/import_bench.py).
    """

    def __init__(
        self, table: Table, columns: Sequence[str], dialect: Dialect, json_text: Sequence[str] = ()
    ) -> None:
        compiled = insert(table).compile(dialect=dialect, column_keys=list(columns))
        self.table = table
        self.sql = str(compiled)
        self.columns = tuple(columns)
        self.positional = compiled.positional
        # Columns with a Python-side default are compiled in too: the caller gives
        # every value, in the statement's own order (the table's).
        order = tuple(compiled.positiontup or ()) if self.positional else tuple(compiled.params)
        if order != self.columns:
            raise AssertionError(f"give the values of {order}, not {self.columns}")
        self.processors = [
            (i, _quicker(table.c[name].type, process))
            for i, name in enumerate(columns)
            if name not in json_text  # JSON columns whose values come as JSON text already
            and (process := table.c[name].type.dialect_impl(dialect).bind_processor(dialect))
        ]

    def execute(self, session: Session, rows: Sequence[tuple[Any, ...]]) -> None:
        if rows:
            session.connection().exec_driver_sql(self.sql, self.driver_rows(rows))

    def driver_rows(self, rows: Sequence[tuple[Any, ...]]) -> list[Any]:
        """The rows as the driver takes them: tuples (positional) or dicts."""
        if self.processors and rows:
            columns: list[Sequence[Any]] = list(zip(*rows, strict=True))  # loops run in C
            for i, process in self.processors:
                columns[i] = _processed(process, columns[i])
            rows = list(zip(*columns, strict=True))
        return list(rows) if self.positional else [self._named(row) for row in rows]

    def _named(self, values: Sequence[Any]) -> dict[str, Any]:
        return dict(zip(self.columns, values, strict=True))


class CopyInsert(BulkInsert):
    """PostgreSQL: the rows sent by one ``COPY ... FROM STDIN`` (the quickest way
    in: no statement per row, and no second copy through a temporary table)."""

    def __init__(
        self, table: Table, columns: Sequence[str], dialect: Dialect, json_text: Sequence[str] = ()
    ) -> None:
        super().__init__(table, columns, dialect, json_text)
        self.positional = True  # COPY takes rows as sequences
        # COPY reads JSON as text: the text psycopg's own Json adapter would send.
        self.processors = [
            (i, json.dumps if isinstance(table.c[name].type, JSON) else process)
            for i, process in self.processors
            for name in (self.columns[i],)
        ]
        self.copy = f"COPY {table.name} ({', '.join(self.columns)}) FROM STDIN"

    def execute(self, session: Session, rows: Sequence[tuple[Any, ...]]) -> None:
        if not rows:
            return
        conn = session.connection()
        dbapi: Any = conn.connection.dbapi_connection  # psycopg's, for its copy()
        driver_rows = self.driver_rows(rows)
        with (
            driver_errors(conn.dialect, self.copy, None),
            dbapi.cursor() as cursor,
            cursor.copy(self.copy) as copy,
        ):
            for row in driver_rows:
                copy.write_row(row)


class ValuesInsert(BulkInsert):
    """SQLite: the rows sent by multi-row ``INSERT ... VALUES (...), (...)``
    statements of at most ``VALUES_PER_STATEMENT`` values each: quicker than an
    ``executemany``, which binds, steps and resets a statement for every row
    (100,000 legacy rows: 1.10x -> 1.02x the floor of bench/import_bench.py).

    The driver keeps each statement prepared (about 350 KB at 4,096 values): the
    rows go in statements of a few fixed sizes (the largest, then powers of two
    for the rest), never of a size per batch, which would fill its cache.
    """

    def __init__(
        self, table: Table, columns: Sequence[str], dialect: Dialect, json_text: Sequence[str] = ()
    ) -> None:
        super().__init__(table, columns, dialect, json_text)
        self.head, self.group = self.sql.rsplit(" VALUES ", 1)  # the group: "(?, ?, ...)"
        self.statements: dict[int, str] = {}  # rows per statement -> its SQL
        self.most_rows = 0  # rows per statement at most: known once connected

    def execute(self, session: Session, rows: Sequence[tuple[Any, ...]]) -> None:
        if not rows:
            return
        conn = session.connection()
        if not self.most_rows:
            limit = _values_per_statement(conn.connection.driver_connection)
            self.most_rows = max(1, limit // len(self.columns))
        start = 0
        for size in _statement_sizes(len(rows), self.most_rows):
            values = self.driver_rows(rows[start : start + size])  # a statement's worth at a time
            start += size
            conn.exec_driver_sql(self._statement(size), tuple(chain.from_iterable(values)))

    def _statement(self, rows: int) -> str:
        sql = self.statements.get(rows)
        if sql is None:
            sql = self.statements[rows] = f"{self.head} VALUES {', '.join([self.group] * rows)}"
        return sql


# Values bound per statement: measured quickest (100,000 legacy rows: 1,024 and
# 32,766 values took 3-5% longer; larger statements also write more to the WAL,
# and the driver keeps each one prepared: 2.5 MB at 32,766).
VALUES_PER_STATEMENT = 4096


def _values_per_statement(raw: Any) -> int:
    """``VALUES_PER_STATEMENT``, or fewer if this sqlite3 connection binds fewer."""
    getlimit = getattr(raw, "getlimit", None)  # Python 3.11+
    if getlimit is not None:
        which = getattr(sqlite3, "SQLITE_LIMIT_VARIABLE_NUMBER")  # noqa: B009 (3.11+ too)
        return min(int(getlimit(which)), VALUES_PER_STATEMENT)
    return VALUES_PER_STATEMENT if sqlite3.sqlite_version_info >= (3, 32) else 999


def _statement_sizes(rows: int, most: int) -> Iterator[int]:
    """``rows`` split into statements: of ``most`` rows, then powers of two."""
    full, rest = divmod(rows, most)
    yield from [most] * full
    bit = 1 << rest.bit_length()
    while rest:
        bit >>= 1
        if rest & bit:
            yield bit
            rest -= bit


def _processed(process: Callable[[Any], Any], values: Sequence[Any]) -> list[Any]:
    first = values[0]
    if values.count(first) == len(values):  # e.g. the batch's one "now": processed once
        return [process(first)] * len(values)
    return list(map(process, values))


def bulk_insert(
    table: Table, columns: Sequence[str], dialect: Dialect, json_text: Sequence[str] = ()
) -> BulkInsert:
    """The quickest way to insert many rows on this backend; the values of the
    JSON columns named in ``json_text`` are given as JSON text."""
    kinds = {"postgresql": CopyInsert, "sqlite": ValuesInsert}
    kind = kinds.get(dialect.name, BulkInsert)
    return kind(table, columns, dialect, json_text)


_DATETIME_PROBES = (
    datetime(1970, 1, 1, tzinfo=timezone.utc),
    datetime(2024, 8, 18, 16, 53, 20, 123000, tzinfo=timezone.utc),
    datetime(1, 1, 1, tzinfo=timezone.utc),
    datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=timezone(timedelta(hours=5))),
)


_JSON_PROBES: tuple[Any, ...] = (
    None,
    {},
    [],
    {"a": [1, 2.5, None, True], "é": {"\u0000": '\ud83d\ude00 \\ "'}},
    [{"name": "x", "color": "#ff0000"}],
)


def _quicker(column_type: Any, process: Callable[[Any], Any]) -> Callable[[Any], Any]:
    """A quicker processor that gives the very same values, where there is one.

    A UTC datetime stored as naive UTC text (SQLite): ``isoformat``, where the
    generic processor formats it field by field, at twice the cost of the whole
    rest of a row's conversion. JSON stored as text: ``json.dumps`` itself,
    without the generic processor's checks around it.
    """
    quick: Callable[[Any], Any]
    if isinstance(column_type, UTCDateTime):
        quick, probes = utc_text, _DATETIME_PROBES
    elif isinstance(column_type, JSON):
        quick, probes = json.dumps, _JSON_PROBES
    else:
        return process
    try:
        same = all(process(probe) == quick(probe) for probe in probes)
    except (TypeError, ValueError, OverflowError):
        same = False
    return quick if same else process


__all__ = [
    "BulkInsert",
    "CatalogState",
    "CopyInsert",
    "KeyLookup",
    "Lookups",
    "ValuesInsert",
    "bulk_insert",
]
