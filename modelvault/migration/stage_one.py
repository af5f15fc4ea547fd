"""The stage-1 writer: a batch of ``ImportRow``s placed and written in one transaction.

For each row, ``legacy.placement.place`` decides where it goes from what the
catalog holds for its path and hash (``bulk.Lookups``, one look-up per batch);
new models, their links and staging rows are inserted in a few statements
(``bulk.bulk_insert``), and the rows that meet a catalogued model go through
``catalog.settle.settle_file``, the rule the worker uses too. The counts reach the
report only once the transaction committed.
"""

from __future__ import annotations

import functools
import json
import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from operator import itemgetter
from typing import Any

from sqlalchemy import Connection
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from modelvault.catalog.settle import Outcome, settle_file
from modelvault.catalog.tags import TagSpec
from modelvault.database import DatabaseManager
from modelvault.db.models import PendingStatus, model_tags
from modelvault.db.types import utcnow
from modelvault.errors import CatalogError, MigrationError
from modelvault.legacy.placement import Place, place
from modelvault.legacy.rows import ImportRow
from modelvault.legacy.tags import LegacyTags
from modelvault.migration.bulk import (
    MODELS,
    PENDING,
    BulkInsert,
    CatalogState,
    Lookups,
    bulk_insert,
)
from modelvault.migration.report import OUTCOMES, ImportReport

# The import's one logger: an app follows stage 1 under the name of its entry point.
log = logging.getLogger("modelvault.migration.importer")

# A concurrent writer (a worker on PostgreSQL) may insert the same model between
# our look-up and our insert; the batch is then read and written again, but only
# if the catalog changed meanwhile: otherwise the same write would fail again.
BATCH_ATTEMPTS = 3
SQLITE_CACHE_KIB = 16 * 1024  # the import connection's page cache (random-key indexes)

MODEL_COLUMNS: tuple[str, ...] = (
    *("sha256", "path", "name", "type", "base", "size_bytes", "mtime_ns"),
    *("created_at", "updated_at", "meta", "path_key"),
)
PENDING_COLUMNS: tuple[str, ...] = (
    *("path", "name", "type", "size_bytes", "created_at", "meta", "tags"),
    *("legacy_id", "source", "status", "attempts", "last_error", "sha256", "path_key"),
)

# The report's count of each staging status a row can get here.
_STAGED_AS = {
    PendingStatus.PENDING: "staged",
    PendingStatus.FAILED: "failed",
    PendingStatus.CONFLICT: "conflicts",
    PendingStatus.DUPLICATE: "duplicates",
}
# Where settle_file put a row that met a catalogued model: its count, or the
# staging status it gets.
_SETTLED_AS: dict[Outcome, str | PendingStatus] = {
    Outcome.IMPORTED: "imported",
    Outcome.MERGED: "merged",
    Outcome.MOVED: "moved",
    Outcome.DUPLICATE: PendingStatus.DUPLICATE,
    Outcome.CONFLICT: PendingStatus.CONFLICT,
}
# An enum's ``value`` is a property: looked up per staged row, a dict is quicker.
_STATUS_TEXT = {status: status.value for status in PendingStatus}


@dataclass(frozen=True)
class _Inserts:
    models: BulkInsert
    links: BulkInsert
    pending: BulkInsert


