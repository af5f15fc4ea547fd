"""Backups of a catalog, into a folder of backups of our own.

A SQLite catalog is copied with SQLite's online backup API, in one step inside
one read transaction: a consistent copy of the catalog as it was at that moment,
while workers go on writing (they wait for nothing). The copy is checked
(``PRAGMA quick_check``), put in rollback-journal mode so it is one whole file,
and written beside the list of the image store's files (``.images.json``: the
store's folder and each file's name and SHA-256; the images themselves are not
copied). A PostgreSQL catalog (or one in memory) is backed up as its export in
JSON Lines (``modelvault.exchange``), which ``import-catalog`` reads back.

Each backup is named with the catalog's name and the time (UTC) it was made,
``<catalog>-YYYYmmdd-HHMMSS.sqlite3``; one made before a command's first write
(``backup_before_writing``: migrate, import, scan) adds ``-before-<command>``,
and of those only the last ``KEEP_AUTOMATIC`` are kept. A backup is written to
a temporary name and takes its own only when whole: a full disk leaves nothing.

The folder is ours: the one a backup creates, or an empty one, which takes the
marker file ``MODELVAULT-BACKUPS.txt``. A folder holding anything else (or a
file of that name) is refused, never written into. By default it is
``backups/`` beside a SQLite catalog file, else in the data folder.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import sqlite3
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from modelvault.config import default_data_dir
from modelvault.database import DatabaseManager
from modelvault.db.engine import sqlite_file
from modelvault.db.types import utcnow
from modelvault.errors import BackupError, ExchangeError
from modelvault.exchange import export_catalog, store_listing

BACKUP_FOLDER = "backups"
MARKER = "MODELVAULT-BACKUPS.txt"
MARKER_TEXT = (
    "This folder holds backups of a modelvault catalog, made by 'modelvault backup'\n"
    "and before migrate, import and scan write to a catalog. modelvault writes here\n"
    "and removes its own older automatic backups (the last few are kept).\n"
)
KEEP_AUTOMATIC = 5
IMAGES_SUFFIX = ".images.json"
_AUTOMATIC = re.compile(r".+-\d{8}-\d{6}(-\d+)?-before-[a-z-]+\.(sqlite3|jsonl)")


@dataclass
class BackupReport:
    folder: str
    file: str
    kind: str  # "sqlite": a copy of the file; "export": the catalog's JSON Lines export
    bytes: int
    images_list: str | None = None
    images: int = 0
    removed: list[str] = field(default_factory=list)  # older automatic backups

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def default_folder(db: DatabaseManager) -> Path:
    """``backups/`` beside a SQLite catalog file, else in the data folder."""
    file = sqlite_file(db.url)
    base = Path(file).absolute().parent if file else default_data_dir()
    return base / BACKUP_FOLDER


def backup_catalog(
    db: DatabaseManager,
    dest: str | os.PathLike[str] | None = None,
    *,
    before: str | None = None,
    clock: Callable[[], datetime] = utcnow,
) -> BackupReport:
    """Back the catalog up into the folder ``dest`` (default: ``default_folder``).

    ``before`` names the command about to write (an automatic backup: the older
    ones beyond ``KEEP_AUTOMATIC`` are removed). Raises ``BackupError`` for a
    folder that is not ours or a backup that cannot be written whole.
    """
    folder = Path(dest).expanduser().absolute() if dest is not None else default_folder(db)
    claim_folder(folder, create_parents=dest is None)
    file = sqlite_file(db.url)
    stem = Path(file).stem if file else "catalog"
    suffix = ".sqlite3" if file else ".jsonl"
    target = free_name(folder, stem, clock(), before, suffix)
    report = _copy_sqlite(db, target) if file else _export(db, target)
    if before is not None:
        report.removed = prune(folder, KEEP_AUTOMATIC)
    return report


def backup_before_writing(db: DatabaseManager, command: str) -> BackupReport | None:
    """A backup before ``command`` first writes, if the catalog holds models (an empty
    catalog has nothing to lose); None when none was needed."""
    if not db.catalog_counts()["models"]:
        return None
    return backup_catalog(db, before=command)


def claim_folder(folder: Path, *, create_parents: bool = False) -> None:
    """Make ``folder`` a folder of backups of ours, or refuse it as it is."""
    if folder.is_symlink() or (folder.exists() and not folder.is_dir()):
        raise BackupError(
            f"{folder} is not a folder: a backup goes into a folder of its own; give a new "
            "or empty folder (nothing was written)."
        )
    try:
        if folder.is_dir():
            entries = os.listdir(folder)
            if MARKER in entries:
                return
            if entries:
                raise BackupError(
                    f"{folder} holds files that are not modelvault backups: it is left as it "
                    "is; give a new or empty folder for backups."
                )
        else:
            folder.mkdir(parents=create_parents)
        (folder / MARKER).write_text(MARKER_TEXT, encoding="utf-8")
    except FileNotFoundError as exc:
        raise BackupError(
            f"the folder {folder.parent} does not exist: create it first, or back up elsewhere."
        ) from exc
    except OSError as exc:
        raise BackupError(
            f"cannot write into {folder} ({exc.strerror or exc}): check that it is a folder "
            "you can write, or give another one."
        ) from exc


def free_name(folder: Path, stem: str, when: datetime, before: str | None, suffix: str) -> Path:
    """``<stem>-YYYYmmdd-HHMMSS[-before-<command>]<suffix>``, with ``-2``, ``-3``... after
    the time where a backup of that second is there already."""
    stamp = when.strftime("%Y%m%d-%H%M%S")
    tail = f"-before-{before}" if before else ""
    for number in range(1, 1000):
        extra = "" if number == 1 else f"-{number}"
        target = folder / f"{stem}-{stamp}{extra}{tail}{suffix}"
        if not os.path.lexists(target):
            return target
    raise BackupError(f"too many backups of this second in {folder}: try again.")


def _copy_sqlite(db: DatabaseManager, target: Path) -> BackupReport:
    temp = target.with_name(f".{target.name}.part")
    try:
        _online_copy(db, temp)
        _fsync(temp)
        os.replace(temp, target)
        listing = _write_images_list(db, target)
    except (OSError, sqlite3.Error) as exc:
        _remove(temp, Path(f"{temp}-journal"))
        raise BackupError(
            f"cannot write the backup {target} ({_reason(exc)}): nothing was kept; free some "
            "space or back up into another folder."
        ) from exc
    except BaseException:
        _remove(temp, Path(f"{temp}-journal"))
        raise
    report = BackupReport(str(target.parent), str(target), "sqlite", target.stat().st_size)
    report.images_list, report.images = listing
    return report


def _online_copy(db: DatabaseManager, temp: Path) -> None:
    """SQLite's backup API, all pages in one step (one read transaction: consistent)."""
    copy = sqlite3.connect(temp, isolation_level=None)
    try:
        with db.translate_errors(), db.engine.connect() as conn:
            source = conn.connection.driver_connection
            assert isinstance(source, sqlite3.Connection)
            source.backup(copy)
        copy.execute("PRAGMA journal_mode = DELETE")  # one whole file, no -wal beside it
        verdict = copy.execute("PRAGMA quick_check").fetchone()[0]
        if verdict != "ok":
            raise sqlite3.DatabaseError(f"the copy does not check out: {verdict}")
    finally:
        copy.close()


