"""The statements a worker runs for every batch, as SQL text for the driver itself.

On tiny files the catalog is the whole cost of a worker, and SQLAlchemy's
statement machinery (caching, expanding IN lists, type processing of every
parameter and result) cost more than SQLite takes to run the statements. So
the few statements of the hot path (claim, lock, look up, insert, delete) are
written out once per backend and run with ``exec_driver_sql``: errors are still
SQLAlchemy's (``translate_errors`` and the retry rules see them as before),
events still fire, and the values are converted here, the way the column types
would (``UTCDateTime``: naive UTC text on SQLite; ``JSON``: ``json.dumps``).

Lists of ids, hashes and paths are ONE parameter: an array on PostgreSQL
(``= ANY(...)``), a JSON array on SQLite (``json_each``). The text of each
statement is then the same whatever the batch size: no list is expanded into
one parameter per value, and the statements are built once.

Everything else (renewals, failures, merges, conflicts) goes through the ORM
and Core statements in ``queue``: rare, and clearer there.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Sequence
from datetime import datetime, timedelta, timezone
from typing import Any

from sqlalchemy import Connection

from modelvault.db.types import as_utc, utc_text

CLAIMED_COLUMNS = (
    "id, path, name, type, base, size_bytes, created_at, meta, tags, attempts, source"
)


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
            f"RETURNING {CLAIMED_COLUMNS}"
        )
        lock = " FOR UPDATE" if postgresql else ""  # SQLite: the write lock is held from BEGIN
        self.lock_held = self._text(f"SELECT id FROM pending_import WHERE {held}{lock}")
        self.delete_held = self._text(f"DELETE FROM pending_import WHERE {held}")
        self.known = self._text(self._known())
        self.insert_models = self._text(self._insert_models())
        self.insert_links = self._text(
            "INSERT INTO model_tags (model_sha256, tag_id) "
            + (
                "SELECT * FROM unnest(CAST(:sha256 AS text[]), CAST(:tag_id AS integer[]))"
                if postgresql
                else "VALUES (:sha256, :tag_id)"
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

    def _known(self) -> str:
        """sha256 and path of the models holding any of ``shas`` or ``paths``."""
        # Two index lookups: with an OR, SQLite cannot use both indexes, and PostgreSQL
        # may scan the whole table when its statistics are older than the table.
        return (
            f"SELECT sha256, path FROM models WHERE {self._any('sha256', 'shas')} "
            f"UNION ALL SELECT sha256, path FROM models WHERE {self._any('path', 'paths')}"
        )

    def _insert_models(self) -> str:
        columns = (
            "sha256, path, name, type, base, size_bytes, mtime_ns, created_at, updated_at, meta"
        )
        if not self.postgresql:
            # No ON CONFLICT and no RETURNING (sqlite3's executemany takes neither): the
            # write lock is held since BEGIN and the models were looked up under it, so
            # nobody can have inserted them meanwhile.
            values = ", ".join(f":{c}" for c in columns.split(", "))
            return f"INSERT INTO models ({columns}) VALUES ({values})"
        # One statement for the whole batch; a model another host committed meanwhile
        # is skipped (PostgreSQL waits for its commit) and settled by the caller.
        arrays = ", ".join(
            f"CAST(:{column} AS {kind}[])"
            for column, kind in (
                ("sha256", "text"),
                ("path", "text"),
                ("name", "text"),
                ("type", "text"),
                ("base", "text"),
                ("size_bytes", "bigint"),
                ("mtime_ns", "bigint"),
                ("created_at", "timestamptz"),
                ("updated_at", "timestamptz"),
                ("meta", "json"),
            )
        )
        return (
            f"INSERT INTO models ({columns}) SELECT * FROM unnest({arrays}) "
            "ON CONFLICT DO NOTHING RETURNING sha256"
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

    read_time = staticmethod(as_utc)  # a stored time back as an aware UTC datetime

    def json(self, value: Any) -> Any:
        return json.dumps(value)

    def read_json(self, value: Any) -> Any:
        """psycopg decodes JSON itself; sqlite3 hands back the text."""
        return json.loads(value) if isinstance(value, str) else value

    def model_rows(self, rows: list[dict[str, Any]]) -> Any:
        """The parameters of ``insert_models`` for ``rows`` (one dict of values per model).

        The rows' dicts are converted in place: the caller builds them for this alone.
        Times are converted once per distinct value (a batch shares its ``updated_at``).
        """
        converted: dict[datetime, Any] = {}

        def time(value: datetime) -> Any:
            text = converted.get(value)
            if text is None:
                text = converted[value] = self.time(value)
            return text

        for row in rows:
            row["created_at"] = time(row["created_at"])
            row["updated_at"] = time(row["updated_at"])
            row["meta"] = self.json(row["meta"])
        if not self.postgresql:
            return rows
        return {column: [row[column] for row in rows] for column in rows[0]}

    def insert_links_run(self, conn: Connection, links: list[tuple[str, int]]) -> None:
        """Link models to tags (a link that exists is left as it is)."""
        if not links:
            return
        if self.postgresql:
            shas, tag_ids = zip(*links, strict=True)
            conn.exec_driver_sql(self.insert_links, {"sha256": list(shas), "tag_id": list(tag_ids)})
            return
        rows = [{"sha256": sha, "tag_id": tag_id} for sha, tag_id in links]
        conn.exec_driver_sql(self.insert_links, rows)

    def insert_models_run(self, conn: Connection, rows: list[dict[str, Any]]) -> set[str]:
        """Insert the models; returns the sha256 of those inserted (all of them on SQLite)."""
        if not rows:
            return set()
        params = self.model_rows(rows)
        if self.postgresql:
            return set(conn.exec_driver_sql(self.insert_models, params).scalars())
        conn.exec_driver_sql(self.insert_models, params)
        return {row["sha256"] for row in rows}


@functools.cache
def batch_sql(postgresql: bool) -> BatchSQL:
    return BatchSQL(postgresql)
