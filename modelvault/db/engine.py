"""Engines for the catalog, with the connection settings each backend needs.

Everything is set on our own engines through events, never on SQLAlchemy's
global Engine class, so an app that embeds modelvault keeps its own engines as
they were.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError, NoSuchModuleError
from sqlalchemy.pool import ConnectionPoolEntry

from modelvault.errors import CatalogError, ConfigError

# Execution option that picks how a SQLite transaction begins: "IMMEDIATE"
# takes the write lock at BEGIN, which is how workers claim rows atomically.
SQLITE_BEGIN = "modelvault_sqlite_begin"


def is_sqlite(engine_or_url: Engine | URL | str) -> bool:
    url = engine_or_url.url if isinstance(engine_or_url, Engine) else make_url(engine_or_url)
    return url.get_backend_name() == "sqlite"


def parse_url(url: str) -> URL:
    try:
        return make_url(url)
    except ArgumentError as exc:
        raise ConfigError(
            f"{url!r} is not a database URL: use e.g. sqlite:///path/catalog.sqlite3 "
            "or postgresql://user@host/db."
        ) from exc


def create_catalog_engine(url: str | URL, *, busy_timeout_seconds: float = 30.0) -> Engine:
    """An engine for the catalog at ``url`` (a SQLite file's folder is created)."""
    parsed = parse_url(url) if isinstance(url, str) else url
    if parsed.get_backend_name() == "postgresql" and parsed.get_driver_name() in ("", "psycopg2"):
        # psycopg 3 is the driver we ship for; psycopg2 may not even be installed.
        parsed = parsed.set(drivername="postgresql+psycopg")
    kwargs: dict[str, Any] = {}
    if parsed.get_backend_name() == "sqlite":
        _make_sqlite_folder(parsed)
        kwargs["connect_args"] = {"timeout": busy_timeout_seconds}
    else:
        kwargs["pool_pre_ping"] = True
    if parsed.get_backend_name() != "sqlite" or _is_file_database(parsed):  # a pool of many
        # LIFO: a thread takes the connection used last, whose page cache (SQLite) is
        # warm; first-in-first-out would rotate a lone busy worker through every idle
        # connection of the pool, each of which must reread what another one changed.
        kwargs["pool_use_lifo"] = True
    try:
        engine = create_engine(parsed, **kwargs)
    except (NoSuchModuleError, ModuleNotFoundError) as exc:
        hint = " (pip install 'modelvault[postgres]')" if "postgres" in parsed.drivername else ""
        raise ConfigError(
            f"no database driver for {parsed.drivername!r} is installed{hint}."
        ) from exc
    if parsed.get_backend_name() == "sqlite":
        _configure_sqlite(engine, busy_timeout_seconds)
    else:
        _configure_postgresql(engine)
    return engine


def _make_sqlite_folder(url: URL) -> None:
    database = url.database or ""
    if not database or database == ":memory:" or database.startswith("file:"):
        return
    folder = Path(database).expanduser().parent
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise CatalogError(
            f"cannot create the catalog folder {folder}: {exc.strerror or exc}; "
            "choose another location with --db or MODELVAULT_DB_PATH."
        ) from exc


def _configure_sqlite(engine: Engine, busy_timeout_seconds: float) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: ConnectionPoolEntry) -> None:
        # Let SQLAlchemy, not the sqlite3 module, decide when transactions begin
        # (the module's own guessing defers BEGIN and breaks BEGIN IMMEDIATE).
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute("PRAGMA foreign_keys = ON")
            cursor.execute(f"PRAGMA busy_timeout = {int(busy_timeout_seconds * 1000)}")
            if _is_file_database(engine.url):
                # WAL: readers never block the writer, so status stays live
                # while workers commit. NORMAL is crash-safe under WAL.
                cursor.execute("PRAGMA journal_mode = WAL")
                cursor.execute("PRAGMA synchronous = NORMAL")
        finally:
            cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Any) -> None:
        mode = connection.get_execution_options().get(SQLITE_BEGIN, "DEFERRED")
        connection.exec_driver_sql(f"BEGIN {mode}")


def _configure_postgresql(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: ConnectionPoolEntry) -> None:
        # psycopg prepares a statement on the server after a few runs, and
        # PostgreSQL may then keep one generic plan for it, made while the
        # tables were empty: lookups in ``models`` that should use an index end
        # up scanning it, slower with every row the catalog gains. A custom
        # plan per run keeps the parse saved and the plan right for the table
        # as it is now. Set per connection, so the server's default is untouched.
        with dbapi_connection.cursor() as cursor:
            cursor.execute("SET plan_cache_mode = force_custom_plan")
        dbapi_connection.commit()


def _is_file_database(url: URL) -> bool:
    database = url.database or ""
    in_memory = database == ":memory:" or "mode=memory" in database
    return bool(database) and not in_memory and url.query.get("mode") != "memory"
