"""DatabaseManager: one catalog, a thin facade over its parts.

The schema's lifecycle is ``modelvault.db.schema``, the translation of driver
errors ``modelvault.db.errors``; models, tags, lookups and listings are
``modelvault.catalog`` (``crud``, ``browse``, ``staging``, ``curation``). Every
public method opens and closes its own transaction and returns plain records
(``modelvault.catalog.records``), so results stay usable after the session is
gone and can be handed to other threads.
"""

from __future__ import annotations

import functools
import os
import re
from collections.abc import Iterable, Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import URL, Engine
from sqlalchemy.orm import Session

from modelvault.catalog import browse, crud, curation, staging
from modelvault.catalog.browse import ModelFilter
from modelvault.catalog.deleted import DeletedEntry
from modelvault.catalog.records import ModelRecord, PendingRecord, QueueTotals, TagRecord
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
from modelvault.images import ImageStore, default_store


class DatabaseManager:
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

    def __repr__(self) -> str:
        return f"DatabaseManager({self.display_url!r})"

    @property
    def display_url(self) -> str:
        """The URL with any password hidden, fit for messages and logs."""
        return shown_url(self.url)

    @property
    def is_sqlite(self) -> bool:
        return is_sqlite(self.engine)

    @property
    def images_dir(self) -> Path | None:
        """The absolute folder of the catalog's preview image store, or None if it has none.

        ``settings.images_dir`` (``MODELVAULT_IMAGES_DIR``) when set, else the
        folder ``images/`` beside a SQLite catalog file; a PostgreSQL or
        in-memory catalog has a store only when the setting names one. The
        folder is created when the first image is stored.
        """
        return default_store(self.url, self.settings.images_dir)  # not the read-only URI

    def preview_path(self, preview: Mapping[str, Any] | str) -> Path:
        """The absolute path of a stored preview: an entry of a model's
        ``meta["previews"]``, or its ``file``. ``ValidationError`` for anything
        that is not a stored name, ``ConfigError`` if the catalog has no store."""
        folder = self.images_dir
        if folder is None:
            raise ConfigError(
                f"the catalog at {self.display_url} has no image store: "
                "set MODELVAULT_IMAGES_DIR to the folder of its preview images."
            )
        return ImageStore(folder).path_of(preview)

    def dispose(self) -> None:
        """Close pooled connections (only those of an engine we created)."""
        if self._owns_engine:
            self.engine.dispose()

    # -- schema ---------------------------------------------------------------

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

    # -- sessions -------------------------------------------------------------

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

    # -- models: catalog.crud, catalog.browse -------------------------------

    def upsert_model(self, data: Mapping[str, Any]) -> ModelRecord:
        """Add a model, or update the fields given for a sha256 already catalogued.

        ``data`` holds model columns (``sha256`` and ``path`` at least for a new
        model) and optionally ``tags``: names or ``{"name", "color"}`` mappings.
        """
        return crud.save_model(self, data)

    def get_model(self, sha256: str) -> ModelRecord | None:
        return crud.get_model(self, sha256)

    def get_model_by_path(self, path: str) -> ModelRecord | None:
        """The model of the file at ``path``, however the path is spelt."""
        return crud.get_model_by_path(self, path)

    def find_models(
        self,
        *,
        tags: Iterable[str] = (),
        model_type: str | None = None,
        search: str | None = None,
        missing: bool = False,
        under: Iterable[str | os.PathLike[str]] = (),
        limit: int | None = None,
        offset: int = 0,
        unreachable: bool = False,
        untagged: bool = False,
        sort: str = "name",
        base: str | None = None,
    ) -> list[ModelRecord]:
        """One page of the models these filters keep, in the order ``sort`` says
        (``modelvault.catalog.browse.find_models``)."""
        filters = ModelFilter(tags, model_type, search, under, untagged, base, missing, unreachable)
        return browse.find_models(self, filters, limit=limit, offset=offset, sort=sort)

    def count_models(
        self,
        *,
        tags: Iterable[str] = (),
        model_type: str | None = None,
        search: str | None = None,
        missing: bool = False,
        under: Iterable[str | os.PathLike[str]] = (),
        unreachable: bool = False,
        untagged: bool = False,
        base: str | None = None,
    ) -> int:
        """How many models ``find_models`` lists with these filters and no limit."""
        filters = ModelFilter(tags, model_type, search, under, untagged, base, missing, unreachable)
        return browse.count_models(self, filters)

    def find_model(self, key: str) -> ModelRecord:
        """The model named by a SHA-256 or its start, an AutoV3 or its start, a path
        or a file name (``modelvault.catalog.browse.find_model``)."""
        return browse.find_model(self, key)

    def get_models_by_tag(self, name: str) -> list[ModelRecord]:
        return crud.get_models_by_tag(self, name)

    def staging_counts(self) -> dict[str, int]:
        """How many staging rows are in each status (every status listed, zeros included)."""
        return staging.staging_counts(self)

    def claimable_totals(self) -> QueueTotals:
        """Files still waiting to be hashed, their known bytes, how many have no size."""
        return staging.claimable_totals(self)

    def catalog_counts(self) -> dict[str, int]:
        """Models, tags and tag links in the catalog."""
        return crud.catalog_counts(self)

    # -- tags -----------------------------------------------------------------

    def create_tag(self, name: str, color: str | None = None) -> TagRecord:
        """Create a tag (name trimmed and lower-cased, colour as ``#rrggbb``)."""
        return crud.create_tag(self, name, color)

    def get_tag(self, name: str) -> TagRecord | None:
        return crud.get_tag(self, name)

    def list_tags(self) -> list[tuple[TagRecord, int]]:
        """Every tag with the number of models that carry it, by name."""
        return crud.list_tags(self)

    def tag_model(self, sha256: str, tag_id: int) -> None:
        """Link a tag to a model (idempotent). Unknown model or tag: ``NotFoundError``."""
        crud.tag_model(self, sha256, tag_id)

    def untag_model(self, sha256: str, tag_id: int) -> bool:
        """Remove a link; returns whether there was one."""
        return crud.untag_model(self, sha256, tag_id)

    def get_tags_for_model(self, sha256: str) -> list[TagRecord]:
        return crud.get_tags_for_model(self, sha256)

    # -- curating: each one transaction (see modelvault.catalog.curation) ------

    def ensure_tag(self, name: str, color: str | None = None) -> TagRecord:
        """The tag, created if there is none; an existing one keeps its colour."""
        return curation.ensure_tag(self, name, color)

    def rename_tag(self, old: str, new: str, *, merge: bool = False) -> curation.TagChange:
        """Rename a tag; into an existing one only with ``merge``."""
        return curation.rename_tag(self, old, new, merge=merge)

    def set_tag_color(self, name: str, color: str | None) -> TagRecord:
        return curation.set_tag_color(self, name, color)

    def delete_tag(self, name: str) -> curation.TagChange:
        return curation.delete_tag(self, name)

    def add_tags(self, key: str, names: Iterable[str], color: str | None = None) -> ModelRecord:
        """Tag the model ``key`` (as ``find_model`` takes it), creating tags as needed."""
        return curation.add_tags(self, self.find_model(key).sha256, names, color)[0]

    def remove_tags(self, key: str, names: Iterable[str]) -> ModelRecord:
        return curation.remove_tags(self, self.find_model(key).sha256, names)[0]

    def update_model(self, key: str, **changes: Any) -> ModelRecord:
        """Change ``name``, ``type``, ``base``, ``note`` or ``meta`` keys of the model ``key``."""
        return curation.update_model(self, self.find_model(key).sha256, **changes)

    def delete_model(self, key: str) -> ModelRecord:
        """Delete the model's entry and links (never its file), kept in ``deleted_records``."""
        return curation.delete_models(self, [self.find_model(key).sha256])[0]

    def forget_pending(
        self, ids: Iterable[int] = (), *, statuses: Iterable[str] = ()
    ) -> list[PendingRecord]:
        return curation.forget_pending(self, ids, statuses=statuses)

    def find_copies(self, sha256: str) -> curation.Copies:
        """The model of a content and every staging row found to hold it."""
        return curation.find_copies(self, sha256)

    def deleted_records(self, *, limit: int | None = None) -> list[DeletedEntry]:
        return curation.deleted_records(self, limit=limit)

    # -- staging rows: catalog.staging ---------------------------------------

    def add_pending_import(self, data: Mapping[str, Any]) -> PendingRecord:
        """Stage a file to be hashed by the workers."""
        return staging.add_pending_import(self, data)

    def get_pending_imports(
        self,
        status: str | Iterable[str] | None = None,
        *,
        limit: int | None = None,
        offset: int = 0,
    ) -> list[PendingRecord]:
        """Staging rows, oldest first, optionally only those in the given status(es)."""
        return staging.get_pending_imports(self, status, limit=limit, offset=offset)

    def remove_pending_import(self, path: str) -> bool:
        """Delete the staging row of ``path``; returns whether there was one."""
        return staging.remove_pending_import(self, path)


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
