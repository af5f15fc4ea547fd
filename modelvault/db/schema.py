"""The catalog's schema: checked, created and upgraded with Alembic.

Anything that is not a modelvault catalog (another app's database, a legacy
catalog, a catalog written by a newer modelvault) is refused before anything is
written to it or beside it.
"""

from __future__ import annotations

import functools
import logging
import sqlite3
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import URL, Engine, inspect, text

from modelvault.config import shown_url
from modelvault.db.engine import SQLITE_BEGIN, sqlite_file
from modelvault.db.errors import translate_errors
from modelvault.db.sqlite_files import (
    APPLICATION_ID,
    CATALOG_TABLES,
    LEGACY_TABLES,
    SqliteFile,
    create_marked_file,
    describe_application_id,
    look_at,
)
from modelvault.errors import CatalogError, NotACatalogError, SchemaVersionError

log = logging.getLogger(__name__)

# Any fixed number: PostgreSQL advisory lock held while one process migrates,
# so several workers starting at once don't race to create the tables.
_MIGRATION_LOCK_KEY = 0x6D76_0003


def revisions_dir() -> Path:
    """Where the Alembic revisions are: inside an installed wheel, or the source checkout."""
    package = Path(__file__).parent.parent
    packaged = package / "schema_revisions"
    return packaged if packaged.is_dir() else package.parent / "alembic"


def alembic_config() -> Config:
    """An Alembic config without an ini file (so the app's logging stays untouched)."""
    config = Config()
    config.set_main_option("script_location", str(revisions_dir()))
    return config


@functools.cache
def packaged_revisions() -> tuple[str, frozenset[str]]:
    """The head revision and every known one, read from the migration scripts once
    per process (``init_db`` runs for every catalog opened)."""
    script = ScriptDirectory.from_config(alembic_config())
    head = script.get_current_head()
    assert head is not None, "the packaged schema revisions have no head"
    return head, frozenset(s.revision for s in script.walk_revisions())


class CatalogSchema:
    """The schema of the catalog at ``url`` (``engine`` connects to it); a
    ``read_only`` one is only ever looked at."""

    def __init__(
        self, engine: Engine, url: URL, *, read_only: bool, busy_timeout_seconds: float
    ) -> None:
        self.engine, self.url, self.read_only = engine, url, read_only
        self.busy_timeout_seconds = busy_timeout_seconds
        self.display_url = shown_url(url)

    def upgrade(self, *, adopt_empty: bool) -> str:
        """Migrate the catalog to the newest revision and return it (see
        ``DatabaseManager.init_db``); read-only, only check that it is there."""
        head, _known = packaged_revisions()
        if self.read_only:
            self.check()
            return head
        if not self.check(adopt_empty=adopt_empty):
            _create_catalog_file(Path(sqlite_file(self.url) or ""))
        self._migrate(head)
        return head

    def check(self, *, adopt_empty: bool = False) -> bool:
        """Refuse what ``init_db(adopt_empty=...)`` would refuse, writing nothing.

        Returns whether the database is there (False: a SQLite catalog file
        that ``init_db`` creates). A read-only manager refuses what it could
        not read: no catalog there, an empty one, one at another revision.
        """
        head, known = packaged_revisions()
        if self.read_only:
            self._check_read_only(head, known)
            return True
        file = sqlite_file(self.url)
        if file is None:
            self._check_connected(known)
            return True
        seen = look_at(file, busy_timeout_seconds=self.busy_timeout_seconds)
        _refuse_unless_ours(seen, known, adopt_empty=adopt_empty)
        return seen.exists

    def _migrate(self, head: str) -> None:
        with translate_errors(self.display_url), self.engine.connect() as conn:
            conn = conn.execution_options(**{SQLITE_BEGIN: "IMMEDIATE"})
            with conn.begin():
                if conn.dialect.name == "postgresql":
                    conn.execute(
                        text("SELECT pg_advisory_xact_lock(:key)"), {"key": _MIGRATION_LOCK_KEY}
                    )
                else:
                    _mark_as_ours(conn)
                current = MigrationContext.configure(conn).get_current_revision()
                if current == head:
                    return
                log.info("migrating catalog %s from %s to %s", self.display_url, current, head)
                config = alembic_config()
                config.attributes["connection"] = conn
                command.upgrade(config, "head")

    def _check_connected(self, known: frozenset[str]) -> str | None:
        """The catalog's revision (None: an empty database), or a ``NotACatalogError``.

        Looks at the tables only, in a read transaction, so a foreign database is
        refused before anything is written to it.
        """
        with translate_errors(self.display_url), self.engine.connect() as conn:
            tables = set(inspect(conn).get_table_names())
            revision = MigrationContext.configure(conn).get_current_revision()
        return _catalog_revision(self.display_url, tables, revision, known)

    def _check_read_only(self, head: str, known: frozenset[str]) -> None:
        file = sqlite_file(self.url)
        if file is None:
            revision = self._check_connected(known)
        else:
            seen = look_at(file, busy_timeout_seconds=self.busy_timeout_seconds)
            if not seen.exists:
                raise CatalogError(
                    f"there is no catalog at {file}: check --db, or create one with "
                    "`modelvault init` or `modelvault migrate LEGACY`."
                )
            revision = _catalog_revision(
                file, seen.tables, seen.revision, known, seen.application_id
            )
        where = file or self.display_url
        if revision is None:
            raise CatalogError(
                f"the database at {where} is empty: make it a catalog with "
                f"`modelvault init{'' if file is None else f' --db {file}'}`."
            )
        if revision != head:
            raise SchemaVersionError(
                f"the catalog at {where} is at an older schema "
                f"({revision}): upgrade it with `modelvault init`."
            )

    def current_revision(self) -> str | None:
        with translate_errors(self.display_url), self.engine.connect() as conn:
            return MigrationContext.configure(conn).get_current_revision()


