"""One root's walk compared with the catalog, file by file.

The walk yields files in the order of their keys, and the catalog's models and
staging rows under the same root are streamed in that same order (the key's
index), so the three are compared like sorted lists being merged: memory stays
flat as the tree grows. Each file found is left alone, staged, queued again,
renamed or restamped (through ``ScanWriter``); the models the walk passed by
are returned, to be settled once every root is walked (``modelvault.scan.gone``).
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Callable, Iterator
from typing import Any, NamedTuple

from sqlalchemy import Connection, select

from modelvault.catalog.stamp_meta import SCAN_MTIME_NS
from modelvault.database import DatabaseManager
from modelvault.db.engine import no_idle_limit
from modelvault.db.keyed import key_range
from modelvault.db.models import Model, PendingImport, PendingStatus
from modelvault.file_stamp import FileStamp, Verdict, moved_intact
from modelvault.pathkey import is_own_key, renamed_below
from modelvault.queue.states import WAITING
from modelvault.scan.sources import ScanRoot, folder_problem
from modelvault.scan.stamps import as_number, column_verdict, stamp_columns, verdict
from modelvault.scan.walk import FolderKey, FoundFile, RootWalk, folder_key
from modelvault.scan.writer import ScanWriter

# Catalog rows fetched per round trip while streaming.
STREAM_BATCH = 1000

# WAITING (stamps): rows that wait for a worker already; the scan leaves them alone.
DUPLICATE = PendingStatus.DUPLICATE.value


class GoneModel(NamedTuple):
    """A catalogued model the walk passed by: its file is not where the catalog says."""

    path: str
    size_bytes: int | None
    sha256: str = ""  # looked up once the walk is over (the walk streams no hashes)


class _Sorted:
    """Catalog rows under one folder, streamed in key order, with a look-ahead.

    Each row is a tuple whose first item is the path's key.
    """

    def __init__(self, rows: Iterator[Any]) -> None:
        self.rows = rows
        self.head: Any = next(rows, None)

    def take(self, key: str | None, passed: Callable[[Any], None] | None = None) -> Any:
        """The row with exactly ``key`` (consumed, with any other of that key: other
        spellings of one staged file, left to the workers), or None; the rows that
        sort before it are consumed and handed to ``passed`` (all of them if ``key``
        is None)."""
        head = self.head
        while head is not None and (key is None or head[0] < key):
            if passed is not None:
                passed(head)
            head = next(self.rows, None)
        if head is not None and head[0] == key:
            found = head
            while head is not None and head[0] == key:
                head = next(self.rows, None)
            self.head = head
            return found
        self.head = head
        return None


def _under(conn: Connection, entity: Any, top: str, *columns: Any) -> _Sorted:
    """``entity``'s rows under ``top`` in key order, each its key (``key``) and
    ``columns``: a range of the index of the column that holds their keys (keys
    compare as code points on both backends). Staging rows come with the model
    of their content (``model_sha256``: the model a duplicate row is a copy of)."""
    key, in_top = key_range(entity, top, conn.dialect)
    query = select(key.label("key"), *columns).where(in_top)
    if entity is PendingImport:
        query = query.outerjoin(Model, Model.sha256 == PendingImport.sha256)
    query = query.order_by(key).execution_options(yield_per=STREAM_BATCH)
    return _Sorted(itertools.chain.from_iterable(conn.execute(query).partitions()))


def root_keys(roots: list[ScanRoot]) -> dict[FolderKey, str]:
    """The folders that are roots of this scan (those that can be looked at)."""
    keys: dict[FolderKey, str] = {}
    for root in roots:
        try:
            keys.setdefault(folder_key(os.path.abspath(root.path)), root.path)
        except OSError:
            continue  # the walk says why
    return keys


def listed_folder_missing(root: ScanRoot, walk: RootWalk) -> bool:
    """A folder a file listed that is not there: skipped with a note (the scan goes on)."""
    problem = folder_problem(root.path)
    if problem is not None:
        walk.skip_folder(os.path.abspath(root.path), f"{problem} (listed in {root.origin})")
    return problem is not None


def scan_root(
    db: DatabaseManager, root: ScanRoot, walk: RootWalk, writer: ScanWriter
) -> list[GoneModel]:
    report = walk.report
    top = os.path.abspath(root.path)
    passed: list[GoneModel] = []
    # Under a POSIX folder a model's key is its path: read once.
    own_keys = is_own_key(top)
    spelt = () if own_keys else (Model.path,)

    def path_of(model: Any) -> str:
        return str(model.key if own_keys else model.path)

    def gone(model: Any) -> None:
        if not walk.passed_unseen(model.key):
            passed.append(GoneModel(path_of(model), model.size_bytes))

    with db.translate_errors(), db.engine.connect() as conn:
        no_idle_limit(conn)  # the walk, and a pause, go on between two reads of the stream
        stamps = stamp_columns(conn.dialect.name == "postgresql")
        models = _under(conn, Model, top, *spelt, Model.size_bytes, Model.mtime_ns, *stamps)
        staged = _under(
            conn,
            PendingImport,
            top,
            PendingImport.id,
            PendingImport.size_bytes,
            PendingImport.meta,
            PendingImport.status,
            Model.sha256.label("model_sha256"),
        )
        for found in walk.files(root):
            # Staged files that are gone are passed by: the worker marks them missing.
            model, row = models.take(found.key, gone), staged.take(found.key)
            if found.skip is not None:
                _skipped(found, writer)
            else:
                report.files_seen += 1
                renamed = (
                    model is not None
                    and not own_keys
                    and model.path != found.path
                    and _renamed(found, model.path, top)
                )
                catalogued = None if model is None else path_of(model)
                _compare(found, model, row, writer, renamed, catalogued)
            writer.tick()
        models.take(None, gone)
    return passed


def _skipped(found: FoundFile, writer: ScanWriter) -> None:
    report = writer.report
    report.files_skipped += 1
    report.note(report.skipped_files, f"{found.path}: {found.skip}")
    writer.changed("skipped", found.path, why=found.skip)


def _compare(
    found: FoundFile,
    model: Any,
    row: Any,
    writer: ScanWriter,
    renamed: bool = False,
    catalogued: str | None = None,
) -> None:
    """Decide what a scan does with a file found: nothing, stage it, queue its row
    again, move its model (``renamed``), or record the rest of its stamp on the
    model at ``catalogued`` (the model's path as the catalog spells it)."""
    report = writer.report
    if row is not None:
        if row.status in WAITING:
            report.already_staged += 1
            return
        meta = row.meta or {}
        seen = verdict(row.size_bytes, meta.get(SCAN_MTIME_NS), meta, found)
        # A copy of content no model holds any more (deleted, or overwritten in
        # place while this copy was being settled) must become a model itself.
        if seen is Verdict.CHANGED or (row.status == DUPLICATE and row.model_sha256 is None):
            report.requeued += 1
            writer.again(row, found)
            return
        report.unchanged += 1
        if seen is Verdict.STAMP:
            writer.stamp_row(row, found)
    elif model is None:
        report.staged_new += 1
        writer.stage(found, "new")
    elif renamed and _intact(model, found):
        writer.rename(model.path, found)
    else:
        seen = column_verdict(model.size_bytes, model.mtime_ns, model.ctime_ns, model.ino, found)
        if seen is Verdict.CHANGED:
            report.staged_changed += 1
            writer.stage(found, "changed")
        else:
            report.unchanged += 1
            if seen is Verdict.STAMP:
                writer.stamp_model(catalogued or found.path, found)


def _intact(model: Any, found: FoundFile) -> bool:
    """Whether a model's file found under a new name is unchanged (see ``moved_intact``)."""
    recorded = FileStamp(model.size_bytes, model.mtime_ns, None, as_number(model.ino))
    return moved_intact(recorded, found.stamp)


def _renamed(found: FoundFile, catalogued: str, top: str) -> bool:
    """Whether a catalogued file found under another spelling of its path (Windows)
    was renamed: a name below the scan's root changed case (a spelling of the root
    itself, of separators or of a drive letter is the same file, unchanged)."""
    below = found.path[len(top) :].replace("\\", "/").strip("/")
    return renamed_below(catalogued, found.path, below.count("/") + 1)
