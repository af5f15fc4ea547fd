"""Engines for the catalog, with the connection settings each backend needs.

Everything is set on our own engines through events, never on SQLAlchemy's
global Engine class, so an app that embeds modelvault keeps its own engines as
they were.
"""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import NoSuchModuleError
from sqlalchemy.pool import ConnectionPoolEntry

from modelvault.config import Settings, parse_url, shown_url
from modelvault.db import postgres
from modelvault.db.sqlite_files import file_key, note_closed, note_opened, sqlite_uri
from modelvault.errors import ConfigError

# Execution option that picks how a SQLite transaction begins: "IMMEDIATE"
# takes the write lock at BEGIN, which is how workers claim rows atomically.
SQLITE_BEGIN = "modelvault_sqlite_begin"

_FILE_KEY = "modelvault_file_key"  # where a connection's record keeps its file's key
_SQLITE_BUSY = 5  # sqlite3.SQLITE_BUSY, named only from Python 3.11


def is_sqlite(engine_or_url: Engine | URL | str) -> bool:
    url = engine_or_url.url if isinstance(engine_or_url, Engine) else make_url(engine_or_url)
    return url.get_backend_name() == "sqlite"


def create_catalog_engine(
    url: str | URL,
    *,
    busy_timeout_seconds: float | None = None,
    read_only: bool = False,
    settings: Settings | None = None,
) -> Engine:
    """An engine for the catalog at ``url``; ``read_only`` makes it unable to write.

    Read-only means a ``mode=ro`` SQLite connection (which never creates the
    file) or PostgreSQL sessions with ``default_transaction_read_only``.
    ``settings`` (default: from the environment) give SQLite's busy timeout
    (unless ``busy_timeout_seconds`` does) and PostgreSQL's timeouts, each of
    the latter unless the URL's query gives it (see ``modelvault.db.postgres``).
    """
    settings = settings or Settings.from_env()
    if busy_timeout_seconds is None:
        busy_timeout_seconds = settings.sqlite_busy_timeout_seconds
    parsed = parse_url(url) if isinstance(url, str) else url
    if parsed.get_backend_name() == "postgresql" and parsed.get_driver_name() in ("", "psycopg2"):
        # psycopg 3 is the driver we ship for; psycopg2 may not even be installed.
        parsed = parsed.set(drivername="postgresql+psycopg")
    kwargs: dict[str, Any] = {}
    target = parsed
    if parsed.get_backend_name() == "sqlite":
        kwargs["connect_args"] = {"timeout": busy_timeout_seconds}
        if read_only and sqlite_file(parsed):
            target = URL.create(
                parsed.drivername,
                database=sqlite_uri(Path(sqlite_file(parsed) or "").resolve()),
                query={"mode": "ro", "uri": "true"},
            )
    else:
        kwargs["pool_pre_ping"] = True
        if _psycopg(parsed):
            kwargs["connect_args"] = postgres.connect_parameters(
                parsed.query, settings, read_only=read_only
            )
        elif read_only:
            kwargs["connect_args"] = {"options": f"-c {postgres.READ_ONLY}=on"}
    if parsed.get_backend_name() != "sqlite" or sqlite_file(parsed):  # a pool of many
        # LIFO: a thread takes the connection used last, whose page cache (SQLite) is
        # warm; first-in-first-out would rotate a lone busy worker through every idle
        # connection of the pool, each of which must reread what another one changed.
        kwargs["pool_use_lifo"] = True
    try:
        engine = create_engine(target, **kwargs)
    except (NoSuchModuleError, ModuleNotFoundError) as exc:
        hint = " (pip install 'modelvault[postgres]')" if "postgres" in parsed.drivername else ""
        raise ConfigError(
            f"no database driver for {parsed.drivername!r} is installed{hint}."
        ) from exc
    if parsed.get_backend_name() == "sqlite":
        _configure_sqlite(engine, busy_timeout_seconds)
    else:
        _configure_postgresql(engine)
        if _psycopg(parsed):
            postgres.configure(engine, postgres.server_for(shown_url(parsed), settings))
    return engine


def no_idle_limit(conn: Connection) -> None:
    """Lift PostgreSQL's idle-in-transaction timeout for the rest of ``conn``'s
    transaction (beginning it): for a read that streams rows while other work, or
    a pause, goes on between them. Such a read holds no lock a writer waits for."""
    if conn.dialect.name == "postgresql":
        conn.exec_driver_sql(f"SET LOCAL {postgres.IDLE_IN_TRANSACTION_TIMEOUT} = 0")


def _psycopg(url: URL) -> bool:
    """A PostgreSQL URL for psycopg (3), the driver whose connections are bounded."""
    return url.get_backend_name() == "postgresql" and url.get_driver_name() == "psycopg"


