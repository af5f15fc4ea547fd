"""The catalogued models whose files a scan did not find where the catalog says.

Moves first, then what is missing: a gone model whose content has an unchanged
copy (a ``duplicate`` row) moves to it at once; one whose size matches a file
waiting to be hashed may have moved there (``maybe_moved``, settled by
``settle_after_hashing`` once the workers hashed it); the rest is reported
missing, never deleted.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import aliased

from modelvault.catalog.settle import HashedFile, Outcome, settle_file
from modelvault.catalog.stamp_meta import (
    SCAN_MTIME_NS,
    SCAN_SOURCE,
    staged_file_stat,
    without_scan_stat,
)
from modelvault.database import DatabaseManager
from modelvault.db.batches import chunked
from modelvault.db.keyed import same_file, same_key
from modelvault.db.models import Model, PendingImport
from modelvault.file_stamp import Verdict
from modelvault.queue.states import WAITING
from modelvault.scan.compare import DUPLICATE, GoneModel
from modelvault.scan.report import FileChange, ScanReport, shown
from modelvault.scan.stamps import verdict
from modelvault.scan.walk import FoundFile
from modelvault.scan.writer import Changes, ScanWriter


def settle_gone(
    db: DatabaseManager, gone: list[GoneModel], writer: ScanWriter, policy: str
) -> None:
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
