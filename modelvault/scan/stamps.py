"""A scan's side of file stamps (``modelvault.file_stamp``): what a file found is
compared with, what a staging row records of it, and the records of an older
version that take the rest of their file's stamp (``Verdict.STAMP``).
"""

from __future__ import annotations

from typing import Any, cast

from sqlalchemy import Connection, Table, bindparam, select, update

from modelvault.catalog.stamp_meta import SCAN_MTIME_NS, with_file_stat
from modelvault.db.models import Model, PendingImport
from modelvault.file_stamp import (
    FILE_STAT,
    FileStamp,
    Verdict,
    compare,
    recorded_stamp,
    stat_marks,
)
from modelvault.queue.states import WAITING
from modelvault.scan.walk import FoundFile

PENDING_TABLE = cast(Table, PendingImport.__table__)
MODEL_TABLE = cast(Table, Model.__table__)


def verdict(recorded_size: Any, recorded_mtime_ns: Any, meta: Any, found: FoundFile) -> Verdict:
    """Whether a file is as the catalog recorded it (size and mtime, and ``meta``'s
    ``file_stat``): the one comparison that decides what a scan reads again."""
    return compare(recorded_stamp(recorded_size, recorded_mtime_ns, meta), found.stamp)


def stamp_columns(postgresql: bool) -> tuple[Any, Any]:
    """A model's recorded change time and inode as two columns (``ctime_ns``, ``ino``),
    so that a scan streams two numbers, not the model's whole meta: SQLite's
    integers (64-bit, as these are), PostgreSQL's text (its ``as_integer`` is 32-bit,
    and a cast would fail on a value edited by hand: ``column_verdict`` reads it)."""
    columns = (Model.meta[(FILE_STAT, "ctime_ns")], Model.meta[(FILE_STAT, "ino")])
    ctime, ino = (c.as_string() if postgresql else c.as_integer() for c in columns)
    return ctime.label("ctime_ns"), ino.label("ino")


def column_verdict(size: Any, mtime_ns: Any, ctime_ns: Any, ino: Any, found: FoundFile) -> Verdict:
    """``verdict`` for a model streamed with ``stamp_columns``: the same answer, in
    fewer steps where the file is unchanged (the case of nearly every file)."""
    if size != found.size or mtime_ns != found.mtime_ns:
        return Verdict.CHANGED
    if type(ctime_ns) is not int:  # (SQLite gives ints: no call in the common case)
        ctime_ns = as_number(ctime_ns)
    if type(ino) is not int:
        ino = as_number(ino)
    if ctime_ns == found.ctime_ns and ino == found.ino:
        return Verdict.SAME
    return compare(FileStamp(size, mtime_ns, ctime_ns, ino), found.stamp)


def as_number(value: Any) -> int | None:
    """A whole number as a JSON path gives it (an int, or its text); None for anything else."""
    if type(value) is int:
        return value
    if type(value) is str and value.isdigit():
        return int(value)
    return None


def staged_meta(found: FoundFile, meta: Any = None) -> dict[str, Any]:
    """A staging row's meta holding the stamp a scan found (``SCAN_MTIME_NS``, ``FILE_STAT``)."""
    base = {**(meta or {}), SCAN_MTIME_NS: found.mtime_ns}
    return with_file_stat(base, stat_marks(found.stamp))


# A row in a final status that takes the rest of its file's stamp (see Verdict.STAMP),
# if it was not queued again or changed meanwhile.
_RESTAMP = (
    update(PENDING_TABLE)
    .where(
        PENDING_TABLE.c.id == bindparam("row_id"),
        PENDING_TABLE.c.status.not_in(sorted(WAITING)),
        PENDING_TABLE.c.size_bytes == bindparam("size"),
    )
    .values(meta=bindparam("new_meta"))
)
# A model that takes the rest of its file's stamp: not an update of the model for
# anyone who reads updated_at (SET updated_at = updated_at keeps it as it was).
_STAMP_MODEL = (
    update(MODEL_TABLE)
    .where(MODEL_TABLE.c.path == bindparam("at_path"))
    .values(meta=bindparam("new_meta"), updated_at=MODEL_TABLE.c.updated_at)
)


def stamp_models(conn: Connection, found: list[tuple[str, FoundFile]]) -> None:
    """Record the change time and inode of models that were recorded without them,
    where the model still has the size and mtime the file was found with. Each
    model is named by its path as the catalog spells it."""
    by_path = dict(found)
    query = select(Model.path, Model.size_bytes, Model.mtime_ns, Model.meta).where(
        Model.path.in_(sorted(by_path))
    )
    changes = [
        {"at_path": model.path, "new_meta": with_file_stat(model.meta, stat_marks(file.stamp))}
        for model in conn.execute(query)
        if verdict(model.size_bytes, model.mtime_ns, model.meta, file := by_path[model.path])
        is Verdict.STAMP
    ]
    if changes:
        conn.execute(_STAMP_MODEL, changes)


def restamp_rows(conn: Connection, rows: list[dict[str, Any]]) -> None:
    """Write the ``stamp_row`` entries of a scan (``row_id``, ``size``, ``new_meta``)."""
    conn.execute(_RESTAMP, rows)
