"""A scan's writes: staging rows for new and changed files, rows queued again,
models renamed, stamps recorded; committed in batches, each whole or absent.

``ScanWriter`` is the one place that writes what a scan found; ``modelvault.verify``
stages what it finds changed through it too, so both follow the same rules.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from sqlalchemy import bindparam, select, update
from sqlalchemy.orm import Session

from modelvault.catalog.settle import move_model
from modelvault.catalog.stamp_meta import SCAN_SOURCE, with_file_stat
from modelvault.database import DatabaseManager
from modelvault.db.batches import insert_ignoring_duplicates
from modelvault.db.keyed import same_file
from modelvault.db.models import Model
from modelvault.db.types import utcnow
from modelvault.file_stamp import stat_marks
from modelvault.hashing import HashControl
from modelvault.normalize import MAX_TYPE
from modelvault.pathkey import stored_key
from modelvault.queue.states import PENDING, RETRIED_BY_PERSON, WAITING
from modelvault.scan.report import FileChange, ScanReport
from modelvault.scan.stamps import PENDING_TABLE, restamp_rows, staged_meta, stamp_models
from modelvault.scan.walk import FoundFile

# Staging rows written per transaction, and files between two progress calls.
WRITE_BATCH = 500

Progress = Callable[[int], None]
Changes = Callable[[FileChange], None]


class ScanWriter:
    """Staging writes, committed in batches (each batch is whole or absent); in a
    dry run, only counted."""

    def __init__(
        self,
        db: DatabaseManager,
        report: ScanReport,
        progress: Progress | None,
        on_change: Changes | None,
        control: HashControl | None = None,
    ) -> None:
        self.db = db
        self.report = report
        self.progress = progress
        self.control = control
        self.on_change = on_change
        self.new: list[dict[str, Any]] = []
        self.requeue: list[dict[str, Any]] = []
        self.renamed: list[FoundFile] = []  # files whose names changed case
        # Records of an older version that take the rest of their file's stamp.
        self.stamp_rows: list[dict[str, Any]] = []
        self.stamp_models: list[tuple[str, FoundFile]] = []
        self.since_progress = 0
        # Sizes of what a dry run would have staged (a real run finds them staged).
        self.sizes_not_written: set[int] = set()

    def changed(self, kind: str, path: str, **details: Any) -> None:
        if self.on_change is not None:
            self.on_change(FileChange(kind, path, **details))

    def stage(self, found: FoundFile, kind: str) -> None:
        self.changed(kind, found.path)
        stamp = utcnow()
        self.new.append(
            {
                "path": found.path,
                "path_key": stored_key(found.path),
                "name": os.path.basename(found.path),
                "type": found.type if len(found.type) <= MAX_TYPE else "other",
                "size_bytes": found.size,
                "meta": staged_meta(found),
                "tags": [],
                "source": SCAN_SOURCE,
                "status": PENDING,
                "attempts": 0,
                "created_at": stamp,
            }
        )
        self._maybe_flush()

    def again(self, row: Any, found: FoundFile) -> None:
        self.changed("changed", found.path)
        meta = staged_meta(found, row.meta)
        self.requeue.append({"row_id": row.id, "size": found.size, "new_meta": meta})
        self._maybe_flush()

    def rename(self, old: str, found: FoundFile) -> None:
        """A catalogued file whose name (or a folder's) changed case only: its model
        moves to the new name, nothing is read."""
        report = self.report
        report.moved += 1
        report.note(report.moved_paths, f"{old} -> {found.path}")
        self.changed("moved", old, to=found.path)
        self.renamed.append(found)
        self._maybe_flush()

    def stamp_row(self, row: Any, found: FoundFile) -> None:
        meta = with_file_stat(row.meta or {}, stat_marks(found.stamp))
        self.stamp_rows.append({"row_id": row.id, "size": found.size, "new_meta": meta})
        self._maybe_flush()

    def stamp_model(self, catalogued: str, found: FoundFile) -> None:
        """The model at ``catalogued`` (its path as the catalog spells it) takes the
        rest of ``found``'s stamp."""
        self.stamp_models.append((catalogued, found))
        self._maybe_flush()

    def tick(self) -> None:
        self.since_progress += 1
        if self.since_progress >= WRITE_BATCH:
            self.flush()

    def _maybe_flush(self) -> None:
        waiting = len(self.new) + len(self.requeue) + len(self.renamed) + len(self.stamp_rows)
        if waiting + len(self.stamp_models) >= WRITE_BATCH:
            self.flush()

    def flush(self) -> None:
        if self.report.dry_run:
            self.sizes_not_written.update(r["size_bytes"] for r in self.new)
            self.sizes_not_written.update(r["size"] for r in self.requeue)
        elif self.new or self.requeue or self.renamed or self.stamp_rows or self.stamp_models:
            with self.db.session_scope(immediate=True) as session:
                insert_ignoring_duplicates(session, PENDING_TABLE, self.new)
                conn = session.connection()
                if self.requeue:
                    conn.execute(_REQUEUE, self.requeue)
                for found in self.renamed:
                    _rename(session, found)
                if self.stamp_rows:
                    restamp_rows(conn, self.stamp_rows)
                if self.stamp_models:
                    stamp_models(conn, self.stamp_models)
        self.new, self.requeue, self.renamed = [], [], []
        self.stamp_rows, self.stamp_models = [], []
        self.since_progress = 0
        if self.progress is not None:
            self.progress(self.report.files_seen)
        if self.control is not None:
            self.control.checkpoint("The scan")


def _rename(session: Session, found: FoundFile) -> None:
    """Move the model of a file whose name changed case to its new name; it takes
    the file's stamp as it is now (a rename moved its change time)."""
    model = session.scalar(select(Model).where(same_file(Model, found.path)))
    if model is not None and model.path != found.path:
        move_model(model, found.path, os.path.basename(found.path))
        model.meta = with_file_stat(model.meta, stat_marks(found.stamp))


# A row in a final status whose file changed: back in the queue, counted afresh.
# Never a row a worker holds (its status is not final).
_REQUEUE = (
    update(PENDING_TABLE)
    .where(
        PENDING_TABLE.c.id == bindparam("row_id"),
        PENDING_TABLE.c.status.not_in(sorted(WAITING)),
    )
    .values(
        **RETRIED_BY_PERSON,  # its attempts start again, as a person's retry does
        size_bytes=bindparam("size"),
        meta=bindparam("new_meta"),
        sha256=None,
    )
)