def _catalog_revision(
    where: str,
    tables: Iterable[str],
    revision: str | None,
    known: frozenset[str],
    application_id: int = 0,
) -> str | None:
    """The revision of a catalog with these tables (None: nothing in it yet), or
    the ``CatalogError`` that says what the database is instead."""
    tables = set(tables)
    if tables <= {"alembic_version"} and revision is None:
        if application_id in (0, APPLICATION_ID):
            return None  # empty, or every revision downgraded: nothing of anyone's
        raise NotACatalogError(
            f"{where} is another program's SQLite database (application id "
            f"{describe_application_id(application_id)}): give the catalog's path with "
            "--db, or a new file name to create one."
        )
    if "alembic_version" in tables and revision in known:
        return revision
    if "alembic_version" in tables and tables >= CATALOG_TABLES:
        raise SchemaVersionError(
            f"the catalog at {where} is at schema revision {revision!r}, "
            "newer than this modelvault knows: upgrade modelvault."
        )
    if "alembic_version" not in tables and tables >= LEGACY_TABLES:
        raise NotACatalogError(
            f"{where} is a legacy catalog: migrate it with `modelvault migrate {where}`."
        )
    raise NotACatalogError(
        f"{where} is not a modelvault catalog (it holds the tables "
        f"{', '.join(sorted(tables)[:5])}{', ...' if len(tables) > 5 else ''}): "
        "give the catalog's path with --db, or a new file name to create one."
    )


def _refuse_unless_ours(seen: SqliteFile, known: frozenset[str], *, adopt_empty: bool) -> None:
    """Refuse a SQLite file that is not ours to make a catalog of (see ``init_db``)."""
    where = str(seen.path)
    if not seen.blank or seen.application_id not in (0, APPLICATION_ID):
        _catalog_revision(where, seen.tables, seen.revision, known, seen.application_id)
    elif seen.exists and seen.application_id != APPLICATION_ID and not adopt_empty:
        what = "an empty file" if seen.size == 0 else "a SQLite database without tables"
        raise NotACatalogError(
            f"{where} is {what}, not a catalog: make it one with "
            f"`modelvault init --db {where}`, or give the catalog's path with --db."
        )


def _create_catalog_file(file: Path) -> None:
    try:
        create_marked_file(file)
    except (OSError, sqlite3.Error) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else exc
        raise CatalogError(
            f"cannot create the catalog {file} ({reason}): choose a folder you can write "
            "to, with --db or MODELVAULT_DB_PATH."
        ) from exc


def _mark_as_ours(conn: Any) -> None:
    """Give a SQLite catalog modelvault's application id, if it has none yet (a
    catalog made before it was set, or an empty file ``init`` was given)."""
    if not conn.exec_driver_sql("PRAGMA application_id").scalar():
        conn.exec_driver_sql(f"PRAGMA application_id = {APPLICATION_ID}")
