"""How the catalog is reached: its URL and engine, its schema's lifecycle, its
sessions, and the translation of driver errors. ``DatabaseManager`` is this plus
the catalog's public methods; the catalog's rules (``modelvault.catalog``) need
only a way to open sessions, which is this."""

from __future__ import annotations

import functools
import os
import re
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path

from sqlalchemy import URL, Engine
from sqlalchemy.orm import Session

from modelvault.config import (
    Settings,
    default_db_url,
    mask_password,
    parse_url,
    shown_url,
    sqlite_url,
)
from modelvault.db.engine import (
    SQLITE_BEGIN,
    create_catalog_engine,
    is_sqlite,
    set_journal_mode,
    sqlite_file,
)
from modelvault.db.errors import translate_errors
from modelvault.db.network import journal_mode_for, network_filesystem
from modelvault.db.schema import CatalogSchema
from modelvault.errors import CatalogError, ConfigError


class CatalogAccess:
    """The catalog at a URL, a file path or an existing Engine."""

    def __init__(
        self,
        target: str | os.PathLike[str] | Engine | None = None,
        *,
        settings: Settings | None = None,
        read_only: bool = False,
    ) -> None:
        """``read_only`` opens the catalog so that nothing can be written to it:
        for looking only, without write access; ``init_db`` then checks the
        catalog instead of migrating it.

        The folder of a SQLite catalog must exist, except the default data
        folder, which is created.
        """
        self.settings = settings or Settings.from_env()
        self.read_only = read_only
        self._owns_engine = not isinstance(target, Engine)
        if isinstance(target, Engine):
            self.engine = target
            self.url = target.url
        else:
            self.url = self.url_for(target, self.settings)
            if not read_only:  # looking needs no folder: init_db says the catalog is missing
                _check_sqlite_folder(self.url)
            self.engine = create_catalog_engine(
                self.url, read_only=read_only, settings=self.settings
            )

    @staticmethod
    def url_for(target: str | os.PathLike[str] | None, settings: Settings) -> URL:
        """The URL a manager for ``target`` (None: the settings' catalog) would open."""
        return parse_url(settings.db_url if target is None else as_url(target))

    @property
    def display_url(self) -> str:
        """The URL with any password hidden, fit for messages and logs."""
        return shown_url(self.url)

    @property
    def is_sqlite(self) -> bool:
        return is_sqlite(self.engine)

    def dispose(self) -> None:
        """Close pooled connections (only those of an engine we created)."""
        if self._owns_engine:
            self.engine.dispose()

    def init_db(self, *, adopt_empty: bool = True) -> str:
        """Migrate the catalog to the newest revision; cheap when it is there already.

        Returns the revision. Anything that is not a modelvault catalog (another
        app's database, a legacy catalog, a catalog written by a newer
        modelvault) is refused before anything is written to it or beside it.
        A new SQLite catalog file is created marked as ours (its application id);
        an empty file, or a SQLite file without tables, is made a catalog only
        with ``adopt_empty`` (the command line: only ``init`` does). A read-only
        manager only checks that the catalog is there at the newest revision.
        """
        head = self._schema().upgrade(adopt_empty=adopt_empty)
        if not self.read_only:
            # After the tables exist: switching an empty file to WAL leaves its header
            # unwritten until a checkpoint, and a new connection meanwhile sees no tables.
            with self.translate_errors():
                set_journal_mode(self.engine, journal_mode_for(self.network_filesystem))
        return head

    def check(self, *, adopt_empty: bool = False) -> bool:
        """Refuse what ``init_db(adopt_empty=...)`` would refuse, writing nothing.

        Returns whether the database is there (False: a SQLite catalog file
        that ``init_db`` creates). A read-only manager refuses what it could
        not read: no catalog there, an empty one, one at another revision.
        """
        return self._schema().check(adopt_empty=adopt_empty)

    def current_revision(self) -> str | None:
        return self._schema().current_revision()

    def _schema(self) -> CatalogSchema:
        busy = self.settings.sqlite_busy_timeout_seconds
        return CatalogSchema(
            self.engine, self.url, read_only=self.read_only, busy_timeout_seconds=busy
        )

    @functools.cached_property
    def network_filesystem(self) -> str | None:
        """The network file system a SQLite catalog file is on (``"nfs4"``, ``"a
        network share"``, ...), or None. There the catalog is kept in
        rollback-journal mode instead of WAL (see ``modelvault.db.network``)."""
        file = sqlite_file(self.url)
        return None if file is None else network_filesystem(Path(file).parent)

    @contextmanager
    def session_scope(self, *, immediate: bool = False) -> Iterator[Session]:
        """A session in one transaction: committed on success, rolled back on error.

        ``immediate`` takes SQLite's write lock at BEGIN. Use it for every
        transaction that writes: a SQLite transaction that reads first and
        writes later fails at once ("database is locked", no busy wait) if
        another connection committed in between. Other backends ignore it.
        """
        with self.translate_errors(), self.engine.connect() as conn:
            if immediate:
                conn = conn.execution_options(**{SQLITE_BEGIN: "IMMEDIATE"})
            with Session(bind=conn, expire_on_commit=False) as session, session.begin():
                yield session

    def translate_errors(self) -> AbstractContextManager[None]:
        """Driver errors become ``CatalogError`` (or ``ValidationError`` for a value
        that cannot be stored), chained, with a hint of what to do."""
        return translate_errors(self.display_url)


# "user:password@host..." or "host:5432/db": a URL whose scheme was left out.
_URL_WITHOUT_SCHEME = re.compile(r"^[^/\\:@]+(:[^@]*)?@|^[^/\\:@]+:\d+(/|$)")


# "C:\...", "C:/...", "\\server\share\...", "//server/share/...": Windows paths.
_WINDOWS_PATH = re.compile(r"^([A-Za-z]:[\\/]|\\\\|//)")


def as_url(target: str | os.PathLike[str]) -> str:
    """A URL as it is; anything else is the path of a SQLite file.

    Text holding ``://`` is a URL (no Windows path can hold it). A drive or UNC
    path (``D:\\backup@2024\\catalog.sqlite3``) and a path whose folder exists
    are paths, whatever else they hold. Other text that reads like a URL written
    without its scheme (``user:pw@host/db``) is refused rather than taken for a
    file name (which would put the password in a file name).
    """
    text_target = os.fspath(target)
    if "://" in text_target:
        return text_target
    if not _WINDOWS_PATH.match(text_target) and _URL_WITHOUT_SCHEME.match(text_target):
        folder = os.path.dirname(text_target)
        if not (folder and os.path.isdir(folder)):
            shown = mask_password(text_target)
            raise ConfigError(
                f"{shown!r} looks like a database URL without its scheme: write e.g. "
                f"postgresql://{shown}, or ./{shown} for a file of that name."
            )
    return sqlite_url(text_target)


def _check_sqlite_folder(url: URL) -> None:
    """Refuse a SQLite catalog whose folder does not exist; the default data folder
    is the one folder made here, as it is ours."""
    file = sqlite_file(url)
    if file is None:
        return
    folder = Path(file).parent
    if url == parse_url(default_db_url()):
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise CatalogError(
                f"cannot create the data folder {folder}: {exc.strerror or exc}; "
                "choose another catalog with --db or MODELVAULT_DB_PATH."
            ) from exc
    if not folder.is_dir():
        state = "is not a folder" if folder.exists() else "does not exist"
        raise CatalogError(
            f"the catalog's folder {folder} {state}: create it first, "
            "or choose another catalog with --db or MODELVAULT_DB_PATH."
        )