def _write_images_list(db: DatabaseManager, target: Path) -> tuple[str | None, int]:
    store = db.images_dir
    listing = store_listing(store)
    if store is None:
        return None, 0
    path = target.with_name(target.name.removesuffix(target.suffix) + IMAGES_SUFFIX)
    text = json.dumps({"folder": str(store), "images": listing}, indent=1) + "\n"
    temp = path.with_name(f".{path.name}.part")
    try:
        temp.write_text(text, encoding="utf-8")
        _fsync(temp)
        os.replace(temp, path)
    except OSError:
        _remove(temp, target)  # the backup is one whole: copy and list, or neither
        raise
    return str(path), len(listing)


def _export(db: DatabaseManager, target: Path) -> BackupReport:
    try:
        exported = export_catalog(db, target, layout="lines")
    except ExchangeError as exc:
        raise BackupError(f"the backup failed: {exc}") from exc
    return BackupReport(
        str(target.parent), str(target), "export", exported.bytes_written, images=exported.images
    )


def prune(folder: Path, keep: int) -> list[str]:
    """Remove the automatic backups beyond the last ``keep`` (by the time in their names)."""
    automatic = sorted(
        (entry.name for entry in os.scandir(folder) if _AUTOMATIC.fullmatch(entry.name)),
        key=_time_of,
    )
    removed = []
    for name in automatic[: max(0, len(automatic) - keep)]:
        path = folder / name
        images = path.with_name(name.removesuffix(path.suffix) + IMAGES_SUFFIX)
        _remove(path, images)
        removed.append(str(path))
    return removed


def _time_of(name: str) -> tuple[str, int]:
    found = re.search(r"-(\d{8}-\d{6})(?:-(\d+))?-before-", name)
    assert found is not None
    return found.group(1), int(found.group(2) or 1)


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _remove(*paths: Path) -> None:
    for path in paths:
        with contextlib.suppress(OSError):
            os.unlink(path)


def _reason(exc: BaseException) -> str:
    if isinstance(exc, OSError):
        return exc.strerror or str(exc)
    return str(exc)
