"""SQL text run on the driver itself, for the statements where SQLAlchemy's own
machinery would cost more than the database takes to run them.

- A list (ids, hashes, paths, statuses) is ONE parameter: a JSON array
  (``json_list``), read as rows by ``json_each`` on SQLite and
  ``json_array_elements_text`` on PostgreSQL (``json_rows``, ``member_of``).
  The text of a statement is then the same whatever the list's length, and it
  is built once; psycopg builds an array parameter element by element in
  Python, which costs more than sending the JSON.
- A driver error becomes the ``DBAPIError`` SQLAlchemy would have raised
  (``driver_errors``), so ``DatabaseManager.translate_errors`` and the retry
  rules see it as any other.
- On SQLite, statements run on the sqlite3 connection under the SQLAlchemy one,
  in its transaction (``Driver``): SQLAlchemy's execution context, result and
  events cost more than SQLite takes to run these statements.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from sqlalchemy import Connection
from sqlalchemy.engine import Dialect
from sqlalchemy.exc import DBAPIError

__all__ = ["Driver", "driver_errors", "json_list", "json_rows", "member_of", "placeholders"]


def json_list(values: Sequence[Any]) -> str:
    """A list as one parameter: its JSON array."""
    return json.dumps(list(values))


def json_rows(param: str, postgresql: bool) -> str:
    """The elements of the JSON array ``param`` (a placeholder as written) as rows of
    one column, ``value`` (text on PostgreSQL), in their order."""
    if postgresql:
        return f"json_array_elements_text(CAST({param} AS json)) AS k(value)"
    return f"json_each({param}) AS k"


def member_of(column: str, param: str, postgresql: bool, kind: str = "text") -> str:
    """``column`` is one of the JSON array ``:param`` (of ``kind`` values on PostgreSQL).

    PostgreSQL: ``= ANY`` of an array made once from the JSON, so the rows are
    found through ``column``'s index (an ``IN`` subquery may be planned as a join).
    """
    rows = json_rows(f":{param}", postgresql)
    if postgresql:
        return f"{column} = ANY(ARRAY(SELECT CAST(k.value AS {kind}) FROM {rows}))"
    return f"{column} IN (SELECT k.value FROM {rows})"


def placeholders(sql: str, postgresql: bool) -> str:
    """``:name`` placeholders as the driver takes them (sqlite3 takes them as they are)."""
    return re.sub(r"(?<![:\w]):(\w+)", r"%(\1)s", sql) if postgresql else sql


@contextmanager
def driver_errors(dialect: Dialect, statement: str, params: Any) -> Iterator[None]:
    """A driver error raised inside becomes the ``DBAPIError`` SQLAlchemy would raise
    (``IntegrityError``, ``OperationalError``...), chained; anything else (a value the
    driver cannot bind) passes as it is."""
    error: Any = dialect.loaded_dbapi.Error
    try:
        yield
    except error as exc:
        raise DBAPIError.instance(statement, params, exc, error, dialect=dialect) from exc


class Driver:
    """Runs SQL text (written with ``:name`` placeholders by ``placeholders``) on one
    backend: ``exec_driver_sql`` on PostgreSQL, the sqlite3 connection on SQLite."""

    def __init__(self, postgresql: bool) -> None:
        self.postgresql = postgresql

    def fetch(self, conn: Connection, statement: str, params: Any) -> list[Any]:
        """Run ``statement``; all its rows."""
        if self.postgresql:
            return list(conn.exec_driver_sql(statement, params).all())
        rows: list[Any] = _sqlite(conn, statement, params).fetchall()
        return rows

    def change(self, conn: Connection, statement: str, params: Any) -> int:
        """Run ``statement``; the number of rows it changed."""
        if self.postgresql:
            return int(conn.exec_driver_sql(statement, params).rowcount)
        return int(_sqlite(conn, statement, params).rowcount)

    def run_many(self, conn: Connection, statement: str, rows: Sequence[Any]) -> int:
        """Run ``statement`` once per parameter set of ``rows``; the rows it changed."""
        if self.postgresql:
            return int(conn.exec_driver_sql(statement, list(rows)).rowcount)
        return int(_sqlite(conn, statement, rows, many=True).rowcount)


def _sqlite(conn: Connection, statement: str, params: Any, *, many: bool = False) -> Any:
    """Run ``statement`` on the sqlite3 connection under ``conn``, in its transaction."""
    raw: Any = conn.connection.driver_connection
    with driver_errors(conn.dialect, statement, params):
        return raw.executemany(statement, params) if many else raw.execute(statement, params)
