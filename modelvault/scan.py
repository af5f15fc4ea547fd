"""Keep the catalog true: walk model folders, stage what is new or changed.

A scan never reads a file's content. It lists the folders (``os.scandir``, one
``stat`` per model file) and compares each file's path and stamp (size, mtime,
inode change time and inode: ``modelvault.file_stamp``) with what the catalog
holds: a model, or a row already staged. A file that matches is left alone (a
record of an older version, with size and mtime only, takes the rest of the
stamp the file has now); a new or changed file is staged in ``pending_import``
(``source`` = ``scan``, type from its folder), and the workers hash it and
settle it by the catalog's rules (``modelvault.catalog.settle_file``): a moved
or renamed file keeps its tags and notes, a file overwritten in place keeps its
model.
Catalogued files that are gone are reported, never deleted; where a copy of
their content was found before (a ``duplicate`` row) and is unchanged since,
the model moves to it at once.

Paths are compared by their identity keys (``modelvault.pathkey``): on Windows,
a file the catalog knows as ``c:\\ComfyUI\\models\\x.ckpt`` is the file the walk
finds at ``C:\\ComfyUI\\models\\x.ckpt`` (nothing is read again). A file whose
name, or a folder's below the scan's root, changed case only is the same file
renamed: its model moves to the new name (``moved``), nothing is read.

Memory stays flat as the tree grows: the walk yields files in the order of
their keys (each folder listed and sorted on its own), and the catalog rows
under the same root are streamed in that same order (the key's index), so the
two are compared like two sorted lists being merged; no table of the whole tree
is held.

Where the folders come from is ``modelvault.scan_sources``; the walk itself is
``modelvault.scan_walk``; the report ``modelvault.scan_report``.
"""

from __future__ import annotations

import itertools
import os
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any, NamedTuple, cast

from sqlalchemy import Connection, Table, bindparam, select, update
from sqlalchemy.orm import Session, aliased

from modelvault.catalog.records import ModelRecord
from modelvault.catalog.settle import HashedFile, Outcome, move_model, settle_file
from modelvault.catalog.stamp_meta import (
    SCAN_MTIME_NS,
    SCAN_SOURCE,
    staged_file_stat,
    with_file_stat,
    without_scan_stat,
)
from modelvault.database import DatabaseManager
from modelvault.db.batches import chunked, insert_ignoring_duplicates
from modelvault.db.engine import no_idle_limit
from modelvault.db.keyed import key_range, same_file, same_key
from modelvault.db.models import Model, PendingImport, PendingStatus
from modelvault.db.types import utcnow
from modelvault.file_stamp import FileStamp, Verdict, moved_intact, stat_marks
from modelvault.normalize import MAX_TYPE
from modelvault.pathkey import is_own_key, renamed_below, stored_key
from modelvault.scan_report import FileChange, ScanReport, shown
from modelvault.scan_sources import (
    ScanRoot,
    checked_roots,
    comfyui_roots,
    folder_problem,
    parse_extra_model_paths,
    resolve_roots,
)
from modelvault.scan_stamps import (
    WAITING,
    as_number,
    column_verdict,
    restamp_rows,
    staged_meta,
    stamp_columns,
    stamp_models,
    verdict,
)
from modelvault.scan_walk import MODEL_EXTENSIONS, FolderKey, FoundFile, RootWalk, folder_key

__all__ = [
    "MODEL_EXTENSIONS",
    "FileChange",
    "ScanReport",
    "ScanRoot",
    "checked_roots",
    "comfyui_roots",
    "find_missing",
    "parse_extra_model_paths",
    "resolve_roots",
    "scan_roots",
    "settle_after_hashing",
    "shown",
]

# Staging rows written per transaction, and files between two progress calls.
WRITE_BATCH = 500
# Catalog rows fetched per round trip while streaming.
STREAM_BATCH = 1000

PENDING_TABLE = cast(Table, PendingImport.__table__)
# WAITING (scan_stamps): rows that wait for a worker already; the scan leaves them alone.
DUPLICATE = PendingStatus.DUPLICATE.value

Progress = Callable[[int], None]
Changes = Callable[[FileChange], None]


class GoneModel(NamedTuple):
    """A catalogued model the walk passed by: its file is not where the catalog says."""

    path: str
    size_bytes: int | None
    sha256: str = ""  # looked up once the walk is over (the walk streams no hashes)


# -- comparing with the catalog ------------------------------------------------


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


class _Writer:
    """Staging writes, committed in batches (each batch is whole or absent); in a
    dry run, only counted."""

    def __init__(
        self,
        db: DatabaseManager,
        report: ScanReport,
        progress: Progress | None,
        on_change: Changes | None,
    ) -> None:
        self.db = db
        self.report = report
        self.progress = progress
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
                "status": PendingStatus.PENDING.value,
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
        status=PendingStatus.PENDING.value,
        size_bytes=bindparam("size"),
        meta=bindparam("new_meta"),
        attempts=0,
        last_error=None,
        not_before=None,
        sha256=None,
    )
)