@dataclass
class _Batch:
    """What one batch writes, and its counts (``OUTCOMES``) and warnings."""

    source: str
    tag_ids: dict[str, int]
    now: datetime
    models: list[tuple[Any, ...]] = field(default_factory=list)
    links: list[tuple[Any, ...]] = field(default_factory=list)
    staged: list[tuple[Any, ...]] = field(default_factory=list)
    colliding: list[ImportRow] = field(default_factory=list)  # for settle_file
    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(OUTCOMES, 0))
    warnings: list[tuple[int, str]] = field(default_factory=list)
    new_hashes: set[str] = field(default_factory=set)
    # Keys of the new models' Windows paths: another spelling of one settles (a POSIX
    # path is its own key, and legacy paths are unique).
    new_keys: set[str] = field(default_factory=set)

    def new_in_batch(self, row: ImportRow) -> bool:
        """Whether an earlier row of the batch is a new model of this content or path."""
        key = row.stored_key
        return row.sha256 in self.new_hashes or (key is not None and key in self.new_keys)

    def add(self, row: ImportRow, where: Place, warning: str | None) -> None:
        if where is Place.NEW:
            self._new_model(row)
        elif where is Place.STAGE:
            self.stage(row, PendingStatus.PENDING, None, None)
        elif where is Place.PRESENT:
            self.counts["already_present"] += 1
            if warning is not None:
                self.warnings.append((row.legacy_id, warning))
        elif where is Place.SETTLE:
            self.colliding.append(row)
        elif where is Place.CONFLICT:
            self.stage(row, PendingStatus.CONFLICT, row.sha256, row.path_clash)
        else:
            self.stage(row, PendingStatus.FAILED, None, row.unusable_path)

    def _new_model(self, row: ImportRow) -> None:
        sha = row.sha256
        assert sha is not None
        self.new_hashes.add(sha)
        if row.stored_key is not None:
            self.new_keys.add(row.stored_key)
        model = (
            sha, row.path, row.name, row.type, None, row.size_bytes,
            row.mtime_ns, row.created_at, self.now, row.meta_json(), row.stored_key,
        )  # fmt: skip
        self.models.append(model)  # in MODEL_COLUMNS order
        tag_ids = self.tag_ids
        self.links += [(sha, tag_ids[spec.name]) for spec in row.tags]
        self.counts["imported"] += 1

    def stage(
        self, row: ImportRow, status: PendingStatus, sha256: str | None, reason: str | None
    ) -> None:
        """A staging row of ``status``; a status that needs a person is warned about."""
        tags = "[" + ", ".join(map(_tag_json, row.tags)) + "]"  # json.dumps's very text
        staged = (
            row.path, row.name, row.type, row.size_bytes, row.created_at, row.meta_json(),
            tags, row.legacy_id, self.source, _STATUS_TEXT[status], 0, reason, sha256,
            row.stored_key,
        )  # fmt: skip
        self.staged.append(staged)  # in PENDING_COLUMNS order
        self.counts[_STAGED_AS[status]] += 1
        if status is not PendingStatus.PENDING:
            self.warnings.append((row.legacy_id, f"{status.value}: {reason}"))


@functools.lru_cache(maxsize=4096)
def _tag_json(spec: TagSpec) -> str:
    """A tag of a staging row's ``tags``, as JSON text (a file has few distinct ones)."""
    return json.dumps(spec.to_json())


