"""A SQLite file as it is on disk, seen without writing to it or beside it.

``look_at(path)`` tells what a file given as a catalog is before SQLite opens it
for real: missing, empty, or a SQLite database with these tables, this schema
revision and this application id. It checks the file type first (a FIFO or a
device is never opened), reads the 100-byte header with ``open()``, and reads
the schema through a ``mode=ro`` URI, with ``immutable=1`` where a plain
read-only open would create a ``-shm`` file beside a WAL-mode database. So
another program's file, or a catalog of a newer modelvault, is refused with
nothing created, changed or left beside it.

``sqlite_uri`` builds the ``file:`` URI of a path for SQLite on either system
(Windows drive letters and UNC shares included), and ``create_marked_file``
creates a new catalog file that is never seen empty.
"""

from __future__ import annotations

import collections
import contextlib
import errno
import ntpath
import os
import secrets
import sqlite3
import stat
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote, urlencode

from modelvault.errors import CatalogError, NotACatalogError
from modelvault.hashing import kind_of

SQLITE_MAGIC = b"SQLite format 3\x00"
HEADER_SIZE = 100
# Stored at offset 68 of the header of every catalog modelvault creates (the
# bytes "MVlt"), so a catalog is known as ours even before it has tables.
APPLICATION_ID = 0x4D566C74
# The tables that tell what a database given as the catalog is: a modelvault
# (v3) catalog at a revision this version may not know, or a legacy catalog
# (``hikaze_mm.sqlite3``), which is migrated, never opened as the catalog.
CATALOG_TABLES = frozenset({"models", "tags", "model_tags", "pending_import"})
LEGACY_TABLES = frozenset({"schema_version", "directories", "models", "tags", "model_tags"})

# How an OSError on a path reads in a sentence, by errno.
_PATH_PROBLEMS = {
    errno.ELOOP: "is a symbolic link loop (it leads back to itself)",
    errno.ENAMETOOLONG: "has a name longer than the file system allows",
    errno.ENOTDIR: "has a file where a folder should be",
    errno.EACCES: "cannot be reached (permission denied)",
    errno.EPERM: "cannot be reached (operation not permitted)",
}


def path_problem(exc: OSError) -> str:
    """What is wrong with a path an ``OSError`` came from, as the end of a sentence
    that starts with the path (``"... is a symbolic link loop ..."``)."""
    known = _PATH_PROBLEMS.get(exc.errno or 0)
    return known or f"cannot be reached ({exc.strerror or exc})"


@dataclass(frozen=True)
class SqliteFile:
    """What ``look_at`` saw: ``exists`` and ``size``; for a database, its tables
    (no ``sqlite_*`` ones), ``alembic_version``'s revision and its application id."""

    path: Path
    exists: bool
    size: int = 0
    tables: frozenset[str] = frozenset()
    revision: str | None = None
    application_id: int = 0

    @property
    def blank(self) -> bool:
        """Nothing in it yet: no file, an empty file, or a database without tables."""
        return not self.tables


def look_at(path: str | os.PathLike[str], *, busy_timeout_seconds: float = 30.0) -> SqliteFile:
    """The SQLite file at ``path``, read without writing to it or beside it
    (waiting at most ``busy_timeout_seconds`` for a writer's lock).

    Raises ``NotACatalogError`` for something that cannot be a catalog (a folder,
    a FIFO, a device, a file that is not SQLite) and ``CatalogError`` for a path
    that cannot be reached (a symbolic link loop, a name too long, no permission),
    each with one sentence naming the file and what to do.
    """
    file = Path(path)
    try:
        info = os.stat(file)
    except FileNotFoundError:
        return SqliteFile(file, exists=False)
    except OSError as exc:
        raise _unreachable(file, exc) from exc
    _require_regular(file, info.st_mode)
    if info.st_size == 0:
        return SqliteFile(file, exists=True)
    # A file this process has open through SQLite is read through SQLite only:
    # closing a descriptor of our own would drop every POSIX lock the process
    # holds on it, and another process could then delete the -wal under us.
    immutable = False
    if not held_open(info):
        header = _read_header(file)
        if len(header) < HEADER_SIZE or not header.startswith(SQLITE_MAGIC):
            raise NotACatalogError(
                f"{file} is not a SQLite database: give the catalog's path with --db "
                "(or a new file name to create one)."
            )
        immutable = _wal_without_index(file, header)
    tables, revision, application_id = _read_schema(file, immutable, busy_timeout_seconds)
    return SqliteFile(
        file,
        exists=True,
        size=info.st_size,
        tables=tables,
        revision=revision,
        application_id=application_id,
    )