def scan_roots(
    db: DatabaseManager,
    roots: Iterable[ScanRoot | str | os.PathLike[str]],
    *,
    progress: Progress | None = None,
    on_change: Changes | None = None,
    dry_run: bool = False,
    policy: str = "merge",
) -> ScanReport:
    """Walk ``roots`` and stage every model file that is new or changed.

    Reads no file's content: a file whose path and stamp (size, mtime, inode
    change time, inode) match its model (or its staging row) is left alone.
    Returns what was found; run the workers (``process_pending``,
    ``MigrationManager.start_scan``) to hash what was staged, then
    ``settle_after_hashing`` to count the moves they settled.

    ``on_change`` is called once per file that changed (``FileChange``: new,
    changed, moved, missing, skipped). ``dry_run`` writes nothing: the report
    says what a scan would stage and move. ``policy`` combines the notes of a
    model that moves to a copy of its content (``merge``, ``keep``, ``replace``).

    ``progress(files_seen)`` is called after each batch of writes (it may raise
    to stop the scan: what was written so far is committed, and a scan run
    again continues from there). Raises ``ScanError`` if a root given by name
    is not a folder, before anything is written; a listed folder (``origin``)
    that is not there is skipped with a note in ``report.skipped``.
    """
    chosen = checked_roots(roots)
    report = ScanReport(roots=[os.path.abspath(r.path) for r in chosen], dry_run=dry_run)
    started = time.monotonic()
    writer = _Writer(db, report, progress, on_change)
    visited: set[FolderKey] = set()
    keys = _root_keys(chosen)
    gone: list[GoneModel] = []
    for root in chosen:
        others = {key: path for key, path in keys.items() if path != root.path}
        walk = RootWalk(report, visited, others, on_change)
        if root.origin is not None and _listed_folder_missing(root, walk):
            continue
        gone += _scan_root(db, root, walk, writer)
    writer.flush()
    _settle_gone(db, gone, writer, policy)
    report.seconds = time.monotonic() - started
    return report


def _root_keys(roots: list[ScanRoot]) -> dict[FolderKey, str]:
    """The folders that are roots of this scan (those that can be looked at)."""
    keys: dict[FolderKey, str] = {}
    for root in roots:
        try:
            keys.setdefault(folder_key(os.path.abspath(root.path)), root.path)
        except OSError:
            continue  # the walk says why
    return keys


def _listed_folder_missing(root: ScanRoot, walk: RootWalk) -> bool:
    """A folder a file listed that is not there: skipped with a note (the scan goes on)."""
    problem = folder_problem(root.path)
    if problem is not None:
        walk.skip_folder(os.path.abspath(root.path), f"{problem} (listed in {root.origin})")
    return problem is not None


