"""Stage 1 of the migration: legacy catalog -> ``models`` and ``pending_import``.

``import_legacy_data(legacy_path, db)`` runs a one-way pipeline, batch by batch
(``settings.import_batch_size`` rows, each written in one transaction):

    read     ``legacy.reader.LegacyCatalog.batches``  -> ``LegacyRow``s and their links
    convert  ``legacy.rows.RowConverter``              -> ``ImportRow``s (tags: ``legacy.tags``)
    place    ``legacy.placement.place``                -> a ``Place`` for each row
    write    ``migration.stage_one.BatchWriter``       -> models, links, staging rows

Reading and converting run in a helper thread, one batch ahead of the writer
(``read_ahead``). The rules each step keeps, and where each is enforced, are in
docs/ARCHITECTURE.md ("Stage 1: the legacy import"); ``ImportReport`` says where
every row went.
"""

from __future__ import annotations

import gc
import logging
import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, select

from modelvault.config import check_conflict_policy
from modelvault.database import DatabaseManager
from modelvault.db.engine import SQLITE_BEGIN
from modelvault.db.models import Model
from modelvault.hashing import HashControl
from modelvault.legacy.images import LegacyImages
from modelvault.legacy.layout import LegacyBatch
from modelvault.legacy.reader import LegacyCatalog, open_legacy
from modelvault.legacy.rows import ImportRow, RowConverter
from modelvault.legacy.tags import LegacyTags
from modelvault.migration.read_ahead import ReadAhead
from modelvault.migration.report import MAX_WARNINGS, ImportReport
from modelvault.migration.stage_one import BatchWriter, tune_for_bulk

log = logging.getLogger(__name__)

Progress = Callable[[int, int], None]

TAG_CHUNK = 10_000  # legacy tags registered per transaction
TAG_CACHE = 50_000  # legacy tags kept in memory between batches


def import_legacy_data(
    legacy_db_path: str | os.PathLike[str] | LegacyCatalog,
    db: DatabaseManager | None = None,
    *,
    progress: Progress | None = None,
    policy: str | None = None,
    images_dir: str | os.PathLike[str] | None = None,
    control: HashControl | None = None,
) -> ImportReport:
    """Import a legacy catalog into ``db`` (default: the configured catalog).

    ``policy`` (``merge``, ``keep`` or ``replace``; None: the catalog's
    ``settings.conflict_policy``) decides how a legacy row combines with a model
    that holds the same content (see ``catalog.combine.combine_fields``); a value not
    among those raises ``ConfigError`` before anything is read.

    The legacy file is checked first: anything that is not a legacy catalog
    raises ``LegacyDatabaseError`` before the catalog is touched (a caller that
    checked it already passes what ``legacy.reader.open_legacy`` returned instead
    of its path: it is read, and left open, without a second check). Then the
    catalog is migrated to the newest schema and the rows are imported batch by
    batch; ``progress(rows_done, rows_total)`` is called after each batch.
    ``control`` (a ``HashControl``) holds the import between batches while it
    is paused, and ends it with ``HashCancelled`` once stopped: every batch so
    far is committed, and an import run again continues from there.

    The preview images the rows name are copied from ``images_dir`` (default:
    ``images/`` beside the legacy file) into the catalog's image store, and
    listed in each row's ``meta.previews`` (see ``modelvault.legacy.images``).
    """
    if policy is not None:
        check_conflict_policy(policy)
    started = time.monotonic()
    own_db = db is None
    with _opened(legacy_db_path) as legacy:
        catalog = db if db is not None else DatabaseManager()
        try:
            report = ImportReport(legacy_path=str(legacy.path), layout=int(legacy.layout))
            notes = _RowNotes()
            images = LegacyImages.checked(
                legacy.path, images_dir, catalog.images_dir, catalog.display_url, notes
            )
            catalog.init_db()
            chosen = policy if policy is not None else catalog.settings.conflict_policy
            converter = RowConverter(legacy, images, notes)
            _Run(legacy, catalog, report, chosen, converter, notes).run(progress, control)
            report.images = images.finish()
        finally:
            if own_db:
                catalog.dispose()
    report.seconds = round(time.monotonic() - started, 3)
    _log_report(report)
    return report


def _log_report(report: ImportReport) -> None:
    log.info(
        "imported %s: %d rows read, %d imported, %d merged, %d moved, %d staged, "
        "%d duplicates, %d conflicts, %d already present, in %.1f s",
        report.legacy_path,
        report.rows_read,
        report.imported,
        report.merged,
        report.moved,
        report.staged,
        report.duplicates,
        report.conflicts,
        report.already_present,
        report.seconds,
    )