class BatchWriter:
    """Writes the batches of one import run on one connection, into ``report``."""

    def __init__(
        self, db: DatabaseManager, tags: LegacyTags, report: ImportReport, policy: str
    ) -> None:
        self.db = db
        self.tags = tags
        self.report = report
        self.source = report.legacy_path
        self.policy = policy
        self.inserts: _Inserts | None = None
        self.lookups = Lookups()

    def write(
        self, conn: Connection, rows: list[ImportRow], before_commit: Callable[[], None]
    ) -> None:
        """Write one batch in one transaction, again if a concurrent writer got in first;
        ``before_commit`` is called when only the commit is left to do.

        A unique-key violation is tried again only when the catalog changed since
        the batch was looked at (another writer got in between); otherwise the
        same write would fail the same way, and ``MigrationError`` says so at once.
        """
        for attempt in range(1, BATCH_ATTEMPTS + 1):
            known_tags = dict(self.tags.ids)
            looked_at: list[CatalogState] = []
            try:
                with (
                    self.db.translate_errors(),
                    Session(bind=conn, expire_on_commit=False) as session,
                    session.begin(),
                ):
                    batch = self._write_batch(session, rows, looked_at)
                    before_commit()
                break
            except CatalogError as exc:
                self.tags.ids = known_tags  # ids of tags created in the rolled-back transaction
                if not isinstance(exc.__cause__, IntegrityError) or not looked_at:
                    raise
                if attempt == BATCH_ATTEMPTS or self._state_now(rows) == looked_at[0]:
                    raise self._write_failed(rows, exc.__cause__) from exc.__cause__
                log.info("batch collided with a concurrent writer; reading it again (%s)", exc)
        report = self.report
        for outcome in OUTCOMES:
            setattr(report, outcome, getattr(report, outcome) + batch.counts[outcome])
        for legacy_id, reason in batch.warnings:
            report.warn("models", legacy_id, reason)

    def _state_now(self, rows: Sequence[ImportRow]) -> CatalogState:
        with self.db.session_scope() as session:
            return self.lookups.state(session, rows)

    def _write_failed(self, rows: Sequence[ImportRow], exc: IntegrityError) -> MigrationError:
        detail = str(exc.orig).strip().splitlines()[0] if exc.orig is not None else str(exc)
        return MigrationError(
            f"{len(rows)} legacy rows (ids {min(r.legacy_id for r in rows)} to "
            f"{max(r.legacy_id for r in rows)}) of {self.source} "
            f"cannot be written to the catalog at {self.db.display_url} ({detail}); the "
            "batches before them are in, and no other program changed the catalog meanwhile, "
            "so trying again would fail the same way: please report this with the legacy file."
        )

    def _write_batch(
        self, session: Session, rows: list[ImportRow], looked_at: list[CatalogState]
    ) -> _Batch:
        state = self.lookups.state(session, rows)
        looked_at.append(state)
        batch = _Batch(self.source, self.tags.ids, utcnow())
        # Looked up once: the loop runs for every row.
        held, source, add, new_in_batch = state.held, self.source, batch.add, batch.new_in_batch
        for row in rows:
            placement = place(row, held(row, new_in_batch(row)), source)
            add(row, placement.place, placement.warning)
        inserts = self._inserts(session)
        # In primary-key order: each index page is written once, not once per row.
        # New models are new in this transaction, so their links cannot exist yet.
        inserts.models.execute(session, sorted(batch.models, key=itemgetter(0)))
        inserts.links.execute(session, sorted(batch.links))
        for row in batch.colliding:
            self._settle(session, row, batch)
        inserts.pending.execute(session, batch.staged)
        return batch

    def _inserts(self, session: Session) -> _Inserts:
        if self.inserts is None:
            dialect = session.get_bind().dialect
            self.inserts = _Inserts(
                bulk_insert(MODELS, MODEL_COLUMNS, dialect, json_text=("meta",)),
                bulk_insert(model_tags, ("model_sha256", "tag_id"), dialect),
                bulk_insert(PENDING, PENDING_COLUMNS, dialect, json_text=("meta", "tags")),
            )
        return self.inserts

    def _settle(self, session: Session, row: ImportRow, batch: _Batch) -> None:
        # The model moves here only if this row's file is there and its own is gone.
        live = os.path.exists if os.path.exists(row.path) else None
        settled = settle_file(
            session, row.hashed(), policy=self.policy, path_is_live=live, tag_cache=self.tags.ids
        )
        became = _SETTLED_AS[settled.outcome]
        if isinstance(became, PendingStatus):
            batch.stage(row, became, row.sha256, settled.reason)
        else:
            batch.counts[became] += 1


def tune_for_bulk(conn: Connection) -> Callable[[], None]:
    """Settings of the import's own connection that suit bulk writes; returns
    what puts them back (the connection goes back to the pool afterwards).

    SQLite: a 16 MiB page cache, so the pages of the random-key indexes (sha256,
    model_tags) stay in memory across a batch. (PostgreSQL connections never
    prepare statements on the server: ``db.engine`` sets that for every one.)
    """
    raw: Any = conn.connection.dbapi_connection
    if conn.dialect.name == "sqlite":
        before = raw.execute("PRAGMA cache_size").fetchone()[0]
        raw.execute(f"PRAGMA cache_size = {-SQLITE_CACHE_KIB}")
        return lambda: raw.execute(f"PRAGMA cache_size = {int(before)}")
    return lambda: None


__all__ = ["MODEL_COLUMNS", "PENDING_COLUMNS", "BatchWriter", "tune_for_bulk"]
