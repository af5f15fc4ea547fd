"""The statements a worker runs for every batch, as SQL text for the driver itself.

On tiny files the catalog is the whole cost of a worker, and SQLAlchemy's
statement machinery (caching, expanding IN lists, type processing of every
parameter and result) cost more than SQLite takes to run the statements. So
the few statements of the hot path (claim, lock, insert, delete; on SQLite a
look-up of the batch's hashes and paths too) are written out once per backend
and run with ``exec_driver_sql`` on PostgreSQL, and on SQLite with the sqlite3
connection under the SQLAlchemy one, in its transaction (``_sqlite``). Errors
are still SQLAlchemy's either way (``translate_errors`` and the retry rules see
them as before), the transaction's begin and commit events still fire, and the
values are converted here, the way the column types would (``UTCDateTime``:
naive UTC text on SQLite; ``JSON``: ``json.dumps``). A staged meta on SQLite
stays the text it was stored as (``StoredJSON``) unless something reads it.

Lists of ids, hashes and paths are ONE parameter: an array on PostgreSQL
(``= ANY(...)``), a JSON array on SQLite (``json_each``); on PostgreSQL the new
models and their links are one JSON array too (sending an array per column cost
more than the insert itself). The text of each statement is then the same
whatever the batch size: no list is expanded into one parameter per value, and
the statements are built once.

Everything else (renewals, failures, merges, conflicts) goes through the ORM
and Core statements in ``queue``: rare, and clearer there.
"""

from __future__ import annotations

import functools
import json
import re
import sqlite3
from collections.abc import Iterator, Mapping, Sequence
from datetime import datetime, timedelta, timezone
from typing import Any

from sqlalchemy import Connection
from sqlalchemy.exc import DBAPIError

from modelvault.catalog.stamp_meta import SCAN_MTIME_NS
from modelvault.db.types import as_utc, utc_text
from modelvault.file_stamp import FILE_STAT

CLAIMED_COLUMNS = (
    "id, path, name, type, base, size_bytes, created_at, {meta}, tags, attempts, source"
)
MODEL_COLUMNS = (
    "sha256",
    "path",
    "path_key",
    "name",
    "type",
    "base",
    "size_bytes",
    "mtime_ns",
    "created_at",
    "updated_at",
    "meta",
)
META = MODEL_COLUMNS.index("meta")  # the last: JSON, where the others are text or numbers

# SQLite's largest rowid is 2**63 - 1; a batch whose inserts could reach it is
# looked up first instead of told apart by rowid (see BatchSQL.insert_models_run).
LAST_ROWID_BEFORE_LOOKUP = 2**62


class StoredJSON(Mapping[str, Any]):
    """A JSON object as the catalog stored it: its text, decoded on first use.

    A staging row's meta usually goes to its model as it is: kept as text, it
    is written back as the same text, never decoded and encoded again. Anything
    that reads it (a merge, a conflict) decodes it once, as a dict would.
    """

    __slots__ = ("_value", "text")

    def __init__(self, text: str) -> None:
        self.text = text  # the text of a JSON object, checked by SQLite's json()
        self._value: dict[str, Any] | None = None

    @property
    def value(self) -> dict[str, Any]:
        if self._value is None:
            self._value = dict(json.loads(self.text))
        return self._value

    def __getitem__(self, key: str) -> Any:
        return self.value[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self.value)

    def __len__(self) -> int:
        return len(self.value)

    def __repr__(self) -> str:
        return f"StoredJSON({self.text!r})"

    def with_key(self, key: str, value: Any) -> StoredJSON:
        """This object with ``key`` added last, still as text (so the rest is not decoded
        and encoded again); ``key`` must not be in it."""
        head = self.text.rstrip()[:-1].rstrip()  # the object without its closing brace
        joiner = "" if head.endswith("{") else ","
        return StoredJSON(f"{head}{joiner}{json.dumps(key)}:{json.dumps(value)}}}")


