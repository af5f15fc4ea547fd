"""Every statement a worker runs on ``pending_import`` and the catalog's hot path,
as SQL text for the driver, built once per backend (``statements_for``).

One lease guard (``held``): every change to a claimed row says "still claimed
by me and the lease has not run out", and its row count says whether the
change happened; a worker that lost its lease can never finish, fail or hand
back a row that is no longer its own. On PostgreSQL the guard compares
``status || ''``, an expression no index serves, so the rows are found by id:
the indexes on status keep an entry for every row that was ever claimed until
VACUUM clears them, and a plan that starts from ``status = 'claimed'`` wades
through all of them.

One clock (``clock``): on SQLite this process's (``now``, ``until`` = now +
lease, ``retry_at`` = now + back-off, as the naive UTC text ``UTCDateTime``
stores); on PostgreSQL the server's ``now()``, so only the intervals are passed
and hosts with skewed clocks agree on leases.

The model columns and the claimed columns come from the ORM tables
(``db/models.py``): a new column is an edit there and in a revision.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import fields
from datetime import datetime, timedelta, timezone
from typing import Any, cast

from sqlalchemy import JSON, Column, Connection, DateTime, Integer, Table

from modelvault.db.models import Model, PendingImport
from modelvault.db.types import utc_text
from modelvault.queue import states
from modelvault.queue.driver import Driver, member_of, placeholders
from modelvault.queue.rows import ClaimedRow

__all__ = ["CLAIMED_COLUMNS", "MODEL_COLUMNS", "Statements", "assignments", "statements_for"]

MODELS = cast(Table, Model.__table__)
PENDING_TABLE = cast(Table, PendingImport.__table__)

# Every column of a model, in the table's order: the values a new model is inserted with.
MODEL_COLUMNS = tuple(column.name for column in MODELS.columns)
# The columns of a staging row a worker needs (``rows.ClaimedRow`` has one field each).
CLAIMED_COLUMNS = tuple(field.name for field in fields(ClaimedRow))
assert set(CLAIMED_COLUMNS) <= set(PENDING_TABLE.c.keys())


def _literal(value: Any) -> str:
    if value is None:
        return "NULL"
    if isinstance(value, int):
        return str(value)
    return "'" + str(value).replace("'", "''") + "'"


def assignments(values: Mapping[str, Any]) -> str:
    """A SET list of fixed values (e.g. ``states.BACK_TO_PENDING``)."""
    return ", ".join(f"{column} = {_literal(value)}" for column, value in values.items())


class Statements(Driver):
    """The queue's statements for one backend, and the conversion of their values."""

    def __init__(self, postgresql: bool) -> None:
        super().__init__(postgresql)
        now = "now()" if postgresql else ":now"
        until = "now() + :lease" if postgresql else ":until"
        retry_at = "now() + :delay" if postgresql else ":retry_at"
        status = "status || ''" if postgresql else "status"  # by id, not by status: see above
        ids = member_of("id", "ids", postgresql, "integer")
        mine = f"{ids} AND {status} = '{states.CLAIMED}' AND claimed_by = :owner"
        self.held = f"{mine} AND lease_expires_at > {now}"
        closed = "claimed_by = NULL, lease_expires_at = NULL"
        back = assignments(states.BACK_TO_PENDING)
        failed = "status = :new_status, attempts = :new_attempts, last_error = :new_error"
        meta = "CAST(:new_meta AS json)" if postgresql else ":new_meta"
        text = functools.partial(placeholders, postgresql=postgresql)
        self.candidates = text(self._candidates(now))
        self.claim = text(
            f"UPDATE pending_import SET status = '{states.CLAIMED}', claimed_by = :owner, "
            f"lease_expires_at = {until} WHERE {ids} RETURNING {self._claimed_columns()}"
        )
        lock = " FOR UPDATE" if postgresql else ""  # SQLite: the write lock is held from BEGIN
        self.lock_held = text(f"SELECT id FROM pending_import WHERE {self.held}{lock}")
        self.delete_held = text(f"DELETE FROM pending_import WHERE {self.held}")
        self.renew = text(
            f"UPDATE pending_import SET lease_expires_at = {until} WHERE {self.held} RETURNING id"
        )
        # An expired lease nobody took over yet is still handed back: no time in the guard.
        self.release = text(f"UPDATE pending_import SET {back} WHERE {mine} RETURNING id")
        self.close_held = text(
            "UPDATE pending_import SET status = :new_status, sha256 = :new_sha256, "
            f"last_error = :new_error, size_bytes = :new_size, meta = {meta}, "
            f"not_before = NULL, {closed} WHERE {self.held}"
        )
        self.fail = text(
            f"UPDATE pending_import SET {failed}, not_before = NULL, {closed} WHERE {self.held}"
        )
        self.retry = text(
            f"UPDATE pending_import SET {failed}, not_before = {retry_at}, "
            f"{closed} WHERE {self.held}"
        )
        self.claimed_owners = text(
            "SELECT DISTINCT claimed_by FROM pending_import WHERE "
            f"status = '{states.CLAIMED}' AND claimed_by LIKE :prefix ESCAPE '/'"
        )
        owners = member_of("claimed_by", "owners", postgresql)
        self.take_over = text(
            f"UPDATE pending_import SET {back} WHERE status = '{states.CLAIMED}' AND {owners}"
        )
        statuses = member_of("status", "statuses", postgresql)
        self.retry_final = text(
            f"UPDATE pending_import SET {assignments(states.RETRIED_BY_PERSON)} WHERE {statuses}"
        )
        self.queue_state = self._queue_state()
        self.analyze = "ANALYZE pending_import"  # PostgreSQL: the planner's statistics
        self._catalog_writes()

    def _catalog_writes(self) -> None:
        """The hot path's writes to the catalog: new models and their links."""
        text = functools.partial(placeholders, postgresql=self.postgresql)
        self.insert_models = text(self._insert_models())
        self.known = text(self._known())
        self.last_rowid = "SELECT max(rowid) FROM models"  # SQLite
        self.inserted_since = "SELECT path FROM models WHERE rowid > :last"  # SQLite
        self.insert_links = text(
            "INSERT INTO model_tags (model_sha256, tag_id) "
            + (
                "SELECT v ->> 0, CAST(v ->> 1 AS integer) FROM "
                "json_array_elements(CAST(:links AS json)) WITH ORDINALITY AS e(v, n) ORDER BY n"
                if self.postgresql
                else "VALUES (?, ?)"
            )
            + " ON CONFLICT DO NOTHING"
        )

    def _claimed_columns(self) -> str:
        """SQLite: ``json(meta)``, text checked by SQLite (see ``rows.read_meta``)."""
        meta = "meta" if self.postgresql else "json(meta)"
        return ", ".join(meta if name == "meta" else name for name in CLAIMED_COLUMNS)

    def _candidates(self, now: str) -> str:
        """The oldest claimable rows: pending and out of back-off, or claimed by a lease that
        ran out."""
        pending, claimed = states.PENDING, states.CLAIMED
        if self.postgresql:
            return (
                "SELECT id, size_bytes FROM pending_import WHERE "
                f"(status = '{pending}' AND (not_before IS NULL OR not_before <= {now})) "
                f"OR (status = '{claimed}' AND (lease_expires_at IS NULL "
                f"OR lease_expires_at <= {now})) "
                "ORDER BY id LIMIT :limit FOR UPDATE SKIP LOCKED"
            )
        # Three ordered index ranges instead of one OR, which SQLite would sort in full.
        parts = [
            f"status = '{pending}' AND not_before IS NULL",
            f"status = '{pending}' AND not_before <= {now}",
            f"status = '{claimed}' AND (lease_expires_at IS NULL OR lease_expires_at <= {now})",
        ]
        members = " UNION ALL ".join(
            "SELECT * FROM (SELECT id, size_bytes FROM pending_import "
            f"WHERE {part} ORDER BY id LIMIT :limit)"
            for part in parts
        )
        return f"SELECT id, size_bytes FROM ({members}) ORDER BY id LIMIT :limit"

    def _queue_state(self) -> str:
        """Unfinished rows, ready ones, the first retry and lease expiry, rows in back-off,
        and the clock they are compared with (PostgreSQL: the server's)."""
        pending, claimed = states.PENDING, states.CLAIMED
        clock = ", now()" if self.postgresql else ""
        return (
            "SELECT count(*), "
            f"count(*) FILTER (WHERE status = '{pending}' AND not_before IS NULL), "
            f"min(not_before) FILTER (WHERE status = '{pending}'), "
            f"min(lease_expires_at) FILTER (WHERE status = '{claimed}'), "
            f"count(*) FILTER (WHERE status = '{pending}' AND not_before IS NOT NULL){clock} "
            f"FROM pending_import WHERE status IN ('{pending}', '{claimed}')"
        )

    def _insert_models(self) -> str:
        """Insert models.

        PostgreSQL: the models of ``:rows``, a JSON array of ``MODEL_COLUMNS``
        arrays, in its order, in one statement with one parameter (an array per
        column costs more to send than the insert takes); a model whose sha256 or
        path key the catalog holds already, or that another host committed meanwhile
        (PostgreSQL waits for its commit), is skipped, and the paths returned
        tell which files were new. SQLite: one row of ``MODEL_COLUMNS`` values,
        for ``executemany`` (which takes no RETURNING), skipped if its sha256 or path
        key is taken (see ``finish.insert_models``).
        """
        columns = ", ".join(MODEL_COLUMNS)
        if not self.postgresql:
            marks = ", ".join("?" * len(MODEL_COLUMNS))
            return f"INSERT INTO models ({columns}) VALUES ({marks}) ON CONFLICT DO NOTHING"
        values = ", ".join(_json_element(i, column) for i, column in enumerate(MODELS.columns))
        return (
            f"INSERT INTO models ({columns}) SELECT {values} FROM "
            "json_array_elements(CAST(:rows AS json)) WITH ORDINALITY AS e(v, n) ORDER BY n "
            "ON CONFLICT DO NOTHING RETURNING path"
        )

    def _known(self) -> str:
        """sha256 and path key of the models holding any of ``shas``, ``paths`` or
        ``keys`` (their stored ones) (SQLite)."""
        # Three index lookups: with an OR, SQLite cannot use every index.
        found = "SELECT sha256, coalesce(path_key, path) FROM models WHERE"
        return " UNION ALL ".join(
            f"{found} {member_of(column, param, self.postgresql)}"
            for column, param in (("sha256", "shas"), ("path", "paths"), ("path_key", "keys"))
        )

    # -- values ---------------------------------------------------------------

    def clock(self, lease_seconds: float = 0.0, delay_seconds: float = 0.0) -> dict[str, Any]:
        """The clock's parameters: ``now``, ``until`` = now + lease, ``retry_at`` = now +
        delay (SQLite: this process's clock; PostgreSQL: the server's, so only the
        intervals are passed)."""
        if self.postgresql:
            return {
                "lease": timedelta(seconds=lease_seconds),
                "delay": timedelta(seconds=delay_seconds),
            }
        now = datetime.now(timezone.utc)
        return {
            "now": utc_text(now),
            "until": utc_text(now + timedelta(seconds=lease_seconds)),
            "retry_at": utc_text(now + timedelta(seconds=delay_seconds)),
        }

    def json_time(self, value: datetime) -> str | None:
        """A time as ``insert_models`` takes it in its JSON: ISO text, naive UTC on SQLite."""
        return value.isoformat() if self.postgresql else _stored_time_text(value)


def _json_element(index: int, column: Column[Any]) -> str:
    """PostgreSQL: element ``index`` of the JSON array ``v`` as ``column``'s value."""
    affinity = column.type._type_affinity
    if affinity is not None and issubclass(affinity, JSON):
        return f"v -> {index}"
    kinds: list[tuple[type[Any], str]] = [(Integer, "bigint"), (DateTime, "timestamptz")]
    kind = next((k for t, k in kinds if affinity is not None and issubclass(affinity, t)), "text")
    return f"CAST(v ->> {index} AS {kind})"


_stored_time_text = functools.lru_cache(maxsize=1024)(utc_text)


@functools.cache
def _statements(postgresql: bool) -> Statements:
    return Statements(postgresql)


def statements_for(conn: Connection) -> Statements:
    """The statements of ``conn``'s backend (built once)."""
    return _statements(conn.dialect.name == "postgresql")
