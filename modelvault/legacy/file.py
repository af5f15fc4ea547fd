"""The legacy catalog file looked at before SQLite opens it, and opened read-only.

``check_file`` tells what can be told from the file itself (there, a regular
file, a SQLite header that is whole); ``needs_copy`` and ``private_copy`` decide
whether a WAL-mode file must be read from a private copy (nothing is ever
created beside the legacy file); ``read_only_engine`` opens it through a
``mode=ro`` URI with ``query_only`` on. Every problem is one sentence naming
the file and what to do (``legacy_error``).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import URL
from sqlalchemy.exc import DBAPIError
from sqlalchemy.pool import ConnectionPoolEntry

from modelvault.db.network import network_filesystem
from modelvault.db.sqlite_files import HEADER_SIZE, SQLITE_MAGIC, path_problem, sqlite_uri
from modelvault.errors import LegacyDatabaseError
from modelvault.legacy import private_copies

LEGACY_FILE_NAME = "hikaze_mm.sqlite3"
# A copy of a WAL-mode file is made again when the legacy app wrote meanwhile.
COPY_ATTEMPTS = 3


def resolved(file: Path) -> Path:
    try:
        return file.resolve()
    except RuntimeError:  # Python before 3.13 on a symbolic link loop
        raise legacy_error(
            file, "is a symbolic link loop (it leads back to itself)", "give the file's real path"
        ) from None


def needs_copy(file: Path, header: bytes) -> bool:
    """Whether a WAL-mode file must be read from a private copy.

    SQLite reads a WAL-mode database only through its ``-shm`` index: opened in
    place without one, even read-only, it creates ``-shm`` (and an empty
    ``-wal``) beside the file, or fails in a folder it cannot write. Both files
    exist while the legacy app runs (or after it was killed); then, in a
    writable folder, the file is read in place, sharing the app's locks. In
    every other case the file and its ``-wal`` are copied and the copy is read:
    a consistent snapshot, and nothing appears beside the legacy file.
    ``immutable=1`` would need no copy, but it skips the ``-wal``, where the
    newest rows may be. On a network file system the file is always copied:
    the ``-shm`` index is memory of the computer the legacy app runs on, which
    a reader on another computer cannot share (see ``modelvault.db.network``).
    """
    wal_mode = header[18:20] == b"\x02\x02"  # read and write format versions 2: WAL
    if not wal_mode:
        return False
    beside = [Path(f"{file}-wal"), Path(f"{file}-shm")]
    if not all(p.exists() for p in beside) or not os.access(file.parent, os.W_OK):
        return True
    return network_filesystem(file.parent) is not None


def private_copy(file: Path) -> Path:
    """Copy the file and its ``-wal`` into a new private folder (named for this
    process, see ``private_copies``); returns the folder.

    A copy whose sources changed while it was made (the legacy app wrote) is
    made again, so it is never a torn mix of two states.
    """
    folder = private_copies.new_folder()
    try:
        for _attempt in range(COPY_ATTEMPTS):
            before = _states(file)
            for source in (file, Path(f"{file}-wal")):
                if source.exists():
                    shutil.copyfile(source, folder / source.name)
            if _states(file) == before:
                return folder
        raise legacy_error(
            file,
            "kept changing while it was being copied to be read",
            "close the legacy app and try again",
        )
    except OSError as exc:
        shutil.rmtree(folder, ignore_errors=True)
        raise legacy_error(
            file, f"cannot be copied to be read ({exc.strerror or exc})", "check its permissions"
        ) from exc
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise


def _states(file: Path) -> list[tuple[int, int] | None]:
    states: list[tuple[int, int] | None] = []
    for part in (file, Path(f"{file}-wal")):
        try:
            stat = part.stat()
            states.append((stat.st_size, stat.st_mtime_ns))
        except FileNotFoundError:
            states.append(None)
    return states


def read_only_engine(file: Path, *, busy_timeout_seconds: float) -> Engine:
    """An engine that can only read ``file``: a ``mode=ro`` URI, and ``query_only`` too."""
    url = URL.create("sqlite", database=sqlite_uri(file), query={"mode": "ro", "uri": "true"})
    engine = create_engine(url, connect_args={"timeout": busy_timeout_seconds})

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: ConnectionPoolEntry) -> None:
        dbapi_connection.execute("PRAGMA query_only = ON")

    return engine


def check_file(file: Path) -> bytes:
    """Everything that can be told from the file itself, before SQLite opens it;
    returns its header."""
    try:
        stat = file.stat()
    except FileNotFoundError:
        raise legacy_error(file, "does not exist", "check the path") from None
    except OSError as exc:
        raise legacy_error(file, path_problem(exc), "check the path and its permissions") from exc
    if file.is_dir():
        hint = file / LEGACY_FILE_NAME
        what_to_do = (
            f"did you mean {hint}?"
            if hint.is_file()
            else f"give the {LEGACY_FILE_NAME} file inside it"
        )
        raise legacy_error(file, "is a folder, not a file", what_to_do)
    if not file.is_file():
        raise legacy_error(
            file, "is not a regular file", "give the path of the legacy catalog file"
        )
    try:
        with file.open("rb") as handle:
            header = handle.read(HEADER_SIZE)
    except OSError as exc:
        raise legacy_error(
            file, f"cannot be read ({exc.strerror or exc})", "check its permissions"
        ) from exc
    _check_header(file, header, stat.st_size)
    return header


def _check_header(file: Path, header: bytes, size: int) -> None:
    if size == 0:
        raise legacy_error(file, "is empty", "give the legacy catalog file that holds your models")
    if not header.startswith(SQLITE_MAGIC[: len(header)]) or not header:
        raise legacy_error(
            file, "is not a SQLite database, or it is encrypted", "give the legacy catalog file"
        )
    if len(header) < HEADER_SIZE:
        raise legacy_error(
            file, "is truncated (shorter than a SQLite header)", "restore it from a backup"
        )
    page_size = int.from_bytes(header[16:18], "big")
    page_size = 65536 if page_size == 1 else page_size
    if page_size < 512 or page_size & (page_size - 1):
        raise legacy_error(file, "has a damaged SQLite header", "restore it from a backup")
    pages = int.from_bytes(header[28:32], "big")
    # The page count in the header is trustworthy only when its "valid-for"
    # counter matches the change counter (older SQLite versions did not keep it),
    # and when no WAL may hold the rest (a checkpoint cut short by a crash).
    count_valid = header[24:28] == header[92:96] and not _has_wal(file)
    if size % page_size or (count_valid and size < pages * page_size):
        raise legacy_error(
            file,
            f"is truncated ({size} bytes, but its header says {pages * page_size})",
            "restore it from a backup",
        )


def _has_wal(file: Path) -> bool:
    try:
        return Path(f"{file}-wal").stat().st_size > 0
    except OSError:
        return False


def read_error(file: Path, exc: BaseException) -> LegacyDatabaseError:
    orig = exc.orig if isinstance(exc, DBAPIError) else exc
    message = str(orig).strip().lower()
    if "locked" in message or "busy" in message:
        return legacy_error(
            file,
            "is locked by another program",
            "close the legacy app (or wait for it to finish writing) and try again",
        )
    if "not a database" in message or "encrypted" in message:
        return legacy_error(
            file, "is not a SQLite database, or it is encrypted", "give the legacy catalog file"
        )
    if "malformed" in message or "corrupt" in message:
        return legacy_error(
            file, "is damaged (the database image is malformed)", "restore it from a backup"
        )
    if "unable to open" in message:
        return legacy_error(file, "cannot be opened", "check the file and folder permissions")
    return legacy_error(file, f"cannot be read ({orig})", "check the file")


def legacy_error(file: Path, what: str, what_to_do: str) -> LegacyDatabaseError:
    return LegacyDatabaseError(f"the legacy catalog {file} {what}: {what_to_do}.")