class BatchSQL:
    """The hot-path statements of one backend, and the conversion of their values."""

    def __init__(self, postgresql: bool) -> None:
        self.postgresql = postgresql
        if postgresql:
            now, until = "now()", "now() + :lease"
        else:
            now, until = ":now", ":until"
        # PostgreSQL must find these rows by id: the indexes on status keep an entry
        # for every row that was ever claimed until VACUUM clears them, and a plan
        # that starts from status = 'claimed' wades through all of them. So status
        # is compared as an expression no index serves.
        status = "status || ''" if postgresql else "status"
        held = (
            f"{self._any('id', 'ids')} AND {status} = 'claimed' AND claimed_by = :owner "
            f"AND lease_expires_at > {now}"
        )
        self.candidates = self._text(self._candidates(now))
        self.claim = self._text(
            f"UPDATE pending_import SET status = 'claimed', claimed_by = :owner, "
            f"lease_expires_at = {until} WHERE {self._any('id', 'ids')} "
            f"RETURNING {CLAIMED_COLUMNS.format(meta='meta' if postgresql else 'json(meta)')}"
        )
        lock = " FOR UPDATE" if postgresql else ""  # SQLite: the write lock is held from BEGIN
        self.lock_held = self._text(f"SELECT id FROM pending_import WHERE {held}{lock}")
        self.delete_held = self._text(f"DELETE FROM pending_import WHERE {held}")
        self.insert_models = self._text(self._insert_models())
        self.known = self._text(self._known())
        self.inserted_since = "SELECT path FROM models WHERE rowid > :last"  # SQLite
        self.insert_links = self._text(
            "INSERT INTO model_tags (model_sha256, tag_id) "
            + (
                "SELECT v ->> 0, CAST(v ->> 1 AS integer) FROM "
                "json_array_elements(CAST(:links AS json)) WITH ORDINALITY AS e(v, n) ORDER BY n"
                if postgresql
                else "VALUES (?, ?)"
            )
            + " ON CONFLICT DO NOTHING"
        )

    def _text(self, sql: str) -> str:
        """``:name`` placeholders as the driver takes them (sqlite3 takes them as they are)."""
        return re.sub(r"(?<![:\w]):(\w+)", r"%(\1)s", sql) if self.postgresql else sql

    def _any(self, column: str, param: str) -> str:
        if self.postgresql:
            kind = "integer" if column == "id" else "text"
            return f"{column} = ANY(CAST(:{param} AS {kind}[]))"
        return f"{column} IN (SELECT value FROM json_each(:{param}))"

    def _candidates(self, now: str) -> str:
        """The oldest claimable rows: pending and out of back-off, or claimed by a lease that ran
        out."""
        if self.postgresql:
            return (
                "SELECT id, size_bytes FROM pending_import WHERE "
                f"(status = 'pending' AND (not_before IS NULL OR not_before <= {now})) "
                f"OR (status = 'claimed' AND (lease_expires_at IS NULL "
                f"OR lease_expires_at <= {now})) "
                "ORDER BY id LIMIT :limit FOR UPDATE SKIP LOCKED"
            )
        # Three ordered index ranges instead of one OR, which SQLite would sort in full.
        parts = [
            "status = 'pending' AND not_before IS NULL",
            f"status = 'pending' AND not_before <= {now}",
            f"status = 'claimed' AND (lease_expires_at IS NULL OR lease_expires_at <= {now})",
        ]
        members = " UNION ALL ".join(
            "SELECT * FROM (SELECT id, size_bytes FROM pending_import "
            f"WHERE {part} ORDER BY id LIMIT :limit)"
            for part in parts
        )
        return f"SELECT id, size_bytes FROM ({members}) ORDER BY id LIMIT :limit"

    def _insert_models(self) -> str:
        """Insert models.

        PostgreSQL: the models of ``:rows``, a JSON array of ``MODEL_COLUMNS``
        arrays, in its order, in one statement with one parameter (an array per
        column costs more to send than the insert takes); a model whose sha256 or
        path key the catalog holds already, or that another host committed meanwhile
        (PostgreSQL waits for its commit), is skipped, and the paths returned
        tell which files were new. SQLite: one row of ``MODEL_COLUMNS`` values,
        for ``executemany`` (which takes no RETURNING), skipped if its sha256 or path
        key is taken (see ``insert_models_run``).
        """
        columns = ", ".join(MODEL_COLUMNS)
        if not self.postgresql:
            marks = ", ".join("?" * len(MODEL_COLUMNS))
            return f"INSERT INTO models ({columns}) VALUES ({marks}) ON CONFLICT DO NOTHING"
        kinds = ("text",) * 6 + ("bigint", "bigint", "timestamptz", "timestamptz")
        values = ", ".join(f"CAST(v ->> {i} AS {kind})" for i, kind in enumerate(kinds))
        return (
            f"INSERT INTO models ({columns}) SELECT {values}, v -> {len(kinds)} FROM "
            "json_array_elements(CAST(:rows AS json)) WITH ORDINALITY AS e(v, n) ORDER BY n "
            "ON CONFLICT DO NOTHING RETURNING path"
        )

    def _known(self) -> str:
        """sha256 and path key of the models holding any of ``shas``, ``paths`` or
        ``keys`` (their stored ones) (SQLite)."""
        # Two index lookups: with an OR, SQLite cannot use both indexes.
        found = "SELECT sha256, coalesce(path_key, path) FROM models WHERE"
        return (
            f"{found} {self._any('sha256', 'shas')} "
            f"UNION ALL {found} {self._any('path', 'paths')} "
            f"UNION ALL {found} {self._any('path_key', 'keys')}"
        )

    # -- values ---------------------------------------------------------------

    def clock(self, lease_seconds: float = 0.0) -> dict[str, Any]:
        """``now`` and ``until`` = now + lease (SQLite: this process's clock; PostgreSQL: the
        server's, so only the lease is passed)."""
        if self.postgresql:
            return {"lease": timedelta(seconds=lease_seconds)}
        now = datetime.now(timezone.utc)
        return {"now": self.time(now), "until": self.time(now + timedelta(seconds=lease_seconds))}

    def many(self, values: Sequence[Any]) -> Any:
        """A list as one parameter: an array (PostgreSQL) or a JSON array (SQLite)."""
        return list(values) if self.postgresql else json.dumps(list(values))

    def time(self, value: datetime) -> Any:
        """A time as ``UTCDateTime`` stores it: naive UTC text on SQLite."""
        return value if self.postgresql else utc_text(value)

    def json_time(self, value: datetime) -> str | None:
        """A time as ``insert_models`` takes it in its JSON: ISO text, naive UTC on SQLite."""
        return value.isoformat() if self.postgresql else _stored_time_text(value)

    @staticmethod
    def read_time(value: Any) -> datetime | None:
        """A stored time back as an aware UTC datetime."""
        return _read_stored_time(value)

    def read_tags(self, value: Any) -> Sequence[Any]:
        """A staged tag list: on SQLite its text, decoded once for all rows that share it."""
        return _decode_tags(value) if isinstance(value, str) else list(value or [])

    def json(self, value: Any) -> Any:
        return json.dumps(value)

    def read_json(self, value: Any) -> Any:
        """psycopg decodes JSON itself; sqlite3 hands back the text."""
        return json.loads(value) if isinstance(value, str) else value

    def read_meta(self, value: Any) -> Mapping[str, Any]:
        """A staged meta as a mapping: on SQLite, text (valid: the claim's ``json()``
        checked it) stays text until something reads it, unless it holds the scan's
        stamp of the file (which a model's meta loses: see ``catalog.without_scan_stat``)."""
        if (
            isinstance(value, str)
            and value.startswith("{")
            and SCAN_MTIME_NS not in value
            and FILE_STAT not in value
        ):
            return StoredJSON(value)
        return dict(self.read_json(value) or {})

    # -- running them ---------------------------------------------------------

    def fetch(self, conn: Connection, statement: str, params: dict[str, Any]) -> list[Any]:
        """Run ``statement``; all its rows."""
        if self.postgresql:
            return list(conn.exec_driver_sql(statement, params).all())
        rows: list[Any] = _sqlite(conn, statement, params).fetchall()
        return rows

    def change(self, conn: Connection, statement: str, params: dict[str, Any]) -> int:
        """Run ``statement``; the rows it changed."""
        if self.postgresql:
            return int(conn.exec_driver_sql(statement, params).rowcount)
        return int(_sqlite(conn, statement, params).rowcount)

    def run_many(self, conn: Connection, statement: str, rows: Sequence[Any]) -> None:
        """Run ``statement`` once per parameter set of ``rows`` (``executemany``)."""
        if self.postgresql:
            conn.exec_driver_sql(statement, list(rows))
            return
        _sqlite(conn, statement, rows, many=True)

    def insert_links_run(self, conn: Connection, links: list[tuple[str, int]]) -> None:
        """Link models to tags (a link that exists is left as it is)."""
        if not links:
            return
        if self.postgresql:
            conn.exec_driver_sql(self.insert_links, {"links": json.dumps(links)})
            return
        self.run_many(conn, self.insert_links, links)

    def insert_models_run(self, conn: Connection, rows: list[list[Any]]) -> set[str]:
        """Insert the models of the files whose content and path (key) the catalog has never
        seen (``MODEL_COLUMNS`` values each, times as ``json_time`` gives them, meta as a
        dict); returns their paths. A later copy of content earlier in ``rows`` is not new.
        """
        if not rows:
            return set()
        if self.postgresql:
            # ensure_ascii=False: a string the driver cannot encode (a lone surrogate)
            # fails as it would as a parameter of its own, not stored as an escape.
            payload = json.dumps(rows, ensure_ascii=False)
            return set(conn.exec_driver_sql(self.insert_models, {"rows": payload}).scalars().all())
        for row in rows:
            meta = row[META]
            row[META] = meta.text if isinstance(meta, StoredJSON) else json.dumps(meta)
        # SQLite: usually every file is new, and inserting them all, skipping none, is
        # one statement (ON CONFLICT DO NOTHING counts only the rows it inserted). If one
        # was skipped, the rows past the table's last rowid before are the new ones: the
        # write lock is held since BEGIN, nobody else inserts meanwhile, and SQLite gives
        # a new row the last rowid + 1 (while it is below the largest one; else a
        # look-up decides first). A savepoint to take them back cost more than the
        # insert; executemany takes no RETURNING; one INSERT ... SELECT from json_each
        # parses each row's JSON again for every column, twice slower.
        ((last,),) = self.fetch(conn, "SELECT max(rowid) FROM models", {})
        last = last or 0
        if last >= LAST_ROWID_BEFORE_LOOKUP:
            rows = self._not_in_catalog(conn, rows)
        if not rows:
            return set()
        if _sqlite(conn, self.insert_models, rows, many=True).rowcount == len(rows):
            return {row[1] for row in rows}
        return {path for (path,) in self.fetch(conn, self.inserted_since, {"last": last})}

    def _not_in_catalog(self, conn: Connection, rows: list[list[Any]]) -> list[list[Any]]:
        """The rows whose sha256 and path key the catalog does not hold, nor an earlier row."""
        params = {
            "shas": json.dumps([row[0] for row in rows]),
            "paths": json.dumps([row[1] for row in rows]),
            "keys": json.dumps([row[2] for row in rows if row[2] is not None]),
        }
        known_shas: set[str] = set()
        known_keys: set[str] = set()
        for sha, key in self.fetch(conn, self.known, params):
            known_shas.add(sha)
            known_keys.add(key)
        fresh = []
        for row in rows:
            key = row[1] if row[2] is None else row[2]  # path_key, or the path its own key
            if row[0] not in known_shas and key not in known_keys:
                known_shas.add(row[0])
                known_keys.add(key)
                fresh.append(row)
        return fresh