def _scan_root(
    db: DatabaseManager, root: ScanRoot, walk: RootWalk, writer: _Writer
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


def _skipped(found: FoundFile, writer: _Writer) -> None:
    report = writer.report
    report.files_skipped += 1
    report.note(report.skipped_files, f"{found.path}: {found.skip}")
    writer.changed("skipped", found.path, why=found.skip)


def _compare(
    found: FoundFile,
    model: Any,
    row: Any,
    writer: _Writer,
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


# -- the models whose files are gone --------------------------------------------


def _settle_gone(db: DatabaseManager, gone: list[GoneModel], writer: _Writer, policy: str) -> None:
    """Moves first, then what is missing: a gone model whose content has an unchanged
    copy (a ``duplicate`` row) moves to it; one whose size matches a file waiting
    to be hashed may have moved there; the rest is missing."""
    report = writer.report
    for paths in chunked(gone):
        chunk = _with_hashes(db, paths)
        copies = _unchanged_copies(db, chunk)
        waiting = _waiting_sizes(db, chunk) | writer.sizes_not_written
        for model in chunk:
            copy = copies.get(model.sha256)
            if copy is not None and (report.dry_run or _take_over(db, model, copy, policy)):
                report.moved += 1
                report.note(report.moved_paths, f"{model.path} -> {copy.path}")
                writer.changed("moved", model.path, to=copy.path)
                continue
            maybe = model.size_bytes is not None and model.size_bytes in waiting
            report.unsettled.append((model.sha256, model.path, maybe))
            if maybe:
                report.maybe_moved += 1
                why = "a file of its size waits to be hashed: it may have moved there"
            else:
                report.missing += 1
                report.note(report.missing_paths, model.path)
                why = None
            writer.changed("missing", model.path, why=why)


def _with_hashes(db: DatabaseManager, gone: Iterable[GoneModel]) -> list[GoneModel]:
    """The gone models with their sha256 (those deleted meanwhile are left out)."""
    paths = [model.path for model in gone]
    query = select(Model.path, Model.sha256).where(Model.path.in_(paths))
    with db.translate_errors(), db.engine.connect() as conn:
        shas: dict[str, str] = dict(conn.execute(query).all())
    return [model._replace(sha256=shas[model.path]) for model in gone if model.path in shas]


def _unchanged_copies(db: DatabaseManager, models: Iterable[GoneModel]) -> dict[str, Any]:
    """For each gone model, the first ``duplicate`` row of its content whose file is
    still there as it was when it was hashed, at a path no model holds."""
    holder = aliased(Model)
    query = (
        select(PendingImport.id, PendingImport.path, PendingImport.sha256, PendingImport.meta)
        .add_columns(PendingImport.size_bytes)
        .outerjoin(holder, same_key(holder, PendingImport))
        .where(
            PendingImport.status == DUPLICATE,
            PendingImport.sha256.in_([m.sha256 for m in models]),
            holder.sha256.is_(None),
        )
        .order_by(PendingImport.id)
    )
    copies: dict[str, Any] = {}
    with db.translate_errors(), db.engine.connect() as conn:
        rows = conn.execute(query).all()
    for row in rows:
        if row.sha256 not in copies and _as_recorded(row.path, row.size_bytes, row.meta):
            copies[row.sha256] = row
    return copies


def _as_recorded(path: str, size: int | None, meta: Any) -> bool:
    """Whether the file at ``path`` is still the one hashed: a regular file with the
    recorded stamp (nothing is read)."""
    try:
        st = os.stat(path)
    except OSError:
        return False
    mtime = (meta or {}).get(SCAN_MTIME_NS) if isinstance(meta, dict) else None
    found = FoundFile.of(path, st, "")
    return os.path.isfile(path) and verdict(size, mtime, meta, found) is not Verdict.CHANGED


def _waiting_sizes(db: DatabaseManager, models: Iterable[GoneModel]) -> set[int]:
    sizes = sorted({m.size_bytes for m in models if m.size_bytes is not None})
    if not sizes:
        return set()
    query = select(PendingImport.size_bytes).where(
        PendingImport.status.in_(sorted(WAITING)), PendingImport.size_bytes.in_(sizes)
    )
    with db.translate_errors(), db.engine.connect() as conn:
        return {size for size in conn.execute(query.distinct()).scalars() if size is not None}


def _take_over(db: DatabaseManager, gone: GoneModel, copy: Any, policy: str) -> bool:
    """Move the model to its unchanged copy, in one transaction; False if anything
    changed meanwhile (the copy was claimed, the model moved, its file came back)."""
    with db.session_scope(immediate=True) as session:
        row = session.get(PendingImport, copy.id, with_for_update=True)
        model = session.get(Model, gone.sha256)
        if (
            row is None
            or row.status != DUPLICATE
            or row.sha256 != gone.sha256
            or model is None
            or model.path != gone.path
            or os.path.lexists(gone.path)
            or session.scalar(select(Model.sha256).where(same_file(Model, row.path))) is not None
        ):
            return False
        meta = dict(row.meta or {})
        item = HashedFile(
            sha256=gone.sha256,
            path=row.path,
            name=row.name,
            type=row.type,
            base=row.base,
            size_bytes=row.size_bytes,
            mtime_ns=meta.get(SCAN_MTIME_NS),
            created_at=row.created_at,
            meta=without_scan_stat(meta),
            source=SCAN_SOURCE,  # its stat is fresh: the model takes its stamp
            file_stat=staged_file_stat(meta),
        )  # (its tags were linked when it was found to be a copy)
        settled = settle_file(session, item, policy=policy, path_is_live=os.path.lexists)
        if settled.outcome is not Outcome.MOVED:  # cannot happen after the checks above
            raise AssertionError(f"a copy's take-over settled as {settled.outcome}")
        session.delete(row)
    return True


def settle_after_hashing(
    db: DatabaseManager, report: ScanReport, on_change: Changes | None = None
) -> None:
    """After the workers hashed what a scan staged: the gone models that moved to a
    staged file count as ``moved``, the rest as ``missing`` (``maybe_moved`` is 0)."""
    unsettled, report.unsettled = report.unsettled, []
    for chunk in chunked(unsettled):
        shas = [sha for sha, _, _ in chunk]
        query = select(Model.sha256, Model.path).where(Model.sha256.in_(shas))
        with db.translate_errors(), db.engine.connect() as conn:
            paths: dict[str, str] = dict(conn.execute(query).all())
        for sha, old, maybe in chunk:
            new = paths.get(sha)
            if maybe:
                report.maybe_moved -= 1
            if new is not None and new != old:
                if not maybe:
                    report.missing -= 1
                    if shown(old) in report.missing_paths:
                        report.missing_paths.remove(shown(old))
                report.moved += 1
                report.note(report.moved_paths, f"{old} -> {new}")
                if on_change is not None:
                    on_change(FileChange("moved", old, to=new))
            elif maybe:
                report.missing += 1
                report.note(report.missing_paths, old)
                if on_change is not None:
                    on_change(FileChange("missing", old))


def find_missing(
    db: DatabaseManager,
    roots: Iterable[str | os.PathLike[str]] = (),
    *,
    limit: int | None = None,
) -> list[ModelRecord]:
    """Catalogued models whose file is gone (``models --missing``), by name then path.

    Only models under ``roots`` if any are given. Looks at each file's
    existence (no content is read); nothing is deleted.
    """
    return db.find_models(missing=True, under=roots, limit=limit)