# The files this process has open through a catalog engine, by (device, inode),
# with how many connections each: see ``look_at``.
_held: collections.Counter[tuple[int, int]] = collections.Counter()
_held_lock = threading.Lock()


def file_key(path: str | os.PathLike[str]) -> tuple[int, int] | None:
    """The (device, inode) of a file, None if it cannot be stat-ed."""
    try:
        info = os.stat(path)
    except OSError:
        return None
    return info.st_dev, info.st_ino


def note_opened(key: tuple[int, int]) -> None:
    """A connection of this process opened the file ``key`` names."""
    with _held_lock:
        _held[key] += 1


def note_closed(key: tuple[int, int]) -> None:
    """A connection ``note_opened`` counted was closed."""
    with _held_lock:
        _held[key] -= 1
        if _held[key] <= 0:
            del _held[key]


def held_open(info: os.stat_result) -> bool:
    """Whether a connection of this process has the file open."""
    with _held_lock:
        return (info.st_dev, info.st_ino) in _held


def _unreachable(file: Path, exc: OSError) -> CatalogError:
    return CatalogError(f"{file} {path_problem(exc)}: check the path given as the catalog.")


def _require_regular(file: Path, mode: int) -> None:
    """Anything but a regular file is refused before it is opened: opening a FIFO
    waits for a writer that may never come, and a device is nobody's catalog."""
    if stat.S_ISREG(mode):
        return
    raise NotACatalogError(
        f"{file} is {kind_of(mode)}, not a catalog file: give the path of a catalog file "
        "(or a new file name to create one)."
    )


def _read_header(file: Path) -> bytes:
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0)
    try:
        fd = os.open(file, flags)  # non-blocking: a FIFO swapped in since the stat never waits
    except OSError as exc:
        raise _unreachable(file, exc) from exc
    try:
        _require_regular(file, os.fstat(fd).st_mode)
        return os.read(fd, HEADER_SIZE)
    except OSError as exc:
        raise CatalogError(
            f"{file} cannot be read ({exc.strerror or exc}): check the file and its permissions."
        ) from exc
    finally:
        os.close(fd)


def _wal_without_index(file: Path, header: bytes) -> bool:
    """A WAL-mode file whose ``-shm`` is not there: SQLite would create one (and a
    ``-wal``) to read it, so it is read ``immutable`` instead. With both there
    (its program runs, or stopped without cleaning up), a read-only open creates
    nothing and sees the newest commits."""
    wal_mode = header[18:20] == b"\x02\x02"  # read and write format versions 2
    beside = (Path(f"{file}-wal"), Path(f"{file}-shm"))
    return wal_mode and not all(p.exists() for p in beside)


def _read_schema(
    file: Path, immutable: bool, busy_timeout_seconds: float
) -> tuple[frozenset[str], str | None, int]:
    """The file's tables, its ``alembic_version`` revision and its application id."""
    params = {"mode": "ro", **({"immutable": "1"} if immutable else {})}
    uri = sqlite_uri(file) + "?" + urlencode(params)
    try:
        with _connection(uri, busy_timeout_seconds) as conn:
            tables = frozenset(
                name
                for (name,) in conn.execute(
                    "SELECT name FROM sqlite_master "
                    "WHERE type = 'table' AND name NOT LIKE 'sqlite\\_%' ESCAPE '\\'"
                )
            )
            revision = None
            if "alembic_version" in tables:
                row = conn.execute("SELECT version_num FROM alembic_version LIMIT 1").fetchone()
                revision = None if row is None else str(row[0])
            application_id = int(conn.execute("PRAGMA application_id").fetchone()[0])
    except sqlite3.Error as exc:
        raise CatalogError(
            f"{file} cannot be read as a SQLite database ({exc}): check that it is a "
            "catalog, and that no other program holds it locked."
        ) from exc
    return tables, revision, application_id