def sqlite_file(url: URL) -> str | None:
    """The file of a SQLite URL; None for an in-memory or URI-style database."""
    database = url.database or ""
    if url.get_backend_name() != "sqlite" or not database or database == ":memory:":
        return None
    if database.startswith("file:") or "mode=memory" in database:
        return None  # a URI filename: memory or not, no folder we can be sure of
    if url.query.get("mode") == "memory":
        return None
    return str(Path(database).expanduser())


def set_journal_mode(engine: Engine, mode: str) -> None:
    """Put a SQLite catalog file in journal ``mode`` (persistent: once per file is
    enough), unless it is in that mode already.

    WAL lets readers never block the writer, so status stays live while
    workers commit; on a network file system the rollback journal (``DELETE``)
    is used instead (see ``modelvault.db.network``). Only called on a file known
    to be a modelvault catalog: another app's database keeps its journal mode.
    """
    if sqlite_file(engine.url) is None:
        return
    raw = engine.raw_connection()
    try:
        driver: Any = raw.driver_connection
        current = driver.execute("PRAGMA journal_mode").fetchone()[0]
        if str(current).upper() != mode:
            _switch_journal_mode(driver, mode)
    finally:
        raw.close()


def _switch_journal_mode(driver: Any, mode: str) -> None:
    """Run ``PRAGMA journal_mode = mode``, waiting for other connections as the
    busy timeout allows.

    The switch promotes a read lock to a write lock; while another connection
    holds the write lock (a process creating the same catalog, in BEGIN
    IMMEDIATE) SQLite answers "database is locked" at once rather than call
    the busy handler, since two such waits could deadlock. So the wait is
    done here: short retries until the connection's own busy timeout passes.
    """
    timeout_ms = driver.execute("PRAGMA busy_timeout").fetchone()[0]
    deadline = time.monotonic() + timeout_ms / 1000
    pause = 0.005
    while True:
        try:
            # Outside any transaction: SQLite cannot change the journal mode inside one.
            driver.execute(f"PRAGMA journal_mode = {mode}")
            return
        except sqlite3.OperationalError as exc:
            if not _busy(exc) or time.monotonic() > deadline:
                raise
        time.sleep(pause)
        pause = min(pause * 2, 0.1)


def _busy(exc: sqlite3.OperationalError) -> bool:
    """Whether SQLite said "database is locked" (SQLITE_BUSY and its extended codes)."""
    code = getattr(exc, "sqlite_errorcode", None)  # Python 3.11+
    return (code & 0xFF) == _SQLITE_BUSY if code is not None else "locked" in str(exc)


def _configure_sqlite(engine: Engine, busy_timeout_seconds: float) -> None:
    file = sqlite_file(engine.url)
    if file is not None:
        _count_open_connections(engine, file)

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: ConnectionPoolEntry) -> None:
        # Let SQLAlchemy, not the sqlite3 module, decide when transactions begin
        # (the module's own guessing defers BEGIN and breaks BEGIN IMMEDIATE).
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute("PRAGMA foreign_keys = ON")
            cursor.execute(f"PRAGMA busy_timeout = {int(busy_timeout_seconds * 1000)}")
            # Per connection, nothing stored in the file. NORMAL is crash-safe
            # under WAL (and in a foreign file's own journal mode, never written).
            cursor.execute("PRAGMA synchronous = NORMAL")
        finally:
            cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Any) -> None:
        mode = connection.get_execution_options().get(SQLITE_BEGIN, "DEFERRED")
        connection.exec_driver_sql(f"BEGIN {mode}")


def _count_open_connections(engine: Engine, file: str) -> None:
    """Keep ``sqlite_files``' count of this process's connections to ``file``
    (``look_at`` must not open and close it while any is open)."""

    @event.listens_for(engine, "connect")
    def _opened(_dbapi_connection: Any, record: ConnectionPoolEntry) -> None:
        key = file_key(file)
        if key is not None:
            record.info[_FILE_KEY] = key
            note_opened(key)

    @event.listens_for(engine, "close")
    def _closed(_dbapi_connection: Any, record: ConnectionPoolEntry) -> None:
        key = record.info.pop(_FILE_KEY, None)
        if key is not None:
            note_closed(key)


def _configure_postgresql(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: ConnectionPoolEntry) -> None:
        # psycopg prepares a statement on the server after a few runs, and
        # PostgreSQL may then keep one generic plan for it, made while the
        # tables were empty: lookups in ``models`` that should use an index end
        # up scanning it, slower with every row the catalog gains. Unprepared,
        # each run is planned for the table as it is now. Not plan_cache_mode =
        # force_custom_plan: that would also plan the foreign key checks again
        # for every row inserted, a cost several times the insert's own.
        dbapi_connection.prepare_threshold = None
