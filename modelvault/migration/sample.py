"""Write legacy catalog files (LEGACY.md), quirks included.

Used by the tests, the import benchmark and the ``modelvault demo`` command.
Rows, tags and links are written exactly as given (no cleaning), so every quirk
a real legacy file can hold can be reproduced: empty, NULL, upper-case, padded,
short or junk hashes, layout-1 algorithms other than sha256, NULL names,
Windows paths, invalid ``extra_json``, colours in any spelling, links to rows
that do not exist, and a ``-wal`` file left beside the database as when the
legacy app was killed. Rows and links may be generators: they are streamed, so
a file of millions of rows needs no memory.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import shutil
import sqlite3
import tempfile
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from typing import Any

SYSTEM_TAG_NAMES = ("checkpoint", "lora", "embedding", "vae", "upscale", "ultralytics", "other")
DEFAULT_CREATED_AT_MS = 1_724_000_000_000  # 2024-08-18, when the legacy app was current

_SCHEMA = """
CREATE TABLE schema_version ( version INTEGER NOT NULL );
CREATE TABLE directories (
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  path TEXT NOT NULL UNIQUE,
  alias TEXT,
  parent_id INTEGER,
  FOREIGN KEY(parent_id) REFERENCES directories(id)
);
CREATE TABLE models (
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  path TEXT NOT NULL UNIQUE,{layout1_dir}
  name TEXT,
  type TEXT NOT NULL,
  size_bytes INTEGER,{layout1_mtime}
  hash_hex TEXT{hash_not_null},
  created_at INTEGER NOT NULL,{layout1_updated}
  meta_json TEXT,
  extra_json TEXT
);
CREATE INDEX idx_models_hash ON models(hash_hex);
CREATE INDEX idx_models_type ON models(type);
CREATE INDEX idx_models_path ON models(path);
CREATE TABLE tags (
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  name TEXT NOT NULL UNIQUE,
  color TEXT,
  created_at INTEGER
);
CREATE TABLE model_tags (
  model_id INTEGER NOT NULL,
  tag_id INTEGER NOT NULL,
  PRIMARY KEY (model_id, tag_id),
  FOREIGN KEY(model_id) REFERENCES models(id) ON DELETE CASCADE,
  FOREIGN KEY(tag_id) REFERENCES tags(id) ON DELETE CASCADE
);
"""


@dataclass(frozen=True)
class LegacyTag:
    """A row of the legacy ``tags`` table; ``color`` is stored as given (any text)."""

    id: int
    name: str
    color: str | None = None
    created_at: int | None = None  # milliseconds since the epoch


@dataclass(frozen=True)
class LegacyModel:
    """A row of the legacy ``models`` table, stored exactly as given.

    ``hash_hex`` is ``''`` for a file the legacy app never hashed; ``None`` writes
    NULL (needs ``hash_not_null=False``, as in hand-edited files). ``extra_json``
    and ``meta_json`` are raw text, so invalid JSON can be written too. The
    layout-1 fields are ignored for layout 2; ``dir_path`` defaults to the
    folder of ``path``.
    """

    id: int
    path: str
    type: str = "other"
    name: str | None = None
    size_bytes: int | None = None
    hash_hex: str | None = ""
    created_at: int = DEFAULT_CREATED_AT_MS
    meta_json: str | None = None
    extra_json: str | None = None
    dir_path: str | None = None
    mtime_ns: int | None = None
    hash_algo: str = "sha256"
    updated_at: int | None = None


@dataclass(frozen=True)
class LegacyDirectory:
    id: int
    path: str
    alias: str | None = None
    parent_id: int | None = None


def scanned(
    id: int,
    path: str | os.PathLike[str],
    type: str,
    *,
    hashed: bool = True,
    created_at: int | None = None,
    extra_json: str | None = None,
) -> LegacyModel:
    """The row the legacy scanner writes for the file at ``path`` as it is now.

    Like the legacy app: the absolute path, the file name as ``name``, its size,
    its ``mtime_ns`` (kept by layout 1), its SHA-256 when ``hashed`` (else
    ``''``), and ``created_at`` the time of the scan in milliseconds, which is
    at or after the file's last write (``created_at`` sets another time).
    """
    file = Path(path)
    stat = file.stat()
    digest = hashlib.sha256(file.read_bytes()).hexdigest() if hashed else ""
    scan_ms = scan_time_ms(stat.st_mtime_ns)
    return LegacyModel(
        id=id,
        path=str(file),
        type=type,
        name=file.name,
        size_bytes=stat.st_size,
        hash_hex=digest,
        created_at=scan_ms if created_at is None else created_at,
        extra_json=extra_json,
        mtime_ns=stat.st_mtime_ns,
        updated_at=scan_ms if created_at is None else created_at,
    )


def scan_time_ms(mtime_ns: int) -> int:
    """The earliest ``created_at`` the legacy app can give a file last written at
    ``mtime_ns``: it inserts the row after it read the file."""
    return -(-mtime_ns // 1_000_000)  # rounded up to a whole millisecond


def rescanned(row: LegacyModel) -> LegacyModel:
    """The row after the legacy app's re-scan without hashing: the file's size now,
    the old ``hash_hex`` copied over, ``created_at`` (and layout 1's ``mtime_ns``)
    unchanged, as the legacy app's re-scan does (LEGACY.md)."""
    size = Path(row.path).stat().st_size
    return dataclasses.replace(row, size_bytes=size)


def system_tags() -> list[LegacyTag]:
    """The seven tags every legacy catalog has (ids 1-7, no colour)."""
    return [LegacyTag(i, name) for i, name in enumerate(SYSTEM_TAG_NAMES, start=1)]


def write_legacy_catalog(
    path: str | os.PathLike[str],
    *,
    layout: int = 2,
    rows: Iterable[LegacyModel] = (),
    tags: Iterable[LegacyTag] | None = None,
    links: Iterable[tuple[int, int]] = (),
    directories: Iterable[LegacyDirectory] = (),
    schema_version: int | None = None,
    hash_not_null: bool = True,
    wal: bool = False,
    leave_wal: bool = False,
    chunk: int = 20_000,
) -> Path:
    """Create a legacy catalog file at ``path`` (which must not exist yet).

    ``tags`` None writes the seven system tags; ``links`` are (model id, tag id)
    pairs written as given, dangling ones included (the legacy app did not
    enforce foreign keys). ``schema_version`` overrides the version row (to
    write an unknown one). ``wal`` writes in WAL mode as the legacy app did;
    ``leave_wal`` also leaves the rows in ``<path>-wal`` next to an
    un-checkpointed database, as a killed legacy app does.
    """
    if layout not in (1, 2):
        raise ValueError(f"layout {layout!r} is not a legacy layout: use 1 or 2")
    target = Path(path)
    if target.exists():
        raise FileExistsError(f"{target} exists already: give a new file name")
    conn = sqlite3.connect(target, isolation_level=None)
    try:
        _create_schema(conn, layout, hash_not_null, schema_version, wal or leave_wal)
        if leave_wal:
            # Keep every page in the WAL: nothing may reach the main file.
            conn.execute("PRAGMA wal_autocheckpoint = 0")
        _write_rows(conn, layout, rows, tags, links, directories, chunk)
        if leave_wal:
            _freeze_wal(conn, target)
            return target
    finally:
        conn.close()
    return target


def _create_schema(
    conn: sqlite3.Connection, layout: int, hash_not_null: bool, version: int | None, wal: bool
) -> None:
    if wal:
        conn.execute("PRAGMA journal_mode = WAL")
    one = layout == 1
    conn.executescript(
        _SCHEMA.format(
            layout1_dir="\n  dir_path TEXT NOT NULL," if one else "",
            layout1_mtime="\n  mtime_ns INTEGER,\n  hash_algo TEXT NOT NULL," if one else "",
            layout1_updated="\n  updated_at INTEGER," if one else "",
            hash_not_null=" NOT NULL" if hash_not_null else "",
        )
    )
    conn.execute("INSERT INTO schema_version (version) VALUES (?)", (version or layout,))


def _write_rows(
    conn: sqlite3.Connection,
    layout: int,
    rows: Iterable[LegacyModel],
    tags: Iterable[LegacyTag] | None,
    links: Iterable[tuple[int, int]],
    directories: Iterable[LegacyDirectory],
    chunk: int,
) -> None:
    tag_rows = system_tags() if tags is None else tags
    _insert(
        conn,
        "INSERT INTO directories (id, path, alias, parent_id) VALUES (?, ?, ?, ?)",
        ((d.id, d.path, d.alias, d.parent_id) for d in directories),
        chunk,
    )
    _insert(
        conn,
        "INSERT INTO tags (id, name, color, created_at) VALUES (?, ?, ?, ?)",
        ((t.id, t.name, t.color, t.created_at) for t in tag_rows),
        chunk,
    )
    if layout == 1:
        sql = (
            "INSERT INTO models (id, path, dir_path, name, type, size_bytes, mtime_ns, hash_algo,"
            " hash_hex, created_at, updated_at, meta_json, extra_json)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
        )
        values: Iterator[tuple[Any, ...]] = (_layout1_values(r) for r in rows)
    else:
        sql = (
            "INSERT INTO models (id, path, name, type, size_bytes, hash_hex, created_at,"
            " meta_json, extra_json) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
        )
        values = (_layout2_values(r) for r in rows)
    _insert(conn, sql, values, chunk)
    _insert(conn, "INSERT INTO model_tags (model_id, tag_id) VALUES (?, ?)", iter(links), chunk)


def _layout2_values(r: LegacyModel) -> tuple[Any, ...]:
    return (
        *(r.id, r.path, r.name, r.type, r.size_bytes, r.hash_hex, r.created_at),
        *(r.meta_json, r.extra_json),
    )


def _layout1_values(r: LegacyModel) -> tuple[Any, ...]:
    dir_path = r.dir_path if r.dir_path is not None else _folder(r.path)
    return (
        *(r.id, r.path, dir_path, r.name, r.type, r.size_bytes, r.mtime_ns, r.hash_algo),
        *(r.hash_hex, r.created_at, r.updated_at, r.meta_json, r.extra_json),
    )


def _folder(path: str) -> str:
    cut = max(path.rfind("/"), path.rfind("\\"))
    return path[:cut] if cut > 0 else path


def _insert(
    conn: sqlite3.Connection, sql: str, values: Iterable[Sequence[Any]], chunk: int
) -> None:
    """Insert in transactions of ``chunk`` rows, so a generator is never held in memory."""
    iterator = iter(values)
    while batch := list(islice(iterator, chunk)):
        conn.execute("BEGIN")
        conn.executemany(sql, batch)
        conn.execute("COMMIT")


def _freeze_wal(conn: sqlite3.Connection, target: Path) -> None:
    """Leave the database and its ``-wal`` as a killed legacy app would (no ``-shm``)."""
    wal = Path(f"{target}-wal")
    with tempfile.TemporaryDirectory() as keep:
        saved_db, saved_wal = Path(keep, "db"), Path(keep, "wal")
        shutil.copyfile(target, saved_db)
        shutil.copyfile(wal, saved_wal)
        conn.close()  # checkpoints and removes the WAL: undo that below
        shutil.copyfile(saved_db, target)
        shutil.copyfile(saved_wal, wal)
    Path(f"{target}-shm").unlink(missing_ok=True)


def hold_open_in_wal(path: str | os.PathLike[str]) -> sqlite3.Connection:
    """A connection that keeps ``path`` open in WAL mode, as the running legacy app
    does (while it is open, the ``-wal`` and ``-shm`` files stay). Close it when done."""
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA wal_autocheckpoint = 0")
    return conn