@contextlib.contextmanager
def _connection(uri: str, busy_timeout_seconds: float = 30.0) -> Iterator[sqlite3.Connection]:
    conn = sqlite3.connect(uri, uri=True, timeout=busy_timeout_seconds)
    try:
        yield conn
    finally:
        conn.close()


def sqlite_uri(path: str | os.PathLike[str], *, windows: bool = os.name == "nt") -> str:
    """The ``file:`` URI SQLite opens ``path`` by (absolute), without a query.

    Always an empty authority (``file://`` + the path): SQLite refuses any
    other, so a UNC share ``\\\\nas\\share\\c.sqlite3`` is ``file:////nas/share/
    c.sqlite3``, not the ``file://nas/share/...`` of ``Path.as_uri()``; a drive
    is ``file:///C:/...``; a ``\\\\?\\`` long-path prefix is dropped. Characters
    that mean something in a URI (``%``, ``?``, ``#``, spaces, ...) are
    percent-encoded, a POSIX name that is not UTF-8 byte for byte.
    """
    text = os.fspath(path)
    if windows:
        text = _windows_path(text).replace("\\", "/")
        if not text.startswith("/"):
            text = "/" + text  # a drive: /C:/...
        return "file://" + quote(text, safe="/:")
    return "file://" + quote(os.fsencode(text), safe="/")


def _windows_path(text: str) -> str:
    """An absolute Windows path, without the long-path prefix SQLite does not take."""
    text = without_long_prefix(text)
    if not ntpath.isabs(text):
        raise ValueError(f"{text!r} is not an absolute Windows path")
    return text


def without_long_prefix(path: str) -> str:
    """A Windows path without its ``\\\\?\\`` (long path) prefix: ``\\\\?\\C:\\x`` is
    ``C:\\x``, ``\\\\?\\UNC\\nas\\share`` is ``\\\\nas\\share``."""
    for prefix, replacement in (("\\\\?\\UNC\\", "\\\\"), ("//?/UNC/", "//"), ("\\\\?\\", "")):
        if path.startswith(prefix):
            return replacement + path[len(prefix) :]
    return path


def create_marked_file(file: Path) -> bool:
    """Create ``file`` as an empty SQLite database carrying ``APPLICATION_ID``.

    It appears whole or not at all (made beside it under a temporary name, then
    linked into place), so nobody ever sees an empty file there: an empty file
    is one a person made, and only ``init`` turns one into a catalog. Returns
    False when ``file`` appeared meanwhile (another process made the catalog).
    """
    temporary = file.with_name(f".{file.name}.{secrets.token_hex(6)}.new")
    # The permissions SQLite would give a file it creates: 0666 less the umask.
    os.close(os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
    try:
        with _connection(sqlite_uri(temporary)) as conn:
            conn.execute(f"PRAGMA application_id = {APPLICATION_ID}")
            conn.commit()
        return _place(temporary, file)
    finally:
        temporary.unlink(missing_ok=True)


def _place(source: Path, target: Path) -> bool:
    """Put ``source`` at ``target`` unless something is there already."""
    if os.name == "nt":  # pragma: no cover - Windows: a rename never replaces a file
        try:
            os.rename(source, target)
        except FileExistsError:
            return False
        return True
    try:
        os.link(source, target)
    except FileExistsError:
        return False
    except OSError:  # a file system without hard links (FAT, some shares)
        return _copy_exclusive(source, target)
    return True


def _copy_exclusive(source: Path, target: Path) -> bool:
    data = source.read_bytes()
    try:
        descriptor = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    except FileExistsError:
        return False
    with os.fdopen(descriptor, "wb") as out:
        out.write(data)
    return True


def describe_application_id(value: int) -> str:
    """``0x47504b47 ('GPKG')``: the id, and its four letters when it spells some."""
    raw = value.to_bytes(4, "big", signed=True)
    letters = raw.decode("ascii", "replace")
    shown = f" ({letters!r})" if letters.isprintable() and letters.isascii() else ""
    return f"{value & 0xFFFFFFFF:#010x}{shown}"