@contextmanager
def _opened(legacy: str | os.PathLike[str] | LegacyCatalog) -> Iterator[LegacyCatalog]:
    """The legacy catalog to read: opened (and closed) here when given by path."""
    if isinstance(legacy, LegacyCatalog):
        yield legacy
        return
    with open_legacy(legacy) as opened:
        yield opened


@dataclass(frozen=True)
class _Converted:
    """A legacy batch with its rows in v3 form, and what was noted about them."""

    batch: LegacyBatch
    rows: list[ImportRow]
    notes: list[tuple[Any, str]]


class _RowNotes:
    """Warnings about the rows of the batch being converted. On PostgreSQL the next
    batch is converted while this one is written, so they reach the report with
    their batch: the report lists warnings in the order the rows are read, however
    the two overlap."""

    def __init__(self) -> None:
        self.current: list[tuple[Any, str]] = []

    def __call__(self, legacy_id: Any, reason: str) -> None:
        self.current.append((legacy_id, reason))

    def take(self) -> list[tuple[Any, str]]:
        taken, self.current = self.current, []
        return taken


class _Run:
    """One import run: the pipeline's steps for one legacy file and one catalog."""

    def __init__(
        self,
        legacy: LegacyCatalog,
        db: DatabaseManager,
        report: ImportReport,
        policy: str,
        converter: RowConverter,
        notes: _RowNotes,
    ) -> None:
        self.legacy = legacy
        self.db = db
        self.report = report
        self.converter = converter
        self.notes = notes
        self.tags = LegacyTags(legacy, db, report, TAG_CACHE)
        self.writer = BatchWriter(db, self.tags, report, policy)

    def run(self, progress: Progress | None, control: HashControl | None) -> None:
        """Every batch through the pipeline. Into a catalog that holds no models yet
        the rows come in the order of their legacy hash (each batch then adds to
        one stretch of the catalog's SHA-256 indexes), else in id order (see
        docs/ARCHITECTURE.md, "Stage 1")."""
        total = self.legacy.count_models()
        with self.db.session_scope() as session:
            in_hash_order = session.execute(select(Model.sha256).limit(1)).first() is None
        self.tags.register_all(TAG_CHUNK)
        with (
            _collector_paused(),
            self._connection() as conn,
            ReadAhead(self._converted_batches(in_hash_order)) as batches,
        ):
            eager = conn.dialect.name == "postgresql"  # see ReadAhead: when the next is read
            for converted in batches:
                if eager:
                    batches.allow_next()
                read = self._tag(converted)
                if converted.rows:
                    self.writer.write(conn, converted.rows, before_commit=batches.allow_next)
                    self.report.rows_read += len(converted.rows)
                if progress is not None and read:
                    done = self.report.rows_read
                    progress(done, max(total, done))
                if control is not None:
                    control.checkpoint(f"The import of {self.legacy.path}")

    def _converted_batches(self, in_hash_order: bool) -> Iterator[_Converted]:
        """The legacy batches with their rows in v3 form (no catalog access)."""
        size = self.db.settings.import_batch_size
        convert = self.converter.convert
        for batch in self.legacy.batches(size, in_hash_order=in_hash_order):
            rows = [convert(row) for row in batch.rows]
            yield _Converted(batch, rows, self.notes.take())

    def _tag(self, converted: _Converted) -> int:
        """Give the batch's rows their tags (registering legacy tags met since) and
        report its notes; returns how many legacy rows the batch read."""
        batch = converted.batch
        links = self.tags.links_by_model(batch.rows, batch.links)
        for legacy_id, reason in converted.notes:
            self.report.warn("models", legacy_id, reason)
        for row in converted.rows:
            row.tags = self.tags.of_row(links.get(row.legacy_id, ()), row.meta["legacy"])
        read = len(batch.rows)
        batch.rows.clear()  # they live on as ImportRows: free the rest now
        batch.links.clear()
        return read

    @contextmanager
    def _connection(self) -> Iterator[Connection]:
        """The connection every batch is written on, tuned for bulk writes while it lasts."""
        with self.db.translate_errors(), self.db.engine.connect() as conn:
            conn.execution_options(**{SQLITE_BEGIN: "IMMEDIATE"})
            restore = tune_for_bulk(conn)
            try:
                yield conn
            finally:
                with suppress(conn.dialect.loaded_dbapi.Error):
                    restore()


@contextmanager
def _collector_paused() -> Iterator[None]:
    """The cyclic garbage collector off while batches are built and written: it
    would walk every object of a batch many times over, and a batch's objects
    are freed by reference counting (the few cycles a batch leaves, its session's,
    wait for the next collection). Restored, even on error."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


__all__ = ["MAX_WARNINGS", "ImportReport", "Progress", "import_legacy_data"]