def _sqlite(conn: Connection, statement: str, params: Any, *, many: bool = False) -> Any:
    """Run ``statement`` on the sqlite3 connection under ``conn``, in its transaction.

    SQLAlchemy's execution of a statement (its context, result and event
    machinery) costs more than SQLite takes to run these. A driver error
    becomes the ``DBAPIError`` SQLAlchemy would have raised (``IntegrityError``,
    ``OperationalError``...), so ``translate_errors`` and the retry rules see
    it as before; anything else (a value the driver cannot bind) passes as it is.
    """
    raw: Any = conn.connection.driver_connection
    try:
        return raw.executemany(statement, params) if many else raw.execute(statement, params)
    except sqlite3.Error as exc:
        raise DBAPIError.instance(statement, params, exc, sqlite3.Error) from exc


# The rows of one staging batch often share their created_at, and tag lists repeat
# (a folder's tags, a few favourites): each distinct value is converted once. The
# values kept are immutable (datetimes, tuples), or tag entries nothing changes.
_read_stored_time = functools.lru_cache(maxsize=1024)(as_utc)
_stored_time_text = functools.lru_cache(maxsize=1024)(utc_text)


@functools.lru_cache(maxsize=4096)
def _decode_tags(text: str) -> tuple[Any, ...]:
    return tuple(json.loads(text) or ())


@functools.cache
def batch_sql(postgresql: bool) -> BatchSQL:
    return BatchSQL(postgresql)
